"""Helpers for the OPC UA connector tests: the test server in a subprocess (killable, restartable on its port)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hub.broker import free_port

from _process_support import kill_process, start_ready_process

SCRIPT = Path(__file__).with_name("opcua_test_server.py")


class OpcUaTestServer:
    """tests/opcua_test_server.py in a subprocess; start() waits for READY; restart() keeps the port."""

    def __init__(self, port: int | None = None, tick: float = 0.1, extra: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.tick = tick
        self.extra = list(extra or [])
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/plantbus/"

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and return once it listens."""
        self.proc = start_ready_process([str(SCRIPT), str(self.port), "--tick", str(self.tick), *self.extra], "OPC UA test server", timeout)

    def stop(self) -> None:
        """Kill the server (as a crash or power loss would)."""
        kill_process(self.proc)
        self.proc = None
