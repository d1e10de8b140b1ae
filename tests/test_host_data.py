"""Primary host: births, aliases, deaths, STALE marking, quality, historical values, groups, malformed payloads."""

from __future__ import annotations

import math

import pytest

from hub.mqtt import BrokerUrl
from hub.samples import Quality
from hub.sparkplug.payload import DataSet, DataType, Metric, PropertyValue, now_ms
from hub.sparkplug.topic import MessageType
from sparkplug_fakes import FakeEdge, Recorder, make_host, running, wait_until

NODE_METRICS = [
    Metric("Line/Speed", DataType.Double, 12.5, alias=10),
    Metric("Line/Running", DataType.Boolean, True, alias=11),
]
DEVICE_METRICS = [
    Metric("Temperature", DataType.Float, 3.5, alias=20),
    Metric("Count", DataType.Int32, -7, alias=21),
    Metric("Total", DataType.UInt64, 2**63 + 5, alias=22),
    Metric("Batch", DataType.String, "B-001", alias=23),
    Metric("Recipe/Limits", DataType.DoubleArray, [1.0, 2.5], alias=24),
    Metric("Raw", DataType.Bytes, b"\x00\x01", alias=25),
    Metric("Small", DataType.Int8, -128, alias=26),
    Metric("Table", DataType.DataSet, DataSet(["a", "b"], [DataType.Int32, DataType.String], [[1, "x"]]), alias=27),
    Metric("When", DataType.DateTime, 1_700_000_000_000, alias=28),
]


def p(group: str, *rest: str) -> str:
    return "/".join(("uns", group, "n1") + rest)


async def born(broker, group_id, **host_kw):
    host = make_host(broker.url, **host_kw)
    rec = Recorder(host)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1", bd_seq=3, auto_rebirth=True)
    return host, rec, edge


@pytest.mark.spec("tck-id-host-topic-phid-birth-sub-required", "tck-id-message-flow-phid-sparkplug-subscription")
async def test_births_and_alias_only_data_give_good_samples_of_every_datatype(broker, group_id):
    host, rec, edge = await born(broker, group_id)
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth(NODE_METRICS)
        await edge.dbirth("d1", DEVICE_METRICS)
        await rec.wait_value(p(group_id, "d1", "When"), 1_700_000_000_000)
        births = {s.path: s for s in rec.samples}
        assert births[p(group_id, "Line", "Speed")].value == 12.5
        assert births[p(group_id, "Line", "Running")].value is True
        assert births[p(group_id, "d1", "Temperature")].value == 3.5
        assert births[p(group_id, "d1", "Count")].value == -7
        assert births[p(group_id, "d1", "Total")].value == 2**63 + 5
        assert births[p(group_id, "d1", "Batch")].value == "B-001"
        assert births[p(group_id, "d1", "Recipe", "Limits")].value == [1.0, 2.5]
        assert births[p(group_id, "d1", "Raw")].value == b"\x00\x01"
        assert births[p(group_id, "d1", "Small")].value == -128
        assert births[p(group_id, "d1", "Table")].value.rows == [[1, "x"]]
        assert births[p(group_id, "bdSeq")].value == 3
        assert all(s.quality is Quality.GOOD for s in rec.samples)
        sample = births[p(group_id, "d1", "Count")]
        assert (sample.group, sample.edge_node, sample.device, sample.metric) == (group_id, "n1", "d1", "Count")
        assert sample.datatype is DataType.Int32

        # DATA by alias only, no name and no datatype, as the specification asks of edge nodes.
        t = now_ms() - 1000
        await edge.ddata("d1", [
            Metric(None, DataType.Int32, -42, alias=21, timestamp=t),
            Metric(None, DataType.Float, 7.25, alias=20, timestamp=t),
            Metric(None, DataType.Int8, -1, alias=26, timestamp=t),
            Metric(None, DataType.DoubleArray, [math.pi], alias=24, timestamp=t),
        ])
        await edge.ndata([Metric(None, DataType.Double, 99.0, alias=10)])
        await rec.wait_value(p(group_id, "Line", "Speed"), 99.0)
        count = rec.latest(p(group_id, "d1", "Count"))
        assert count.value == -42 and count.timestamp == t and count.datatype is DataType.Int32
        assert rec.latest(p(group_id, "d1", "Temperature")).value == 7.25
        assert rec.latest(p(group_id, "d1", "Small")).value == -1
        assert rec.latest(p(group_id, "d1", "Recipe", "Limits")).value == [math.pi]
        assert host.node_online(group_id, "n1", "d1")
        assert host.current(f"{group_id}/n1/d1/Count").value == -42
        assert host.stats.rebirths_requested == 0
        assert host.diagnostics()["malformed_total"] == 0
        await edge.close()


async def test_data_by_name_is_accepted_when_the_birth_has_no_aliases(broker, group_id):
    host, rec, edge = await born(broker, group_id)
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("Level", DataType.UInt16, 5)])
        await edge.ndata([Metric("Level", DataType.UInt16, 65535)])
        await rec.wait_value(p(group_id, "Level"), 65535)
        await edge.close()


@pytest.mark.spec(
    "tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline",
    "tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-tags-stale",
    "tck-id-operational-behavior-edge-node-termination-host-action-ndeath-devices-offline",
    "tck-id-operational-behavior-edge-node-termination-host-action-ndeath-devices-tags-stale",
)
async def test_ndeath_with_wrong_bdseq_is_ignored_and_the_right_one_marks_everything_stale(broker, group_id):
    host, rec, edge = await born(broker, group_id)
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth(NODE_METRICS)
        await edge.dbirth("d1", DEVICE_METRICS[:2])
        await rec.wait_value(p(group_id, "d1", "Count"), -7)

        await edge.ndeath(bd_seq=2)  # the late Will of an older session
        await wait_until(lambda: host.stats.ndeath_ignored == 1, what="the stale NDEATH to be ignored")
        assert host.node_online(group_id, "n1") and host.node_online(group_id, "n1", "d1")
        assert rec.latest(p(group_id, "d1", "Count")).quality is Quality.GOOD

        before = now_ms()
        await edge.ndeath()
        stale = await rec.wait_quality(p(group_id, "d1", "Count"), Quality.STALE)
        after = now_ms()
        assert stale.value == -7  # the last value is kept
        assert before <= stale.timestamp <= after  # the host's clock, not the Will's timestamp
        for path in (p(group_id, "Line", "Speed"), p(group_id, "Line", "Running"), p(group_id, "d1", "Temperature")):
            assert rec.latest(path).quality is Quality.STALE
        assert not host.node_online(group_id, "n1") and not host.node_online(group_id, "n1", "d1")
        offline = {(s.device, s.online) for s in rec.statuses if not s.online}
        assert offline == {(None, False), ("d1", False)}
        assert host.diagnostics()["nodes_online"] == 0
        await edge.close()


@pytest.mark.spec(
    "tck-id-operational-behavior-edge-node-termination-host-action-ddeath-devices-offline",
    "tck-id-operational-behavior-edge-node-termination-host-action-ddeath-devices-tags-stale",
)
async def test_ddeath_marks_only_that_device_stale_with_the_ddeath_timestamp(broker, group_id):
    host, rec, edge = await born(broker, group_id)
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth(NODE_METRICS)
        await edge.dbirth("d1", DEVICE_METRICS[:2])
        await edge.dbirth("d2", [Metric("Other", DataType.Int16, 1, alias=30)])
        await rec.wait_value(p(group_id, "d2", "Other"), 1)
        death_ts = now_ms() - 5000
        await edge.ddeath("d1", timestamp=death_ts)
        stale = await rec.wait_quality(p(group_id, "d1", "Temperature"), Quality.STALE)
        assert stale.timestamp == death_ts and stale.value == 3.5
        assert rec.latest(p(group_id, "d2", "Other")).quality is Quality.GOOD
        assert rec.latest(p(group_id, "Line", "Speed")).quality is Quality.GOOD
        assert host.node_online(group_id, "n1") and not host.node_online(group_id, "n1", "d1")
        assert host.node_online(group_id, "n1", "d2")
        # The seq of DDEATH counted: the next DDATA in sequence is accepted without a rebirth.
        await edge.ddata("d2", [Metric(None, DataType.Int16, 2, alias=30)])
        await rec.wait_value(p(group_id, "d2", "Other"), 2)
        assert host.stats.rebirths_requested == 0
        await edge.close()


async def test_quality_property_maps_to_bad_and_stale(broker, group_id):
    host, rec, edge = await born(broker, group_id)
    bad = {"Quality": PropertyValue(DataType.Int32, 0)}
    stale = {"Quality": PropertyValue(DataType.Int32, 500)}
    good = {"Quality": PropertyValue(DataType.Int32, 192)}
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Double, 1.0, alias=1, properties=bad),
                           Metric("B", DataType.Double, 2.0, alias=2)])
        await wait_until(lambda: rec.latest(p(group_id, "B")), what="the birth")
        assert rec.latest(p(group_id, "A")).quality is Quality.BAD
        await edge.ndata([Metric(None, DataType.Double, 3.0, alias=2, properties=stale),
                          Metric(None, DataType.Double, 4.0, alias=1, properties=good)])
        await rec.wait_quality(p(group_id, "B"), Quality.STALE)
        assert rec.latest(p(group_id, "A")).quality is Quality.GOOD
        await edge.close()


async def test_historical_values_are_emitted_but_do_not_replace_the_current_value(broker, group_id):
    host, rec, edge = await born(broker, group_id)
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Int64, 10, alias=1)])
        old = now_ms() - 3_600_000
        await edge.ndata([Metric(None, DataType.Int64, 5, alias=1, timestamp=old, is_historical=True)])
        await wait_until(lambda: any(s.is_historical for s in rec.samples), what="the historical sample")
        hist = [s for s in rec.samples if s.is_historical][0]
        assert (hist.value, hist.timestamp) == (5, old)
        assert host.current(f"{group_id}/n1/A").value == 10
        await edge.close()


async def test_only_configured_groups_are_hosted(broker, group_id):
    host = make_host(broker.url, groups=[group_id])
    rec = Recorder(host)
    url = BrokerUrl.parse(broker.url)
    mine = FakeEdge(url, group_id, "n1")
    other = FakeEdge(url, group_id + "x", "n1")
    async with running(host):
        await host.wait_online()
        await mine.connect()
        await other.connect()
        await other.nbirth([Metric("A", DataType.Double, 1.0, alias=1)])
        await other.ndata([Metric(None, DataType.Double, 2.0, alias=1)])
        await mine.nbirth([Metric("A", DataType.Double, 1.0, alias=1)])
        await rec.wait_value(p(group_id, "A"), 1.0)
        assert {s.group for s in rec.samples} == {group_id}
        assert other.rebirth_requests() == []
        await mine.close()
        await other.close()


async def test_malformed_payloads_are_counted_and_the_host_keeps_working(broker, group_id):
    host, rec, edge = await born(broker, group_id)
    async with running(host):
        await host.wait_online()
        await edge.connect()
        node = edge.topic(MessageType.NBIRTH)
        await edge.raw(node, b"\xff\xff\xff not protobuf")
        await edge.raw(f"spBv1.0/{group_id}/NBIRTH", b"")  # too few levels
        await edge.raw(f"spBv1.0/{group_id}/BOGUS/n1", b"")
        # a birth metric with a datatype id that does not exist, next to a good one
        from hub.sparkplug import sparkplug_b_pb2 as pb

        msg = pb.Payload(timestamp=now_ms(), seq=0)
        bad = msg.metrics.add(name="Bad", alias=1, datatype=99)
        bad.int_value = 1
        good = msg.metrics.add(name="Good", alias=2, datatype=int(DataType.Double))
        good.double_value = 1.5
        await edge.raw(node, msg.SerializeToString())
        await rec.wait_value(p(group_id, "Good"), 1.5)
        # DATA whose value sits in the wrong field for the birth's datatype
        data = pb.Payload(timestamp=now_ms(), seq=1)
        wrong = data.metrics.add(alias=2)
        wrong.string_value = "not a double"
        await edge.raw(edge.topic(MessageType.NDATA), data.SerializeToString())
        await wait_until(lambda: host.stats.malformed.get("bad_value"), what="the bad value to be counted")
        stats = host.diagnostics()["malformed"]
        assert stats["not_protobuf"] == 1
        assert stats["bad_topic"] == 2
        assert stats["bad_birth_metric"] == 1
        assert stats["nbirth_without_bdseq"] == 1
        # still connected and still processing
        ok = pb.Payload(timestamp=now_ms(), seq=2)
        m = ok.metrics.add(alias=2)
        m.double_value = 2.5
        await edge.raw(edge.topic(MessageType.NDATA), ok.SerializeToString())
        await rec.wait_value(p(group_id, "Good"), 2.5)
        assert host.online and host.stats.connects == 1
        await edge.close()
