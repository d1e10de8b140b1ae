"""Test servers run as child processes that print READY once they listen; tests kill them to simulate a crash."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time


def start_ready_process(args: list[str], what: str, timeout: float = 15.0) -> subprocess.Popen[str]:
    """`python <args>` as a child process; returns once it printed READY, raises naming `what` otherwise."""
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(0.1) and proc.stdout.readline().strip() == "READY":
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
    proc.kill()
    proc.wait(5)
    raise RuntimeError(f"{what} did not become ready")


def kill_process(proc: subprocess.Popen[str] | None) -> None:
    """Kill a child process at once (as a crash, a power loss or a cable pulled would end it)."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(5)
