"""`Hub`: the primary host, the UNS mirror and the status publisher, wired from one configuration."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from hub.config import PlantbusConfig
from hub.mirror import UnsMirror
from hub.mqtt import BrokerUrl
from hub.sparkplug.host import PrimaryHost
from hub.sparkplug.payload import now_ms
from hub.uns_paths import UnsMapper

log = logging.getLogger(__name__)


class Hub:
    """One Plantbus hub process: hosts its Sparkplug groups and mirrors them onto the UNS."""

    def __init__(self, config: PlantbusConfig, *, broker_override: str | None = None) -> None:
        self.config = config
        broker = BrokerUrl.parse(broker_override) if broker_override else config.broker.resolve()
        self.broker = broker
        self.mapper = UnsMapper(config.uns)
        self.host = PrimaryHost(
            config.host,
            broker,
            mapper=self.mapper,
            client_id=config.broker.client_id,
            compact_commands=not config.host.command_names,
        )
        self.mirror: UnsMirror | None = UnsMirror(self.host, config.uns) if config.uns.enabled else None
        self.started_ms: int | None = None

    async def run(self) -> None:
        """Run until cancelled; on cancellation the host marks data STALE and publishes STATE offline."""
        self.started_ms = now_ms()
        name = f"plantbus[hub:{self.config.host.host_id}]"
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.host.run(), name=f"{name}.host")
            if self.mirror is not None:
                tg.create_task(self.mirror.run(), name=f"{name}.mirror")
            tg.create_task(self._status_loop(), name=f"{name}.status")

    async def write(self, path: str, value: Any) -> None:
        """Write a value to a metric by UNS path or Sparkplug address (raises WriteError)."""
        await self.host.write(path, value)

    def diagnostics(self) -> dict[str, Any]:
        """Host and mirror figures, as published on `uns.status_topic`."""
        return {
            "timestamp": now_ms(),
            "started": self.started_ms,
            "broker": str(self.broker),
            "host": self.host.diagnostics(),
            "mirror": self.mirror.diagnostics() if self.mirror is not None else None,
        }

    def publish_status(self) -> bool:
        """Publish the diagnostics on `uns.status_topic` now (retained); False when not connected."""
        payload = json.dumps(self.diagnostics(), separators=(",", ":")).encode()
        try:
            return self.host.publish_nowait(self.config.uns.status_topic, payload, qos=self.config.uns.qos,
                                            retain=True)
        except ValueError as exc:
            log.error("cannot publish diagnostics on uns.status_topic %r: %s — use a topic without + or #",
                      self.config.uns.status_topic, exc)
            return False

    async def _status_loop(self) -> None:
        interval = self.config.host.diagnostics_interval_s
        while True:
            await self.host.wait_online()
            self.publish_status()
            await asyncio.sleep(interval)
