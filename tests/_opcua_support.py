"""Helpers for the OPC UA connector tests: the test server in a subprocess (killable, restartable on its port)."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

from hub.broker import free_port

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
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(self.port), "--tick", str(self.tick), *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(0.1) and self.proc.stdout.readline().strip() == "READY":
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"OPC UA test server exited with {self.proc.returncode}")
        raise RuntimeError("OPC UA test server did not become ready")

    def stop(self) -> None:
        """Kill the server (as a crash or power loss would)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
