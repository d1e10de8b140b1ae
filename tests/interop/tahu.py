"""Runs Eclipse Tahu's JavaScript Sparkplug B implementation (npm `sparkplug-payload`,
`sparkplug-client`) for Plantbus's interop tests: availability checks, the batch codec filter
and the tagged JSON both sides use for 64-bit integers, bytes and non-finite floats.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

INTEROP_DIR = Path(__file__).resolve().parent
CODEC_SCRIPT = INTEROP_DIR / "tahu_codec.js"
EDGE_SCRIPT = INTEROP_DIR / "tahu_edge.js"
PACKAGES = ("sparkplug-payload", "sparkplug-client")


def missing_reason() -> str | None:
    """Why the Tahu interop tests cannot run here, or None when they can."""
    if shutil.which("node") is None:
        return "Node.js is not installed (scripts/setup.sh test installs it)"
    for package in PACKAGES:
        if not (INTEROP_DIR / "node_modules" / package / "package.json").is_file():
            return (f"tests/interop/node_modules/{package} is missing: "
                    "run `scripts/setup.sh test` (npm ci in tests/interop)")
    return None


def require_tahu() -> None:
    """Skip when Tahu is not installed, except under CI=true, where a missing install is a failure."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"interop tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def run_codec(op: str, items: list[dict[str, Any]], timeout: float = 60) -> dict[str, dict[str, Any]]:
    """Send one batch through tahu_codec.js (one node process) and return its results by item id."""
    proc = subprocess.run(
        ["node", str(CODEC_SCRIPT)],
        input=json.dumps({"op": op, "items": items}),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=INTEROP_DIR,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"tahu_codec.js exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)["results"]


# ---------------------------------------------------------------------------- tagged JSON


def long(value: int, unsigned: bool) -> dict[str, Any]:
    """A 64-bit integer for the node side (JSON numbers lose precision above 2**53)."""
    return {"$long": str(value), "unsigned": unsigned}


def blob(value: bytes) -> dict[str, str]:
    return {"$bytes": base64.b64encode(value).decode("ascii")}


def number(value: float) -> Any:
    """A float for the node side; NaN and the infinities are not JSON."""
    if math.isnan(value):
        return {"$float": "nan"}
    if math.isinf(value):
        return {"$float": "inf" if value > 0 else "-inf"}
    return value


def untag(value: Any) -> Any:
    """Turn the node side's tagged JSON back into Python ints, bytes and floats."""
    if isinstance(value, list):
        return [untag(v) for v in value]
    if isinstance(value, dict):
        if "$long" in value:
            return int(value["$long"])
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        if "$float" in value:
            return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[value["$float"]]
        return {k: untag(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------- a live Tahu edge node


class TahuEdgeNode:
    """A running tahu_edge.js: a Tahu `sparkplug-client` edge node with one device.

    Use as `async with TahuEdgeNode(...) as edge:`; leaving the block stops the process (killing it
    if it does not go). `events` holds the JSON lines the script printed, in order.
    """

    def __init__(
        self,
        broker_url: str,
        group_id: str,
        edge_node_id: str,
        device_id: str,
        *,
        node_metrics: list[dict[str, Any]],
        device_metrics: list[dict[str, Any]],
        updates: list[list[dict[str, Any]]] | None = None,
    ) -> None:
        self.config = {
            "serverUrl": broker_url,
            "groupId": group_id,
            "edgeNode": edge_node_id,
            "deviceId": device_id,
            "clientId": f"tahu-{group_id}-{edge_node_id}",
            "nodeMetrics": node_metrics,
            "deviceMetrics": device_metrics,
            "updates": updates or [],
        }
        self.events: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self._changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> TahuEdgeNode:
        self._proc = await asyncio.create_subprocess_exec(
            "node", str(EDGE_SCRIPT), json.dumps(self.config),
            cwd=INTEROP_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._tasks = [asyncio.create_task(self._read_events()), asyncio.create_task(self._read_stderr())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read_events(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            if line.strip():
                self.events.append(json.loads(line))
                self._changed.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for line in self._proc.stderr:
            self.stderr += line

    async def wait_event(self, name: str, count: int = 1, timeout: float = 15) -> dict[str, Any]:
        """Wait until the script has printed `count` events called `name`; return the last of them."""
        async def seen() -> dict[str, Any]:
            while True:
                matching = [e for e in self.events if e["event"] == name]
                if len(matching) >= count:
                    return matching[count - 1]
                if self._proc is not None and self._proc.returncode is not None and self._proc.stdout.at_eof():
                    raise AssertionError(f"tahu_edge.js exited before {name!r}: {self.stderr.decode()[-2000:]}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {name!r} event #{count} from tahu_edge.js in {timeout} s; events {self.events}; "
                f"stderr {self.stderr.decode()[-2000:]}"
            ) from None

    async def send(self, command: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(command) + "\n").encode())
        await self._proc.stdin.drain()

    async def stop(self, timeout: float = 10) -> int:
        """Ask Tahu to stop cleanly (it publishes NDEATH, then disconnects); return the exit code."""
        await self.send({"cmd": "stop"})
        assert self._proc is not None
        return await asyncio.wait_for(self._proc.wait(), timeout)

    async def kill(self) -> None:
        """Kill the process: the broker then publishes Tahu's Will (NDEATH)."""
        assert self._proc is not None
        self._proc.kill()
        await self._proc.wait()
