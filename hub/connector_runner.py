"""Runs the equipment connectors a plant configured under `connectors.<name>`, each supervised on its own.

Validation happens when the hub is built (the connector types come from plugins, so only then are the
models known); every problem names its path (`connectors.line1_filler.registers[3].scale`). At run time
each connector is a task `plantbus[connector:<name>]`; one that raises is logged once per failure streak,
shown as failing with its last error, and restarted with jittered backoff — the others never notice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from connectors.base import Connector, ConnectorContext, ConnectorType
from hub.config import explain_errors
from hub.errors import AuthenticationFailed, ConfigError
from hub.sparkplug.payload import now_ms

log = logging.getLogger(__name__)


@dataclass
class ConnectorStatus:
    type: str
    group_id: str
    edge_node_id: str
    state: str = "configured"  # configured, running, failing, auth_failed, stopped
    last_error: str | None = None
    last_error_at: int | None = None
    restarts: int = 0
    connector: Connector | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        doc = {
            "type": self.type,
            "edge_node": f"{self.group_id}/{self.edge_node_id}",
            "state": self.state,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "restarts": self.restarts,
        }
        if self.connector is not None:
            try:
                doc["connector"] = self.connector.diagnostics()
            except Exception as exc:  # noqa: BLE001 - diagnostics must never break the status report
                doc["connector"] = {"error": f"diagnostics failed: {exc}"}
        return doc


class ConnectorRunner:
    """Validates `connectors.*` against the registered types, then builds and supervises the connectors."""

    def __init__(
        self,
        sections: dict[str, Any],
        types: Any,
        context: ConnectorContext,
        *,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        self.context = context
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._specs: dict[str, tuple[ConnectorType, Any]] = {}
        self.status: dict[str, ConnectorStatus] = {}
        problems: list[str] = []
        owners: dict[tuple[str, str], str] = {}
        known = sorted(types.names())
        for name, raw in sections.items():
            where = f"connectors.{name}"
            if not isinstance(raw, dict):
                problems.append(f"{where}: must be a mapping with at least `type` and `edge_node_id`")
                continue
            type_name = raw.get("type")
            ctype: ConnectorType | None = types.get(type_name) if isinstance(type_name, str) else None
            if ctype is None:
                problems.append(
                    f"{where}.type: unknown connector type {type_name!r}; installed types: {', '.join(known) or 'none'}"
                )
                continue
            try:
                settings = ctype.settings.model_validate(raw)
            except ValidationError as exc:
                problems.extend(explain_errors(exc, ("connectors", name)))
                continue
            if not settings.enabled:
                continue
            address = (settings.group_id, settings.edge_node_id)
            if address in owners:
                problems.append(
                    f"{where}.edge_node_id: {'/'.join(address)} is already used by connectors.{owners[address]}; "
                    "every connector is its own Sparkplug edge node and needs its own id"
                )
                continue
            owners[address] = name
            self._specs[name] = (ctype, settings)
            self.status[name] = ConnectorStatus(type_name, settings.group_id, settings.edge_node_id)
        if problems:
            raise ConfigError("connector configuration is not valid:\n  " + "\n  ".join(problems))

    def __len__(self) -> int:
        return len(self._specs)

    def start(self, create_task: Any) -> list[asyncio.Task[Any]]:
        """Start one supervised task per connector with `create_task(coro, name=...)`."""
        return [
            create_task(self._supervise(name), name=f"plantbus[connector:{name}]") for name in self._specs
        ]

    async def _supervise(self, name: str) -> None:
        ctype, settings = self._specs[name]
        status = self.status[name]
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                connector = ctype.create(name, settings, self.context)
                status.connector = connector
                status.state = "running"
                await connector.run()
                status.state = "stopped"
                log.info("connector %s stopped by itself", name)
                return
            except asyncio.CancelledError:
                status.state = "stopped"
                raise
            except Exception as exc:  # noqa: BLE001 - one connector's failure never stops the hub
                if loop.time() - started > self.backoff_max_s:
                    failures = 0  # it ran well for a while: a new failure streak, logged again
                failures += 1
                auth = isinstance(exc, AuthenticationFailed)
                status.state = "auth_failed" if auth else "failing"
                status.last_error = f"{type(exc).__name__}: {exc}"
                status.last_error_at = now_ms()
                status.restarts += 1
                if failures == 1:
                    log.error("connector %s failed (%s); restarting with backoff", name, status.last_error,
                              exc_info=not auth)
                if auth:
                    # Knocking with a wrong password every second locks accounts on some servers.
                    failures = max(failures, 11)
            delay = min(self.backoff_max_s, self.backoff_min_s * 2 ** min(failures - 1, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def diagnostics(self) -> dict[str, Any]:
        return {name: status.as_dict() for name, status in self.status.items()}
