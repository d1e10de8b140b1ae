"""NCMD/DCMD handling: rebirth requests, validated writes handed to the owner, Node Control metrics."""

from __future__ import annotations

import asyncio

import pytest
from _edge_support import AliasBook, Observer, publish, send_dcmd, send_ncmd, send_rebirth, wait_until

from hub.mqtt import BrokerUrl
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.payload import DataType, Metric
from hub.sparkplug.topic import MessageType as MT
from hub.sparkplug.topic import SparkplugTopic


def make_node(broker, group_id, tmp_path, **kw) -> EdgeNode:
    return EdgeNode(BrokerUrl.parse(broker.url), group_id, "edge1", state_dir=tmp_path / "state", **kw)


@pytest.mark.spec(
    "tck-id-operational-behavior-data-commands-rebirth-action-1",
    "tck-id-operational-behavior-data-commands-rebirth-action-2",
    "tck-id-operational-behavior-data-commands-rebirth-action-3",
    "tck-id-operational-behavior-data-commands-ncmd-rebirth-verb",
    "tck-id-operational-behavior-data-commands-ncmd-rebirth-name",
    "tck-id-operational-behavior-data-commands-ncmd-rebirth-value",
    "tck-id-topics-ncmd-topic",
    "tck-id-payloads-nbirth-bdseq-repeat",
)
async def test_rebirth_request_republishes_nbirth_and_dbirths_with_same_bdseq_and_seq_from_zero(
    broker, group_id, tmp_path
):
    node = make_node(broker, group_id, tmp_path)
    node.add_node_metric("count", DataType.Int64, 0)
    for d in ("a", "b"):
        node.add_device(d).add_metric("v", DataType.Int64, 0)

    async def hammer() -> None:
        i = 0
        while True:
            i += 1
            await node.update("a", {"v": i})
            await node.update(None, {"count": i})
            await asyncio.sleep(0.002)

    async with Observer(broker) as obs, node:
        first = await obs.wait_type(MT.NBIRTH)
        task = asyncio.create_task(hammer())
        await obs.wait_type(MT.DDATA)
        await send_rebirth(broker, group_id, "edge1")
        second = await obs.wait_for(lambda m: m.type is MT.NBIRTH and m is not first)
        await wait_until(lambda: len(obs.of(MT.DDATA)) > 20, what="DATA to resume")
        task.cancel()
    assert node.stats.rebirths_requested == 1
    assert second.payload.seq == 0
    assert second.metric("bdSeq").value == first.metric("bdSeq").value
    assert second.metric("Node Control/Rebirth").value is False
    stream = obs.sparkplug_stream(group_id, "edge1")
    at = stream.index(second)
    assert [m.type for m in stream[at + 1 : at + 3]] == [MT.DBIRTH, MT.DBIRTH]
    assert [m.payload.seq for m in stream[at : at + 4]] == [0, 1, 2, 3]
    # The births carry the values reported so far.
    book = AliasBook()
    for m in stream[:at]:
        if m.type.is_birth:
            book.learn(m)
    last_a = [book.values(m)["v"] for m in stream[:at] if m.type is MT.DDATA][-1]
    assert next(m for m in stream[at:] if m.topic.device_id == "a").metric("v").value >= last_a


@pytest.mark.spec(
    "tck-id-operational-behavior-data-commands-dcmd-verb",
    "tck-id-operational-behavior-data-commands-dcmd-metric-name",
    "tck-id-operational-behavior-data-commands-dcmd-metric-value",
    "tck-id-topics-dcmd-topic",
    "tck-id-topics-dcmd-payload",
    "tck-id-payloads-alias-data-cmd-requirement",
)
async def test_dcmd_writes_reach_the_owner_coerced_and_come_back_as_ddata(broker, group_id, tmp_path):
    calls = []

    async def on_write(device_id, name, value):
        await asyncio.sleep(0.01)  # a real device write takes a while
        calls.append((device_id, name, value))

    node = make_node(broker, group_id, tmp_path, on_write=on_write)
    dev = node.add_device("filler")
    speed = dev.add_metric("speed", DataType.Int32, 100, writable=True)
    dev.add_metric("setpoint", DataType.Double, 4.0, writable=True)
    async with Observer(broker) as obs, node:
        book = AliasBook()
        book.learn(await obs.wait_type(MT.DBIRTH))
        await send_dcmd(broker, group_id, "edge1", "filler", Metric("speed", DataType.Int32, 120))
        # By alias, with no datatype, as a host that learnt the birth sends it; an int for a Double.
        cmd = Metric(None, DataType.Int64, 6, alias=dev.metrics["setpoint"].alias)
        await send_dcmd(broker, group_id, "edge1", "filler", cmd)
        await wait_until(lambda: len(obs.of(MT.DDATA)) == 2, what="writes reported back")
    assert calls == [("filler", "speed", 120), ("filler", "setpoint", 6.0)]
    assert [book.values(m) for m in obs.of(MT.DDATA)] == [{"speed": 120}, {"setpoint": 6.0}]
    assert speed.value == 120 and node.stats.writes_accepted == 2 and node.stats.writes_rejected == 0


@pytest.mark.spec(
    "tck-id-operational-behavior-data-commands-dcmd-metric-value",
    "tck-id-operational-behavior-data-commands-ncmd-metric-value",
    "tck-id-operational-behavior-data-commands-dcmd-metric-name",
    "tck-id-operational-behavior-data-commands-ncmd-metric-name",
)
async def test_invalid_writes_are_counted_and_never_reach_the_owner(broker, group_id, tmp_path):
    calls = []
    node = make_node(broker, group_id, tmp_path, on_write=lambda d, n, v: calls.append((d, n, v)))
    node.add_node_metric("mode", DataType.String, "AUTO", writable=True)
    dev = node.add_device("plc")
    dev.add_metric("speed", DataType.Int16, 10, writable=True)
    dev.add_metric("serial", DataType.String, "SN-1")  # read-only
    dev.add_metric("run", DataType.Boolean, False, writable=True)
    dcmd = str(SparkplugTopic.device(MT.DCMD, group_id, "edge1", "plc"))
    async with Observer(broker) as obs, node:
        await obs.wait_type(MT.DBIRTH)
        await send_dcmd(broker, group_id, "edge1", "plc", Metric("speed", DataType.String, "fast"))  # wrong type
        await send_dcmd(broker, group_id, "edge1", "plc", Metric("speed", DataType.Int32, 40000))  # out of Int16 range
        await send_dcmd(broker, group_id, "edge1", "plc", Metric("serial", DataType.String, "SN-2"))  # read-only
        await send_dcmd(broker, group_id, "edge1", "plc", Metric("ghost", DataType.Int32, 1))  # not declared
        await send_dcmd(broker, group_id, "edge1", "plc", Metric(None, DataType.Int32, 1, alias=999))  # unknown alias
        await send_dcmd(broker, group_id, "edge1", "plc", Metric("run", DataType.Int32, 1))  # Boolean needs bool
        await send_dcmd(broker, group_id, "edge1", "plc", Metric("run", DataType.Boolean, None))  # null
        await send_ncmd(broker, group_id, "edge1", Metric("bdSeq", DataType.Int64, 9))  # read-only
        await send_ncmd(broker, group_id, "edge1", Metric("mode", DataType.Double, 1.5))  # wrong type
        await send_ncmd(broker, group_id, "edge1", Metric("Node Control/Scan Rate", DataType.Int64, 100))  # absent
        await publish(broker, dcmd, b"\xff\x00 not protobuf")
        await wait_until(lambda: node.stats.writes_rejected == 11, what="11 rejections")
        # Still healthy: a valid write goes through afterwards.
        await send_dcmd(broker, group_id, "edge1", "plc", Metric("run", DataType.Boolean, True))
        await wait_until(lambda: node.stats.writes_accepted == 1, what="the valid write")
        await obs.wait_type(MT.DDATA)
    assert calls == [("plc", "run", True)]
    assert node.stats.writes_rejected == 11


@pytest.mark.spec(
    "tck-id-operational-behavior-data-commands-ncmd-verb",
    "tck-id-operational-behavior-data-commands-ncmd-metric-name",
    "tck-id-operational-behavior-data-commands-ncmd-metric-value",
    "tck-id-topics-ncmd-topic",
    "tck-id-topics-ncmd-payload",
)
async def test_ncmd_writes_node_metrics_and_scan_rate_and_a_failing_owner_rejects(broker, group_id, tmp_path):
    calls = []

    def on_write(device_id, name, value):
        if name == "mode" and value == "BROKEN":
            raise RuntimeError("PLC refused the mode")
        calls.append((device_id, name, value))

    node = make_node(broker, group_id, tmp_path, on_write=on_write, scan_rate_ms=1000)
    node.add_node_metric("mode", DataType.String, "AUTO", writable=True)
    async with Observer(broker) as obs, node:
        book = AliasBook()
        book.learn(await obs.wait_type(MT.NBIRTH))
        await send_ncmd(broker, group_id, "edge1", Metric("Node Control/Scan Rate", DataType.Int64, 250))
        await send_ncmd(broker, group_id, "edge1", Metric("mode", DataType.String, "BROKEN"))
        await send_ncmd(broker, group_id, "edge1", Metric("Node Control/Scan Rate", DataType.Int64, 0))
        await send_ncmd(broker, group_id, "edge1", Metric("mode", DataType.String, "MANUAL"))
        await wait_until(lambda: len(obs.of(MT.NDATA)) == 2, what="two NDATA")
    assert calls == [(None, "Node Control/Scan Rate", 250), (None, "mode", "MANUAL")]
    assert node.scan_rate_ms == 250
    assert [book.values(m) for m in obs.of(MT.NDATA)] == [{"Node Control/Scan Rate": 250}, {"mode": "MANUAL"}]
    assert (node.stats.writes_accepted, node.stats.writes_rejected) == (2, 2)


async def test_writes_without_an_owner_handler_are_kept_and_reported(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path)
    target = node.add_device("tank").add_metric("setpoint", DataType.Float, 1.0, writable=True)
    async with Observer(broker) as obs, node:
        await obs.wait_type(MT.DBIRTH)
        await send_dcmd(broker, group_id, "edge1", "tank", Metric("setpoint", DataType.Float, 2.5))
        await obs.wait_type(MT.DDATA)
    assert target.value == 2.5


async def test_next_server_request_ends_the_session_with_ndeath_and_reconnects(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path)
    async with Observer(broker) as obs, node:
        first = await obs.wait_type(MT.NBIRTH)
        await send_ncmd(broker, group_id, "edge1", Metric("Node Control/Next Server", DataType.Boolean, True))
        death = await obs.wait_type(MT.NDEATH)
        second = await obs.wait_for(lambda m: m.type is MT.NBIRTH and m is not first)
    assert death.metric("bdSeq").value == first.metric("bdSeq").value
    assert second.metric("bdSeq").value == first.metric("bdSeq").value + 1
