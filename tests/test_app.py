"""Hub: the host, the mirror and the status publisher wired from one configuration."""

from __future__ import annotations

import pytest

from hub.app import Hub
from hub.config import parse_config
from hub.errors import WriteError
from hub.mqtt import BrokerUrl
from hub.sparkplug.payload import DataType, Metric
from sparkplug_fakes import FakeEdge, Watcher, running, wait_until


def config(broker_url: str, state_dir, **uns):
    return parse_config({
        "broker": {"url": broker_url},
        "state_dir": str(state_dir),
        "host": {"host_id": "plant", "diagnostics_interval_s": 0.2, "reorder_timeout_ms": 200},
        "uns": {"status_topic": "plantbus/status/plant", **uns},
    })


@pytest.mark.spec("tck-id-conformance-primary-host", "tck-id-components-ph-state")
async def test_hub_mirrors_publishes_status_writes_and_says_goodbye(broker, group_id, tmp_path):
    url = BrokerUrl.parse(broker.url)
    hub = Hub(config("mqtt://127.0.0.1:1", tmp_path), broker_override=broker.url)  # the override wins
    edge = FakeEdge(url, group_id, "n1")
    watcher = await Watcher(url, "w").start("plantbus/status/plant", "spBv1.0/STATE/plant", f"uns/{group_id}/#")
    async with running(hub):
        await hub.host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Int32, 1, alias=1)])
        await edge.dbirth("d1", [Metric("SP", DataType.Double, 1.0, alias=2)])
        await watcher.wait_for(f"uns/{group_id}/n1/d1/SP", lambda m: m.json()["value"] == 1.0)
        status = await watcher.wait_for(
            "plantbus/status/plant", lambda m: m.json()["host"]["nodes_online"] == 1 and m.json()["mirror"]["published"] > 0
        )
        doc = status.json()
        assert doc["host"]["host_id"] == "plant" and doc["host"]["online"] is True
        assert doc["host"]["devices_online"] == 1
        assert {"p50", "p99"} <= set(doc["host"]["latency_ms"]) and {"p50", "p99"} <= set(doc["host"]["processing_ms"])
        assert doc["broker"] == str(url)
        late = await Watcher(url, "late").start("plantbus/status/plant")
        assert (await late.wait_for("plantbus/status/plant")).retain
        await late.stop()

        await hub.write(f"uns/{group_id}/n1/d1/SP", 2.5)
        await wait_until(lambda: edge.commands, what="the DCMD")
        assert edge.commands[0][1].metrics[0].value == 2.5
        with pytest.raises(WriteError):
            await hub.write(f"uns/{group_id}/n1/d1/SP", "fast")
        assert hub.diagnostics()["host"]["writes"] == 1
    await watcher.wait_for("spBv1.0/STATE/plant", lambda m: m.json()["online"] is False)
    await watcher.wait_for(f"uns/{group_id}/n1/d1/SP", lambda m: m.json()["quality"] == "STALE")
    await watcher.stop()
    await edge.close()


async def test_hub_without_mirror_still_hosts_and_reports(broker, group_id, tmp_path):
    url = BrokerUrl.parse(broker.url)
    hub = Hub(config(broker.url, tmp_path, enabled=False))
    assert hub.mirror is None
    edge = FakeEdge(url, group_id, "n1")
    watcher = await Watcher(url, "w").start("plantbus/status/plant", "uns/#")
    async with running(hub):
        await hub.host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Int32, 1, alias=1)])
        status = await watcher.wait_for("plantbus/status/plant", lambda m: m.json()["host"]["nodes_online"] == 1)
        assert status.json()["mirror"] is None
        assert not watcher.on(f"uns/{group_id}/n1/A")
    await watcher.stop()
    await edge.close()
