"""UNS mirror: topics, JSON documents, retained live values, STALE, _status, historical values, ISA-95 mappings."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from hub.config import UnsConfig, UnsMapping
from hub.mirror import UnsMirror
from hub.mqtt import BrokerUrl
from hub.sparkplug.payload import DataSet, DataType, Metric, PropertyValue, now_ms
from sparkplug_fakes import FakeEdge, Watcher, make_host, running, wait_until


def setup(broker, group_id, uns: UnsConfig | None = None, **host_kw):
    uns = uns or UnsConfig()
    host = make_host(broker.url, uns=uns, **host_kw)
    mirror = UnsMirror(host, uns)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1", bd_seq=4, auto_rebirth=True)
    return host, mirror, edge


async def retained(broker, topic_filter: str, topic: str, predicate=lambda m: True, timeout: float = 5.0):
    """The retained message of `topic` that a newly arriving subscriber gets, once it matches `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        w = await Watcher(BrokerUrl.parse(broker.url), f"late-{time.monotonic_ns()}").start(topic_filter)
        try:
            return await w.wait_for(topic, lambda m: m.retain and predicate(m), timeout=0.3)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        finally:
            await w.stop()


async def test_default_mapping_publishes_retained_json_per_metric(broker, group_id):
    host, mirror, edge = setup(broker, group_id)
    t = now_ms() - 1234
    async with running(host, mirror):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("Line/Speed", DataType.Double, 12.5, alias=1, timestamp=t)])
        await edge.dbirth("filler", [
            Metric("Fill/Weight", DataType.Float, 250.5, alias=2, timestamp=t),
            Metric("Count", DataType.UInt32, 7, alias=3, timestamp=t),
            Metric("Code", DataType.Bytes, b"\x01\x02", alias=4, timestamp=t),
            Metric("Ratio", DataType.Double, float("nan"), alias=5, timestamp=t),
            Metric("Table", DataType.DataSet, DataSet(["k"], [DataType.Int8], [[1], [-2]]), alias=6, timestamp=t),
            Metric("Empty", DataType.String, None, alias=7, timestamp=t),
        ])
        base = f"uns/{group_id}/n1"
        node_metric = await retained(broker, f"{base}/#", f"{base}/Line/Speed")
        assert node_metric.json() == {"value": 12.5, "timestamp": t, "quality": "GOOD", "datatype": "Double"}
        assert node_metric.qos == 0
        docs = {}
        for name in ("Fill/Weight", "Count", "Code", "Ratio", "Table", "Empty"):
            docs[name] = (await retained(broker, f"{base}/filler/#", f"{base}/filler/{name}")).json()
        assert docs["Fill/Weight"] == {"value": 250.5, "timestamp": t, "quality": "GOOD", "datatype": "Float"}
        assert docs["Count"]["value"] == 7 and docs["Count"]["datatype"] == "UInt32"
        assert base64.b64decode(docs["Code"]["value"]) == b"\x01\x02"
        assert docs["Ratio"]["value"] == "nan"
        assert docs["Table"]["value"] == {"columns": ["k"], "types": ["Int8"], "rows": [[1], [-2]]}
        assert docs["Empty"]["value"] is None
        bd = await retained(broker, f"{base}/#", f"{base}/bdSeq")
        assert bd.json()["value"] == 4
        await edge.close()


@pytest.mark.spec(
    "tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline",
    "tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-tags-stale",
)
async def test_status_topics_and_stale_values_follow_births_and_deaths(broker, group_id):
    host, mirror, edge = setup(broker, group_id)
    base = f"uns/{group_id}/n1"
    async with running(host, mirror):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Int32, 1, alias=1)])
        await edge.dbirth("d1", [Metric("T", DataType.Double, 3.0, alias=2)])
        node = await retained(broker, f"{base}/#", f"{base}/_status")
        assert node.json()["online"] is True and node.json()["bdSeq"] == 4 and node.json()["device"] is None
        device = await retained(broker, f"{base}/#", f"{base}/d1/_status")
        assert device.json()["online"] is True and device.json()["device"] == "d1"

        await edge.ndeath()
        stale = await retained(broker, f"{base}/#", f"{base}/d1/T", lambda m: m.json()["quality"] == "STALE")
        assert stale.json()["value"] == 3.0
        node = await retained(broker, f"{base}/#", f"{base}/_status", lambda m: m.json()["online"] is False)
        assert node.json()["reason"] == "death"
        await retained(broker, f"{base}/#", f"{base}/d1/_status", lambda m: m.json()["online"] is False)
        await retained(broker, f"{base}/#", f"{base}/A", lambda m: m.json()["quality"] == "STALE")
        await edge.close()


async def test_historical_values_are_published_but_never_replace_the_retained_live_value(broker, group_id):
    host, mirror, edge = setup(broker, group_id)
    topic = f"uns/{group_id}/n1/A"
    live = await Watcher(BrokerUrl.parse(broker.url), "live").start(topic)
    async with running(host, mirror):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Int32, 10, alias=1)])
        await edge.ndata([Metric(None, DataType.Int32, 3, alias=1, timestamp=now_ms() - 60_000, is_historical=True)])
        hist = await live.wait_for(topic, lambda m: m.json().get("historical") is True)
        assert hist.json()["value"] == 3
        current = await retained(broker, topic, topic)
        assert current.json()["value"] == 10 and "historical" not in current.json()
        await edge.close()
    await live.stop()


async def test_quality_property_is_mirrored(broker, group_id):
    host, mirror, edge = setup(broker, group_id)
    topic = f"uns/{group_id}/n1/A"
    async with running(host, mirror):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Int32, 10, alias=1,
                                  properties={"Quality": PropertyValue(DataType.Int32, 0)})])
        doc = await retained(broker, topic, topic)
        assert doc.json()["quality"] == "BAD"
        await edge.close()


async def test_isa95_mapping_places_devices_and_nodes_where_configured(broker, group_id):
    uns = UnsConfig(
        qos=1,
        mappings=[
            UnsMapping(group=group_id, edge_node="n1", device="filler*", path="zdorovo/plant1/packaging/salad/{device}"),
            UnsMapping(group=group_id, edge_node="n1", path="zdorovo/plant1/packaging/salad/{edge_node}_gateway/{device}"),
        ],
    )
    host, mirror, edge = setup(broker, group_id, uns)
    async with running(host, mirror):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("Uptime", DataType.Int64, 5, alias=1)])
        await edge.dbirth("filler1", [Metric("Fill/Weight", DataType.Double, 251.0, alias=2)])
        await edge.dbirth("sleever", [Metric("Scrap", DataType.Int32, 2, alias=3)])
        root = "zdorovo/plant1/packaging/salad"
        filler = await retained(broker, f"{root}/#", f"{root}/filler1/Fill/Weight")
        assert filler.json()["value"] == 251.0 and filler.qos == 1
        sleever = await retained(broker, f"{root}/#", f"{root}/n1_gateway/sleever/Scrap")
        assert sleever.json()["value"] == 2
        # the node has no device: {device} and its slash vanish
        node = await retained(broker, f"{root}/#", f"{root}/n1_gateway/Uptime")
        assert node.json()["value"] == 5
        await retained(broker, f"{root}/#", f"{root}/filler1/_status")
        await edge.close()


async def test_mirror_republishes_stale_then_good_after_a_broker_restart(broker, group_id):
    host, mirror, edge = setup(broker, group_id)
    topic = f"uns/{group_id}/n1/A"
    async with running(host, mirror):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Int32, 10, alias=1)])
        await retained(broker, topic, topic)
        await asyncio.to_thread(broker.restart)
        # the STALE samples were queued while the host had no connection, and are published after it is back
        await wait_until(lambda: host.online, timeout=10, what="the host to reconnect")
        stale = await retained(broker, topic, topic, lambda m: m.json()["quality"] == "STALE")
        assert stale.json()["value"] == 10
        assert mirror.diagnostics()["queued"] >= 1
        await edge.reconnect()
        await edge.nbirth()
        await retained(broker, topic, topic, lambda m: m.json()["quality"] == "GOOD")
        assert await mirror.flush()
        assert mirror.diagnostics()["pending"] == 0
        await edge.close()


async def test_mirror_keeps_up_with_a_burst_without_losing_a_message(broker, group_id):
    host, mirror, edge = setup(broker, group_id)
    topic = f"uns/{group_id}/n1/A"
    live = await Watcher(BrokerUrl.parse(broker.url), "live").start(topic, qos=0)
    async with running(host, mirror):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Int32, -1, alias=1)])
        for i in range(2000):
            await edge.ndata([Metric(None, DataType.Int32, i, alias=1)])
        await wait_until(lambda: any(m.json()["value"] == 1999 for m in live.on(topic)), timeout=20,
                         what="the last value of the burst")
        assert [m.json()["value"] for m in live.on(topic)] == list(range(-1, 2000))
        await edge.close()
    await live.stop()
