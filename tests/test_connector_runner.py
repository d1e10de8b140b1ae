"""The hub runs the connectors a plant configures: validation with paths, supervision, restart, NDEATH on stop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connectors.base import ConnectorContext, ConnectorSettings, ConnectorType
from hub.app import Hub
from hub.config import parse_config
from hub.errors import ConfigError
from hub.plugins import hookimpl
from hub.samples import Quality
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.payload import DataType
from sparkplug_fakes import Recorder, running, wait_until


class CounterSettings(ConnectorSettings):
    """A toy connector: one device whose `count` goes up every `period_s`; `fail_first` makes it crash first."""

    period_s: float = 0.05
    fail_first: int = 0


class CounterConnector:
    crashes: dict[str, int] = {}

    def __init__(self, name: str, settings: CounterSettings, context: ConnectorContext) -> None:
        self.name = name
        self.settings = settings
        self.node = EdgeNode(context.broker, settings.group_id, settings.edge_node_id,
                             state_dir=context.state_dir / name, primary_host_id=context.primary_host_id)
        self.node.add_device("counter").add_metric("count", DataType.Int64, 0)
        self.count = 0

    async def run(self) -> None:
        if CounterConnector.crashes.get(self.name, 0) < self.settings.fail_first:
            CounterConnector.crashes[self.name] = CounterConnector.crashes.get(self.name, 0) + 1
            raise ConnectionRefusedError("PLC at 10.0.0.5:502 refused the connection")
        task = self.node.start()
        try:
            while True:
                self.count += 1
                await self.node.update("counter", {"count": self.count})
                await asyncio.sleep(self.settings.period_s)
        finally:
            await self.node.stop()
            await asyncio.gather(task, return_exceptions=True)
            self.node.close()

    def diagnostics(self) -> dict[str, Any]:
        return {"count": self.count, "online": self.node.online}


class CounterPlugin:
    @hookimpl
    def register_connectors(self, register):  # type: ignore[no-untyped-def]
        register("counter", ConnectorType(settings=CounterSettings, create=CounterConnector))


def hub_config(tmp_path, broker_url: str, connectors: dict[str, Any]):  # type: ignore[no-untyped-def]
    return parse_config({
        "broker": {"url": broker_url},
        "host": {"host_id": "conn-host", "diagnostics_interval_s": 60},
        "state_dir": str(tmp_path),
        "connectors": connectors,
    })


def test_connector_sections_are_validated_by_their_type_with_paths(tmp_path):
    bad = {
        "line1": {"type": "counter", "edge_node_id": "oatbar-plc", "period_s": "fast", "colour": "red"},
        "line2": {"type": "profinet", "edge_node_id": "x"},
        "line3": {"type": "counter", "edge_node_id": "oatbar-plc"},
    }
    with pytest.raises(ConfigError) as info:
        Hub(hub_config(tmp_path, "mqtt://127.0.0.1:1", bad), plugins=[("counter", CounterPlugin())])
    text = str(info.value)
    assert "connectors.line1.period_s:" in text
    assert "connectors.line1.colour: unknown key" in text
    assert "connectors.line2.type: unknown connector type 'profinet'; installed types: counter" in text
    assert "line3" not in text  # line1 was refused, so oatbar-plc is still free


def test_two_connectors_cannot_share_an_edge_node_id(tmp_path):
    same = {n: {"type": "counter", "edge_node_id": "salad-plc"} for n in ("a", "b")}
    with pytest.raises(ConfigError, match=r"connectors.b.edge_node_id: plant1/salad-plc is already used by connectors.a"):
        Hub(hub_config(tmp_path, "mqtt://127.0.0.1:1", same), plugins=[("counter", CounterPlugin())])


async def test_configured_connectors_run_restart_after_a_crash_and_die_cleanly(broker, tmp_path):
    CounterConnector.crashes.clear()
    sections = {
        "steady": {"type": "counter", "edge_node_id": "steady-plc"},
        "flaky": {"type": "counter", "edge_node_id": "flaky-plc", "fail_first": 1},
        "spare": {"type": "counter", "edge_node_id": "spare-plc", "enabled": False},
    }
    hub = Hub(hub_config(tmp_path, broker.url, sections), plugins=[("counter", CounterPlugin())])
    hub.connectors.backoff_min_s = 0.1
    rec = Recorder(hub.host)
    async with running(hub):
        for node in ("steady-plc", "flaky-plc"):
            await wait_until(lambda n=node: (s := rec.latest(f"uns/plant1/{n}/counter/count")) and s.value >= 3,
                             timeout=15, what=f"counts from {node}")
        diag = hub.diagnostics()["connectors"]
        assert set(diag) == {"steady", "flaky"}
        assert diag["flaky"]["restarts"] == 1 and "refused the connection" in diag["flaky"]["last_error"]
        assert diag["flaky"]["state"] == "running" and diag["steady"]["restarts"] == 0
        assert diag["steady"]["connector"]["count"] >= 3
    # Stopping the hub stops the connectors first: the host still sees their NDEATH (reason "death"),
    # not only its own "host_stopped" marking.
    offline = [s for s in rec.statuses if s.edge_node == "steady-plc" and s.device is None and not s.online]
    assert offline and offline[0].reason == "death", [(s.reason, s.online) for s in offline]
    assert rec.latest("uns/plant1/steady-plc/counter/count").quality is Quality.STALE
