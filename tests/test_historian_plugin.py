"""The built-in historian plugin: its settings, and samples from a real edge node through a real hub into
SQLite and an InfluxDB-protocol server, each through its outbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import plugins.historian as historian_plugin
from historian_support import sample
from hub.app import Hub
from hub.errors import ConfigError
from hub.historian import Point, Tier
from hub.historian.sql import SqlHistorian
from hub.mqtt import BrokerUrl
from hub.samples import Quality
from hub.servers import LocalVictoriaMetrics
from hub.sparkplug.payload import DataType, Metric, now_ms
from plugin_support import config
from sparkplug_fakes import FakeEdge, running


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition") -> Any:
    """Await `check()` until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------- settings


def test_without_configuration_history_goes_to_one_sqlite_file_under_state_dir(tmp_path):
    hub = Hub(config(tmp_path), plugins=[historian_plugin])
    settings = hub.plugin_settings("historian")
    assert [(b.type, b.label) for b in settings.backends] == [("sql", "sql")]
    assert set(hub.registries.historians) == {"sql", "influxdb"}
    backend = hub.registries.historians["sql"](settings.backends[0], hub.state_dir)
    assert isinstance(backend, SqlHistorian)
    assert backend.url == f"sqlite:///{tmp_path / 'state' / 'history.sqlite'}"
    retention = settings.backends[0].retention.policy()
    assert (retention.raw_ms, retention.minute_ms, retention.hour_ms) == (30 * 86_400_000, 365 * 86_400_000,
                                                                          3650 * 86_400_000)  # fmt: skip


@pytest.mark.parametrize(
    ("section", "problems"),
    [
        (
            {"backends": [{"type": "influxdb", "url": "influx:8086"}]},
            ["plugins.historian.backends[0].influxdb.url: must start with http:// or https://",
             "plugins.historian.backends[0].influxdb.bucket: required; add it"],
        ),
        ({"backends": [{"type": "mysql"}]}, ["backends[0]: each backend needs `type: sql` or `type: influxdb`"]),
        ({"backends": [{"url": "sqlite:///x.sqlite"}]}, ["backends[0]: each backend needs `type: sql`"]),
        (
            {"backends": [{"type": "sql", "url": "mysql://u@db/plant", "colour": "red"}]},
            ["backends[0].sql.url: historian URL 'mysql://u@db/plant': unsupported database",
             "backends[0].sql.colour: unknown key; remove it or check its spelling"],
        ),
        ({"backends": [{"type": "sql"}, {"type": "sql"}]}, ["two backends are named 'sql'; give each a unique `name`"]),
        ({"query_backend": "influx"}, ["query_backend 'influx' is not a backend; known: sql"]),
        (
            {"backends": [{"type": "sql", "retention": {"raw_days": 400}}]},
            ["backends[0].sql.retention: keep coarser tiers at least as long"],
        ),
        ({"backends": [{"type": "sql", "outbox": {"batch_points": 0}}]}, ["outbox.batch_points"]),
        ({"retention": {"raw_days": 1}}, ["plugins.historian.retention: unknown key"]),
    ],
)
def test_settings_errors_name_the_setting_and_the_fix(tmp_path, section, problems):
    with pytest.raises(ConfigError) as info:
        Hub(config(tmp_path, plugins={"historian": section}), plugins=[historian_plugin])
    for problem in problems:
        assert problem in str(info.value)


async def test_a_missing_token_variable_leaves_the_historian_out_and_the_hub_running(broker, tmp_path, monkeypatch):
    monkeypatch.delenv("PLANTBUS_TEST_NO_SUCH_TOKEN", raising=False)
    section = {"backends": [{"type": "influxdb", "url": "http://127.0.0.1:1", "bucket": "b",
                             "token_env": "PLANTBUS_TEST_NO_SUCH_TOKEN"}]}  # fmt: skip
    hub = Hub(config(tmp_path, broker.url, plugins={"historian": section}), plugins=[historian_plugin])
    async with running(hub):
        await hub.host.wait_online()
        status = hub.plugins.status["historian"]
        assert status.state == "failing"
        assert "PLANTBUS_TEST_NO_SUCH_TOKEN is not set" in (status.last_error or "")
        assert getattr(hub, "historian", None) is None


# ---------------------------------------------------------------------------- through a running hub


async def test_samples_from_an_edge_node_reach_sqlite_and_influx_through_their_outboxes(
    broker, group_id, tmp_path, monkeypatch
):
    monkeypatch.setenv("PLANTBUS_TEST_INFLUX_TOKEN", "s3cret")
    vm = LocalVictoriaMetrics(workdir=tmp_path / "vm")  # not started: InfluxDB is down when the hub starts
    section = {
        "backends": [
            {"type": "sql", "retention": {"interval_s": 3600}},
            {"type": "influxdb", "name": "influx", "url": vm.url, "bucket": "plant", "org": "zdorovo",
             "token_env": "PLANTBUS_TEST_INFLUX_TOKEN", "outbox": {"backoff_initial_s": 0.1, "backoff_max_s": 0.5}},
        ]
    }  # fmt: skip
    cfg = config(tmp_path, broker.url, plugins={"historian": section})
    path = f"uns/{group_id}/n1/count"
    base = now_ms() - 10_000
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    hub = Hub(cfg, plugins=[historian_plugin])
    try:
        async with running(hub):
            await hub.host.wait_online()
            await edge.connect()
            await edge.nbirth([Metric("count", DataType.Int64, -1, alias=1, timestamp=base - 1)])
            for i in range(100):
                await edge.ndata([Metric(None, DataType.Int64, i, alias=1)], timestamp=base + i)
            service = hub.historian

            async def sql_has_all() -> bool:
                points = (await service.query_raw(path, base - 1, base + 1_000))[path]
                return [p.value for p in points] == [-1, *range(100)]

            await eventually(sql_has_all, what="100 values in SQLite")
            influx = service.diagnostics()["backends"]["influx"]["outbox"]
            assert influx["pending_points"] >= 101 and influx["retries"] > 0 and "unreachable" in influx["last_error"]
            assert service.diagnostics()["backends"]["sql"]["outbox"]["pending_points"] == 0

            await asyncio.to_thread(vm.start)
            assert await service.flush(timeout=15)

            def exported() -> list[int]:
                vm.flush()
                return [t for s in vm.export(f'{{__name__="plantbus_value",path="{path}"}}') for t in s["timestamps"]]

            async def influx_has_all() -> bool:
                return len(exported()) >= 101

            await eventually(influx_has_all, timeout=15, what="101 points in victoria-metrics")
            stored = exported()
            assert len(stored) == len(set(stored)) == 101  # the birth and 100 updates, once each
            assert sorted(stored) == [base + i for i in range(-1, 100)]
            latest = await service.latest(path)
            assert latest[path] == Point(base + 99, 99, Quality.GOOD)
            minute = await service.query_buckets(path, base, base + 100, 60_000)
            assert minute[path].tier is Tier.MINUTE and sum(b.count for b in minute[path].buckets) >= 100
            listed = await service.list_paths(f"uns/{group_id}/")
            assert listed[path] is DataType.Int64 and listed[f"uns/{group_id}/n1/bdSeq"] is DataType.Int64
        # The hub stopped: STALE went to the historian before it closed. A new hub reads the same history.
        second = Hub(cfg, plugins=[historian_plugin])
        async with running(second):
            await eventually(lambda: _started(second), what="the second hub's historian")
            points = (await second.historian.query_raw(path, 0, now_ms() + 1))[path]
            good = [p.value for p in points if p.quality is Quality.GOOD]
            assert good == [-1, *range(100)]
            assert points[-1].quality is Quality.STALE
    finally:
        await edge.close()
        vm.close()


async def _started(hub: Hub) -> bool:
    return getattr(hub, "historian", None) is not None


async def test_the_service_applies_retention_periodically(tmp_path):
    settings = historian_plugin.Settings.model_validate(
        {"backends": [{"type": "sql", "retention": {"raw_days": 1, "minute_days": 1, "hour_days": 1,
                                                   "interval_s": 0.05}}]}  # fmt: skip
    )
    service = historian_plugin.HistorianService.from_settings(settings, tmp_path)
    await service.open()
    service.start(lambda coro, what: asyncio.create_task(coro, name=what))
    path = "zdorovo/plant1/utilities/boiler/pressure"
    old = now_ms() - 3 * 86_400_000
    await service.write([sample(path, old + i * 60_000, float(i)) for i in range(100)])
    assert await service.flush(timeout=5)

    async def trimmed() -> bool:
        return len((await service.query_raw(path, 0, now_ms()))[path]) == 1

    await eventually(trimmed, timeout=5, what="retention to trim the raw samples")
    points = (await service.query_raw(path, 0, now_ms()))[path]
    assert points == [Point(old + 99 * 60_000, 99.0, Quality.GOOD)]  # the value that still holds
    assert service.diagnostics()["backends"]["sql"]["backend"]["retention_deleted"]["raw"] == 99
    await service.stop()

