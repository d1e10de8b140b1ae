"""Shared fixtures: real Mosquitto brokers on free loopback ports, per-test state folders."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hub.broker import LocalMosquitto


@pytest.fixture
def broker(tmp_path) -> Iterator[LocalMosquitto]:
    """A Mosquitto of this test's own; `broker.restart()` keeps the port."""
    with LocalMosquitto(workdir=tmp_path / "mosquitto") as b:
        yield b


@pytest.fixture
def group_id() -> str:
    """A Sparkplug group id unique to the test, so tests never see each other's traffic."""
    return "g" + uuid.uuid4().hex[:8]
