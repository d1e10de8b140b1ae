"""Edge node sessions against a real Mosquitto: CONNECT/Will, births, seq, aliases, RBE, deaths, bdSeq."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _edge_support import AliasBook, Observer, broker_log, debug_broker, persistent_broker, wait_until

from hub.errors import ConfigError, PayloadError
from hub.mqtt import BrokerUrl
from hub.sparkplug.edge import EdgeNode, Quality
from hub.sparkplug.payload import DataType, now_ms
from hub.sparkplug.topic import MessageType as MT

ROOT = Path(__file__).resolve().parent.parent


def make_node(broker, group_id, tmp_path, name="edge1", **kw) -> EdgeNode:
    return EdgeNode(BrokerUrl.parse(broker.url), group_id, name, state_dir=tmp_path / "state", **kw)


@pytest.mark.spec(
    "tck-id-message-flow-edge-node-birth-publish-connect",
    "tck-id-message-flow-edge-node-birth-publish-will-message",
    "tck-id-message-flow-edge-node-birth-publish-will-message-topic",
    "tck-id-message-flow-edge-node-birth-publish-will-message-qos",
    "tck-id-message-flow-edge-node-birth-publish-will-message-will-retained",
    "tck-id-payloads-ndeath-will-message",
    "tck-id-payloads-ndeath-will-message-qos",
    "tck-id-payloads-ndeath-will-message-retain",
    "tck-id-principles-persistence-clean-session-311",
    "tck-id-message-flow-edge-node-ncmd-subscribe",
    "tck-id-message-flow-device-dcmd-subscribe",
    "tck-id-topics-nbirth-mqtt",
    "tck-id-topics-dbirth-mqtt",
    "tck-id-topics-ndata-mqtt",
    "tck-id-topics-ddata-mqtt",
    "tck-id-topics-ddeath-mqtt",
    "tck-id-payloads-nbirth-qos",
    "tck-id-payloads-nbirth-retain",
    "tck-id-payloads-dbirth-qos",
    "tck-id-payloads-dbirth-retain",
    "tck-id-payloads-ndata-qos",
    "tck-id-payloads-ndata-retain",
    "tck-id-payloads-ddata-qos",
    "tck-id-payloads-ddata-retain",
    "tck-id-message-flow-edge-node-birth-publish-nbirth-qos",
    "tck-id-message-flow-edge-node-birth-publish-nbirth-retained",
    "tck-id-message-flow-device-birth-publish-dbirth-qos",
    "tck-id-message-flow-device-birth-publish-dbirth-retained",
    "tck-id-topic-structure-namespace-device-id-associated-message-types",
    "tck-id-topic-structure-namespace-device-id-non-associated-message-types",
)
async def test_broker_sees_clean_session_will_subscriptions_then_qos0_unretained_publishes(tmp_path, group_id):
    with debug_broker(tmp_path) as broker:
        node = make_node(broker, group_id, tmp_path, client_id="edge-under-test")
        node.add_node_metric("uptime", DataType.Int64, 0)
        dev = node.add_device("filler")
        dev.add_metric("speed", DataType.Double, 1.0, writable=True)
        async with node:
            await node.wait_online(5)
            await node.update(None, {"uptime": 5})
            await node.update("filler", {"speed": 2.0})
            await node.set_device_online("filler", False)
            await wait_until(lambda: any("DDEATH" in line for line in broker_log(broker)), what="DDEATH at the broker")
        lines = broker_log(broker)

    def index(pattern: str) -> int:
        for i, line in enumerate(lines):
            if re.search(pattern, line):
                return i
        raise AssertionError(f"{pattern!r} not in the broker log:\n" + "\n".join(lines))

    # MQTT 3.1.1 CONNECT with Clean Session (c1) and a Will: QoS 1, not retained, on the NDEATH topic.
    connect = index(r"New client connected from .* as edge-under-test \(p2, c1, k30")
    will = index(r"Will message specified \(\d+ bytes\) \(r0, q1\)")
    assert lines[will + 1].split(": ", 1)[1].strip() == f"spBv1.0/{group_id}/NDEATH/edge1"
    assert connect < will
    # NCMD and the device's DCMD subscribed with QoS 1, acknowledged before the NBIRTH arrives.
    ncmd = index(rf"^\d+: \tspBv1\.0/{group_id}/NCMD/edge1 \(QoS 1\)")
    dcmd = index(rf"^\d+: \tspBv1\.0/{group_id}/DCMD/edge1/filler \(QoS 1\)")
    nbirth = index(rf"Received PUBLISH from edge-under-test .*'spBv1\.0/{group_id}/NBIRTH/edge1'")
    assert connect < ncmd < nbirth and dcmd < nbirth
    publishes = [line for line in lines if "Received PUBLISH from edge-under-test" in line]
    kinds = {}
    for line in publishes:
        m = re.search(r"\(d0, q(\d), r(\d), m\d+, 'spBv1\.0/[^/]+/(\w+)/([^']+)'", line)
        assert m, line
        kinds[m.group(3)] = (m.group(1), m.group(2), m.group(4))
    for mt in ("NBIRTH", "DBIRTH", "NDATA", "DDATA", "DDEATH"):
        qos, retain, rest = kinds[mt]
        assert (qos, retain) == ("0", "0"), f"{mt} must be QoS 0, not retained"
        assert ("/" in rest) == mt.startswith("D"), f"{mt}: device id only on device topics"


@pytest.mark.spec(
    "tck-id-topics-nbirth-topic",
    "tck-id-topics-nbirth-seq-num",
    "tck-id-topics-nbirth-timestamp",
    "tck-id-topics-nbirth-metric-reqs",
    "tck-id-topics-nbirth-metrics",
    "tck-id-topics-nbirth-bdseq-included",
    "tck-id-topics-nbirth-rebirth-metric",
    "tck-id-payloads-nbirth-timestamp",
    "tck-id-payloads-nbirth-seq",
    "tck-id-payloads-nbirth-bdseq",
    "tck-id-payloads-nbirth-rebirth-req",
    "tck-id-payloads-sequence-num-req-nbirth",
    "tck-id-message-flow-edge-node-birth-publish-nbirth-topic",
    "tck-id-message-flow-edge-node-birth-publish-nbirth-payload",
    "tck-id-message-flow-edge-node-birth-publish-nbirth-payload-seq",
    "tck-id-operational-behavior-data-commands-rebirth-name",
    "tck-id-operational-behavior-data-commands-rebirth-name-aliases",
    "tck-id-operational-behavior-data-commands-rebirth-datatype",
    "tck-id-operational-behavior-data-commands-rebirth-value",
    "tck-id-operational-behavior-data-publish-nbirth",
    "tck-id-operational-behavior-data-publish-nbirth-values",
    "tck-id-payloads-alias-birth-requirement",
    "tck-id-payloads-alias-uniqueness",
    "tck-id-payloads-metric-datatype-req",
    "tck-id-payloads-metric-datatype-value",
    "tck-id-payloads-metric-datatype-value-type",
    "tck-id-payloads-name-birth-data-requirement",
    "tck-id-payloads-metric-propertyvalue-type-req",
    "tck-id-payloads-metric-propertyvalue-type-type",
    "tck-id-payloads-metric-propertyvalue-type-value",
    "tck-id-payloads-propertyset-keys-array-size",
    "tck-id-payloads-propertyset-values-array-size",
    "tck-id-topic-structure",
    "tck-id-topic-structure-namespace-a",
)
async def test_nbirth_carries_bdseq_node_control_and_every_node_metric_with_current_values(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path, scan_rate_ms=1000)
    node.add_node_metric("line speed", DataType.Double, 42.5, properties={"engUnit": "packs/min"})
    node.add_node_metric("recipe", DataType.String)  # unknown yet: is_null
    node.add_node_metric("batch", DataType.Int32, -7)
    dev = node.add_device("checkweigher")
    dev.add_metric("weight", DataType.Float, 40.1)
    async with Observer(broker) as obs, node:
        before = now_ms()
        birth = await obs.wait_type(MT.NBIRTH)
        assert str(birth.topic) == f"spBv1.0/{group_id}/NBIRTH/edge1"
        p = birth.payload
        assert p.seq == 0
        assert before - 5000 <= p.timestamp <= now_ms()
        names = [m.name for m in p.metrics]
        assert names[:4] == ["bdSeq", "Node Control/Rebirth", "Node Control/Next Server", "Node Control/Scan Rate"]
        assert set(names[4:]) == {"line speed", "recipe", "batch"}
        bdseq = birth.metric("bdSeq")
        assert (bdseq.datatype, bdseq.value) == (DataType.Int64, node.bdseq)
        rebirth = birth.metric("Node Control/Rebirth")
        assert (rebirth.datatype, rebirth.value, rebirth.alias) == (DataType.Boolean, False, None)
        assert birth.metric("Node Control/Scan Rate").value == 1000
        assert birth.metric("Node Control/Scan Rate").datatype is DataType.Int64
        assert birth.metric("line speed").value == 42.5
        assert birth.metric("line speed").properties["engUnit"].type is DataType.String
        assert birth.metric("line speed").properties["engUnit"].value == "packs/min"
        assert birth.metric("recipe").is_null and birth.metric("recipe").value is None
        assert birth.metric("batch").value == -7
        for m in p.metrics:
            assert m.datatype is not DataType.Unknown and m.timestamp is not None
            if m.name != "Node Control/Rebirth":
                assert m.alias is not None
        dbirth = await obs.wait_type(MT.DBIRTH)
        aliases = [m.alias for m in p.metrics + dbirth.payload.metrics if m.alias is not None]
        assert len(aliases) == len(set(aliases)), "aliases unique across the edge node"


@pytest.mark.spec(
    "tck-id-payloads-dbirth-order",
    "tck-id-payloads-ndata-order",
    "tck-id-payloads-ddata-order",
    "tck-id-principles-birth-certificates-order",
    "tck-id-message-flow-device-birth-publish-nbirth-wait",
    "tck-id-message-flow-device-birth-publish-dbirth-topic",
    "tck-id-message-flow-device-birth-publish-dbirth-match-edge-node-topic",
    "tck-id-message-flow-device-birth-publish-dbirth-payload",
    "tck-id-message-flow-device-birth-publish-dbirth-payload-seq",
    "tck-id-topics-dbirth-topic",
    "tck-id-topics-dbirth-seq",
    "tck-id-topics-dbirth-timestamp",
    "tck-id-topics-dbirth-metric-reqs",
    "tck-id-topics-dbirth-metrics",
    "tck-id-payloads-dbirth-timestamp",
    "tck-id-payloads-dbirth-seq",
    "tck-id-payloads-dbirth-seq-inc",
    "tck-id-operational-behavior-data-publish-dbirth",
    "tck-id-operational-behavior-data-publish-dbirth-values",
    "tck-id-topic-structure-namespace-unique-device-id",
    "tck-id-topic-structure-namespace-valid-device-id",
)
async def test_every_dbirth_follows_the_nbirth_before_any_data(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path)
    node.add_node_metric("count", DataType.Int64, 0)
    for d in ("filler", "wrapper", "packer"):
        node.add_device(d).add_metric("state", DataType.String, "IDLE")
    node.device("wrapper").add_metric("temp", DataType.Double)

    async def hammer() -> None:
        # DATA offered from the very start: none may overtake a birth.
        i = 0
        while True:
            i += 1
            await node.update(None, {"count": i})
            await node.update("filler", {"state": f"S{i}"})
            await asyncio.sleep(0.001)

    async with Observer(broker) as obs:
        hammering = asyncio.create_task(hammer())
        async with node:
            await obs.wait_type(MT.DDATA)
        hammering.cancel()
    stream = obs.sparkplug_stream(group_id, "edge1")
    assert stream[0].type is MT.NBIRTH
    births = stream[1:4]
    assert [m.type for m in births] == [MT.DBIRTH] * 3
    assert {m.topic.device_id for m in births} == {"filler", "wrapper", "packer"}
    assert [m.payload.seq for m in births] == [1, 2, 3]
    for b in births:
        assert (b.topic.group_id, b.topic.edge_node_id) == (group_id, "edge1")
        assert b.payload.timestamp is not None
    wrapper = next(b for b in births if b.topic.device_id == "wrapper")
    assert {m.name: m.value for m in wrapper.payload.metrics} == {"state": "IDLE", "temp": None}
    assert all(m.type in (MT.NDATA, MT.DDATA, MT.NDEATH) for m in stream[4:])


@pytest.mark.spec(
    "tck-id-payloads-sequence-num-always-included",
    "tck-id-payloads-sequence-num-incrementing",
    "tck-id-topics-ndata-seq-num",
    "tck-id-topics-ddata-seq-num",
    "tck-id-payloads-ndata-seq",
    "tck-id-payloads-ndata-seq-inc",
    "tck-id-payloads-ddata-seq",
    "tck-id-payloads-ddata-seq-inc",
    "tck-id-payloads-alias-data-cmd-requirement",
    "tck-id-payloads-name-requirement",
    "tck-id-payloads-metric-datatype-not-req",
    "tck-id-topics-ndata-topic",
    "tck-id-topics-ddata-topic",
    "tck-id-topics-ndata-timestamp",
    "tck-id-topics-ddata-timestamp",
    "tck-id-payloads-ndata-timestamp",
    "tck-id-payloads-ddata-timestamp",
)
async def test_data_goes_by_alias_with_seq_stepping_by_one_and_wrapping_after_255(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path)
    node.add_node_metric("n", DataType.Int32, 0)
    node.add_device("d").add_metric("v", DataType.UInt16, 0)
    async with Observer(broker) as obs, node:
        await node.wait_online(5)
        for i in range(1, 301):
            await node.update(None if i % 3 else "d", {"n" if i % 3 else "v": i})
        await wait_until(lambda: len(obs.of(MT.NDATA, MT.DDATA)) == 300, what="300 DATA messages")
    book = AliasBook()
    stream = [m for m in obs.sparkplug_stream(group_id, "edge1") if m.type is not MT.NDEATH]
    seqs = [m.payload.seq for m in stream]
    assert seqs == [i % 256 for i in range(len(stream))]
    assert 255 in seqs and seqs.count(0) == 2
    values = []
    for m in stream:
        if m.type.is_birth:
            book.learn(m)
            continue
        assert str(m.topic).startswith(f"spBv1.0/{group_id}/{m.type.value}/edge1")
        assert m.payload.timestamp is not None
        for metric in m.payload.metrics:
            assert metric.name is None and metric.alias is not None
            assert metric.datatype is DataType.Unknown, "no datatype in DATA"
            assert metric.timestamp is not None
        values += list(book.values(m).values())
    assert values == list(range(1, 301))


@pytest.mark.spec(
    "tck-id-principles-rbe-recommended",
    "tck-id-topics-ndata-payload",
    "tck-id-topics-ddata-payload",
    "tck-id-operational-behavior-data-publish-nbirth-change",
    "tck-id-operational-behavior-data-publish-dbirth-change",
    "tck-id-operational-behavior-data-publish-nbirth-order",
    "tck-id-operational-behavior-data-publish-dbirth-order",
)
async def test_only_changes_beyond_the_deadband_are_reported_all_in_one_message(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path)
    dev = node.add_device("oven")
    dev.add_metric("temp", DataType.Double, 180.0, deadband=0.5)
    dev.add_metric("door", DataType.Boolean, False)
    dev.add_metric("recipe", DataType.String, "OB-40")
    async with Observer(broker) as obs, node:
        await node.wait_online(5)
        book = AliasBook()
        book.learn(await obs.wait_type(MT.DBIRTH))
        assert await node.update("oven", {"temp": 180.0, "door": False, "recipe": "OB-40"}) == 0
        assert await node.update("oven", {"temp": 180.4}) == 0  # inside the deadband
        assert await node.update("oven", {"temp": 180.6, "door": True, "recipe": "OB-40"}) == 2
        assert await node.update("oven", {"temp": 180.9}) == 0  # 0.3 from the last reported 180.6
        assert await node.update("oven", {"temp": 181.2}) == 1
        assert await node.update("oven", {"recipe": "GR-250", "door": True}, force=True) == 2
        assert await node.update("oven", {"recipe": None}) == 1
        await wait_until(lambda: len(obs.of(MT.DDATA)) == 4, what="4 DDATA")
        await asyncio.sleep(0.2)  # nothing else may trail in
        data = [book.values(m) for m in obs.of(MT.DDATA)]
    assert data == [
        {"temp": 180.6, "door": True},
        {"temp": 181.2},
        {"recipe": "GR-250", "door": True},
        {"recipe": None},
    ]
    with pytest.raises(PayloadError, match="no metric 'nope'"):
        await node.update("oven", {"nope": 1})
    with pytest.raises(PayloadError, match="temp"):
        await node.update("oven", {"temp": "hot"})


@pytest.mark.spec(
    "tck-id-payloads-propertyset-quality-value-type",
    "tck-id-payloads-propertyset-quality-value-value",
)
async def test_quality_travels_as_an_int32_property_until_good_again(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path)
    dev = node.add_device("plc")
    dev.add_metric("level", DataType.Double, 1.0)
    dev.add_metric("pump", DataType.Boolean, True)
    async with Observer(broker) as obs, node:
        await node.wait_online(5)
        await node.set_quality("plc", Quality.BAD)  # a failed poll: values kept, marked bad
        bad = await obs.wait_type(MT.DDATA)
        for m in bad.payload.metrics:
            q = m.properties["Quality"]
            assert (q.type, q.value) == (DataType.Int32, 0)
        node.device("plc").add_metric("alarm", DataType.Boolean, False)  # forces a DBIRTH
        dbirth = await obs.wait_for(lambda m: m.type is MT.DBIRTH and len(m.payload.metrics) == 3)
        assert dbirth.metric("level").properties["Quality"].value == 0
        assert dbirth.metric("level").value == 1.0
        assert dbirth.metric("alarm").properties is None
        after = len(obs.messages)
        await node.update("plc", {"level": 1.0})  # same value, quality back to GOOD: still reported
        good = await obs.wait_type(MT.DDATA, after=after)
        assert [m.properties["Quality"].value for m in good.payload.metrics] == [192]
        await node.update("plc", {"level": 2.0}, quality={"level": Quality.STALE})
        stale = await obs.wait_type(MT.DDATA, after=after + 1)
        assert stale.payload.metrics[0].properties["Quality"].value == 500
    with pytest.raises(PayloadError, match="quality 7"):
        await node.update("plc", {"level": 3.0}, quality=7)


@pytest.mark.spec(
    "tck-id-operational-behavior-device-ddeath",
    "tck-id-topics-ddeath-topic",
    "tck-id-topics-ddeath-seq-num",
    "tck-id-payloads-ddeath-timestamp",
    "tck-id-payloads-ddeath-seq",
    "tck-id-payloads-ddeath-seq-inc",
    "tck-id-payloads-ddeath-seq-number",
)
async def test_device_lost_publishes_ddeath_with_seq_and_comes_back_with_dbirth(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path)
    node.add_device("scale").add_metric("weight", DataType.Double, 0.0)
    async with Observer(broker) as obs, node:
        await node.wait_online(5)
        await node.update("scale", {"weight": 1.5})
        await node.set_device_online("scale", False)
        death = await obs.wait_type(MT.DDEATH)
        assert str(death.topic) == f"spBv1.0/{group_id}/DDEATH/edge1/scale"
        assert death.payload.seq == 3 and death.payload.timestamp is not None
        assert await node.update("scale", {"weight": 2.5}) == 1  # kept as current value, not published
        assert not node.device("scale").online
        await node.set_device_online("scale", True)
        rebirth = await obs.wait_for(lambda m: m.type is MT.DBIRTH and m.payload.seq == 4)
        assert rebirth.metric("weight").value == 2.5
        await node.update("scale", {"weight": 3.5})
        data = await obs.wait_for(lambda m: m.type is MT.DDATA and m.payload.seq == 5)
    assert [m.type for m in obs.sparkplug_stream(group_id, "edge1")][:6] == [
        MT.NBIRTH, MT.DBIRTH, MT.DDATA, MT.DDEATH, MT.DBIRTH, MT.DDATA
    ]  # fmt: skip
    assert data.payload.metrics[0].value == 3.5


@pytest.mark.spec("tck-id-operational-behavior-data-publish-nbirth", "tck-id-operational-behavior-data-publish-dbirth")
async def test_metrics_declared_while_online_are_announced_by_a_new_birth(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path)
    node.add_node_metric("a", DataType.Int32, 1)
    dev = node.add_device("d1")
    dev.add_metric("x", DataType.Int32, 1)
    async with Observer(broker) as obs, node:
        await node.wait_online(5)
        first_bdseq = (await obs.wait_type(MT.NBIRTH)).metric("bdSeq").value
        dev.add_metric("y", DataType.Int32, 2)
        dev.add_metric("z", DataType.Int32, 3)
        await node.update("d1", {"y": 5})  # must come after the DBIRTH that describes y
        dbirth = await obs.wait_for(lambda m: m.type is MT.DBIRTH and len(m.payload.metrics) == 3)
        data = await obs.wait_type(MT.DDATA)
        assert obs.messages.index(dbirth) < obs.messages.index(data)
        assert [m.name for m in dbirth.payload.metrics] == ["x", "y", "z"]
        assert len(obs.of(MT.DBIRTH)) == 2, "two adds in a row make one DBIRTH"
        node.add_node_metric("b", DataType.Int32, 2)
        nbirth = await obs.wait_for(lambda m: m.type is MT.NBIRTH and len(m.payload.metrics) == 5)
        assert nbirth.payload.seq == 0 and nbirth.metric("bdSeq").value == first_bdseq
        again = await obs.wait_for(lambda m: m.type is MT.DBIRTH and m.payload.seq == 1)
        assert again.topic.device_id == "d1"
        node.add_device("d2").add_metric("w", DataType.Boolean, True)
        d2 = await obs.wait_for(lambda m: m.type is MT.DBIRTH and m.topic.device_id == "d2")
        assert d2.metric("w").value is True


@pytest.mark.spec(
    "tck-id-case-sensitivity-metric-names",
    "tck-id-topic-structure-namespace-valid-group-id",
    "tck-id-topic-structure-namespace-valid-edge-node-id",
    "tck-id-topic-structure-namespace-valid-device-id",
    "tck-id-intro-group-id-chars",
    "tck-id-intro-edge-node-id-chars",
    "tck-id-intro-device-id-chars",
    "tck-id-intro-group-id-string",
    "tck-id-intro-edge-node-id-string",
    "tck-id-intro-device-id-string",
)
def test_declarations_are_validated_up_front(tmp_path):
    node = EdgeNode(BrokerUrl(), "g", "e", state_dir=tmp_path)
    node.add_node_metric("Temp", DataType.Double)
    with pytest.raises(ConfigError, match="ignoring case"):
        node.add_node_metric("temp", DataType.Double)
    with pytest.raises(ConfigError, match="already declared"):
        node.add_node_metric("bdseq", DataType.Int64)
    with pytest.raises(ConfigError, match="deadband"):
        node.add_node_metric("flag", DataType.Boolean, deadband=1)
    with pytest.raises(ConfigError, match="out of range"):
        node.add_node_metric("small", DataType.Int8, 300)
    with pytest.raises(ConfigError, match="Template"):
        node.add_node_metric("tpl", DataType.Template)
    node.add_device("Filler")
    with pytest.raises(ConfigError, match="ignoring case"):
        node.add_device("filler")
    from hub.errors import TopicError

    for bad in ("a/b", "a+", "#", "", "nul\x00", "\ud800"):
        with pytest.raises(TopicError):
            node.add_device(bad)
        with pytest.raises(TopicError):
            EdgeNode(BrokerUrl(), bad, "e", state_dir=tmp_path)
        with pytest.raises(TopicError):
            EdgeNode(BrokerUrl(), "g", bad, state_dir=tmp_path)
    node.add_device("Füller 2 · линия")  # any other UTF-8 is fine


@pytest.mark.spec("tck-id-topic-structure-namespace-duplicate-device-id-across-edge-node")
async def test_two_edge_nodes_may_each_have_a_device_of_the_same_id(broker, group_id, tmp_path):
    nodes = [make_node(broker, group_id, tmp_path, name=f"edge{i}") for i in (1, 2)]
    for node in nodes:
        node.add_device("filler").add_metric("speed", DataType.Double, 1.0)
    async with Observer(broker) as obs, nodes[0], nodes[1]:
        await wait_until(lambda: len(obs.of(MT.DBIRTH)) == 2, what="both DBIRTHs")
    assert {m.topic.edge_node_id for m in obs.of(MT.DBIRTH, device="filler")} == {"edge1", "edge2"}


@pytest.mark.spec(
    "tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath",
    "tck-id-operational-behavior-edge-node-intentional-disconnect-packet",
    "tck-id-payloads-ndeath-will-message-publisher",
    "tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt311",
    "tck-id-topics-ndeath-topic",
    "tck-id-topics-ndeath-payload",
    "tck-id-topics-ndeath-seq",
    "tck-id-payloads-ndeath-seq",
    "tck-id-payloads-ndeath-bdseq",
)
async def test_stop_publishes_ndeath_with_the_session_bdseq_before_disconnect(tmp_path, group_id):
    with debug_broker(tmp_path) as broker:
        node = make_node(broker, group_id, tmp_path, client_id="leaving")
        async with Observer(broker) as obs:
            async with node:
                birth = await obs.wait_type(MT.NBIRTH)
            death = await obs.wait_type(MT.NDEATH)
        # The broker logs the DISCONNECT when it reads it, which may be just after stop() returned.
        await wait_until(lambda: any("Received DISCONNECT from leaving" in x for x in broker_log(broker)), what="DISCONNECT")
        lines = broker_log(broker)
    assert str(death.topic) == f"spBv1.0/{group_id}/NDEATH/edge1"
    assert death.payload.seq is None
    assert [m.name for m in death.payload.metrics] == ["bdSeq"]
    assert death.metric("bdSeq").value == birth.metric("bdSeq").value
    ndeath = next(i for i, line in enumerate(lines) if re.search(r"Received PUBLISH from leaving .*NDEATH", line))
    disconnect = next(i for i, line in enumerate(lines) if "Received DISCONNECT from leaving" in line)
    assert ndeath < disconnect
    assert not node.online and node.stats.connects == 1


async def test_cancelling_the_run_task_still_publishes_ndeath(broker, group_id, tmp_path):
    node = make_node(broker, group_id, tmp_path)
    async with Observer(broker) as obs:
        task = node.start()
        await node.wait_online(5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        death = await obs.wait_type(MT.NDEATH)
    assert death.metric("bdSeq").value == node.bdseq


@pytest.mark.spec(
    "tck-id-topics-nbirth-bdseq-increment",
    "tck-id-topics-nbirth-bdseq-matching",
    "tck-id-payloads-nbirth-bdseq-repeat",
)
async def test_bdseq_steps_on_every_connect_survives_restarts_and_wraps(group_id, tmp_path):
    with persistent_broker(tmp_path) as broker:
        await _bdseq_steps(broker, group_id, tmp_path)


async def _bdseq_steps(broker, group_id, tmp_path):
    first = make_node(broker, group_id, tmp_path)
    async with Observer(broker, persistent=True) as obs:
        async with first:
            b0 = await obs.wait_type(MT.NBIRTH)
            await asyncio.to_thread(broker.restart)
            b1 = await obs.wait_for(lambda m: m.type is MT.NBIRTH and m is not b0, timeout=10)
            assert first.stats.reconnects == 1
        second = make_node(broker, group_id, tmp_path)  # a new process on the same state_dir
        async with second:
            b2 = await obs.wait_for(lambda m: m.type is MT.NBIRTH and m not in (b0, b1))
    assert [b.metric("bdSeq").value for b in (b0, b1, b2)] == [0, 1, 2]
    bdseq_file = tmp_path / "state" / "sparkplug" / group_id / "edge1" / "bdseq"
    bdseq_file.write_text("255\n")
    third = make_node(broker, group_id, tmp_path)
    async with Observer(broker) as obs, third:
        assert (await obs.wait_type(MT.NBIRTH)).metric("bdSeq").value == 0


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from hub.mqtt import BrokerUrl
    from hub.sparkplug.edge import EdgeNode

    async def main():
        node = EdgeNode(BrokerUrl.parse(sys.argv[1]), sys.argv[2], "edge1", state_dir=Path(sys.argv[3]))
        node.add_node_metric("x", "Int32", 1)
        node.start()
        await node.wait_online(10)
        print("online", node.bdseq, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


@pytest.mark.spec(
    "tck-id-message-flow-edge-node-birth-publish-will-message-payload",
    "tck-id-payloads-ndeath-bdseq",
    "tck-id-topics-ndeath-payload",
)
async def test_will_ndeath_reaches_hosts_when_the_process_dies_abruptly(broker, group_id, tmp_path):
    async with Observer(broker) as obs:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, broker.url, group_id, str(tmp_path / "state")],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
            assert line.startswith("online"), line
            birth = await obs.wait_type(MT.NBIRTH)
            os.kill(child.pid, signal.SIGKILL)  # no NDEATH of its own, no DISCONNECT: only the Will
            death = await obs.wait_type(MT.NDEATH, timeout=10)
        finally:
            child.kill()
            child.wait()
    assert death.payload.seq is None
    assert death.metric("bdSeq").datatype is DataType.Int64
    assert death.metric("bdSeq").value == birth.metric("bdSeq").value == int(line.split()[1])
