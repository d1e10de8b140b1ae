"""Live interoperability with an Eclipse Tahu edge node (npm sparkplug-client 3.2.4) over a real Mosquitto.

A Tahu edge node (tests/interop/tahu_edge.js) connects to the test's broker and publishes
NBIRTH/DBIRTH/DDATA; a plain Python subscriber decodes the traffic with Plantbus's codec, and in the
last test Plantbus's own `Hub` hosts the node and mirrors it onto the UNS.

How Tahu's client 3.2.4 departs from Sparkplug 3.0 (seen here, and in its source):
7. bdSeq is a UInt64 metric (chapter 5 says Int64) and is always 0: the client never increments
   it, not even when mqtt.js reconnects (topics-nbirth-bdseq-increment).
8. The NDEATH Will is registered with QoS 0 (payloads-ndeath-will-message-qos says 1).
9. It does not subscribe to STATE, so it never waits for a primary host (message-flow-edge-node-
   birth-publish-phid-wait), and it sends datatype in DATA metrics (a SHOULD NOT).
None of them stops Plantbus from hosting it: Plantbus's host accepts a UInt64 bdSeq, and a Will
that arrives at QoS 0 is still delivered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from hub.mqtt import BrokerUrl, make_client
from hub.sparkplug.payload import (
    DataSet,
    DataType,
    Metric,
    Payload,
    PropertyValue,
    Template,
    decode_payload,
    encode_payload,
    now_ms,
)
from hub.sparkplug.topic import MessageType, SparkplugTopic
from interop.tahu import TahuEdgeNode, blob, long, require_tahu, untag

pytestmark = pytest.mark.interop

EDGE = "tahu-edge"
DEVICE = "checkweigher"


@pytest.fixture(autouse=True)
def _tahu_installed() -> None:
    require_tahu()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Recorder:
    """A plain MQTT subscriber that records what arrives and lets a test wait for a condition."""

    def __init__(self, broker_url: str, topic_filter: str, client_id: str) -> None:
        self.client = make_client(BrokerUrl.parse(broker_url), client_id)
        self.topic_filter = topic_filter
        self.messages: list[Received] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        await self.client.__aenter__()
        # QoS 1, so a message published at QoS 0 arrives at QoS 0 and the sender's QoS shows
        await self.client.subscribe(self.topic_filter, qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else bytes(message.payload or b"")
            self.messages.append(Received(message.topic.value, payload, message.qos, message.retain))
            self._changed.set()

    async def until(self, condition: Callable[[list[Received]], Any], what: str, timeout: float = 15) -> Any:
        """Wait until `condition(messages)` is truthy and return its value."""
        async def poll() -> Any:
            while True:
                result = condition(self.messages)
                if result:
                    return result
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            seen = [m.topic for m in self.messages]
            raise AssertionError(f"timed out waiting for {what}; received {seen}") from None


def sparkplug(messages: list[Received], mt: MessageType) -> list[tuple[Received, Payload]]:
    """The messages of one Sparkplug type, decoded."""
    out = []
    for m in messages:
        if SparkplugTopic.parse(m.topic).message_type is mt:
            out.append((m, decode_payload(m.payload)))
    return out


def count(mt: MessageType, n: int) -> Callable[[list[Received]], Any]:
    return lambda messages: len(sparkplug(messages, mt)) >= n


# ---------------------------------------------------------------------------- what the Tahu node publishes

DATASET = {
    "numOfColumns": 3,
    "columns": ["lane", "grams", "sku"],
    "types": ["Int8", "UInt32", "String"],
    "rows": [[-1, 4000000000, "SALAD-250"], [2, 250, "Борщ"]],
}

NODE_METRICS = [
    {"name": "Node Control/Rebirth", "type": "Boolean", "value": False},
    {"name": "Properties/Firmware", "type": "String", "value": "tahu-js 3.2.4"},
    {"name": "_types_/Motor", "type": "Template", "value": {
        "isDefinition": True, "version": "1",
        "parameters": [{"name": "MaxRPM", "type": "UInt32", "value": 3000}],
        "metrics": [{"name": "RPM", "type": "Int32", "value": 0}],
    }},
]

# name, alias, Tahu type, value on the node side, expected DataType, expected Python value
DEVICE_CASES: list[tuple[str, int, str, Any, DataType, Any]] = [
    ("Lane/Offset", 1, "Int8", -128, DataType.Int8, -128),
    ("Tare", 2, "Int16", -300, DataType.Int16, -300),
    ("Drift", 3, "Int32", -70000, DataType.Int32, -70000),
    ("Total", 4, "Int64", long(-(2**40), False), DataType.Int64, -(2**40)),
    ("Lane/Count", 5, "UInt8", 200, DataType.UInt8, 200),
    ("Rejects", 6, "UInt16", 60000, DataType.UInt16, 60000),
    ("Packs", 7, "UInt32", 4000000000, DataType.UInt32, 4000000000),
    ("Serial", 8, "UInt64", long(2**64 - 1, True), DataType.UInt64, 2**64 - 1),
    ("Weight", 9, "Float", 21.5, DataType.Float, 21.5),
    ("Setpoint", 10, "Double", 250.125, DataType.Double, 250.125),
    ("Running", 11, "Boolean", True, DataType.Boolean, True),
    ("Product", 12, "String", "Салат «Витаминный»", DataType.String, "Салат «Витаминный»"),
    ("Calibrated", 13, "DateTime", 1_656_107_875_000, DataType.DateTime, 1_656_107_875_000),
    ("Notes", 14, "Text", "line 1\nline 2", DataType.Text, "line 1\nline 2"),
    ("Batch", 15, "UUID", "6f1c2d8e-0000-4000-8000-000000000000", DataType.UUID,
     "6f1c2d8e-0000-4000-8000-000000000000"),
    ("Label", 16, "Bytes", blob(b"\x00\xffGS1"), DataType.Bytes, b"\x00\xffGS1"),
    ("Lanes", 17, "DataSet", DATASET, DataType.DataSet,
     DataSet(["lane", "grams", "sku"], [DataType.Int8, DataType.UInt32, DataType.String],
             [[-1, 4000000000, "SALAD-250"], [2, 250, "Борщ"]])),
    ("Motor1", 18, "Template", {"templateRef": "Motor", "isDefinition": False,
                                "metrics": [{"name": "RPM", "type": "Int32", "value": -25}]},
     DataType.Template, Template(template_ref="Motor", metrics=[Metric("RPM", DataType.Int32, -25)])),
]

DEVICE_METRICS = [
    {"name": name, "alias": alias, "type": tahu_type, "value": value}
    for name, alias, tahu_type, value, _, _ in DEVICE_CASES
]
# the Weight metric carries Sparkplug's Quality property and an engineering unit
next(m for m in DEVICE_METRICS if m["name"] == "Weight")["properties"] = {
    "Quality": {"type": "Int32", "value": 192},
    "engUnit": {"type": "String", "value": "g"},
}

# DDATA by alias only, as Sparkplug recommends (Tahu adds the datatype all the same)
UPDATES = [
    [{"alias": 1, "type": "Int8", "value": -1}],
    [{"alias": 7, "type": "UInt32", "value": 4294967295}, {"alias": 9, "type": "Float", "value": 1.1}],
    [{"alias": 8, "type": "UInt64", "value": long(2**53 + 1, True)}, {"alias": 11, "type": "Boolean", "value": False}],
]
UPDATED = {1: -1, 7: 4294967295, 9: 1.100000023841858, 8: 2**53 + 1, 11: False}


def tahu_node(broker, group_id: str, *, updates: list | None = None) -> TahuEdgeNode:
    return TahuEdgeNode(broker.url, group_id, EDGE, DEVICE, node_metrics=NODE_METRICS,
                        device_metrics=DEVICE_METRICS, updates=UPDATES if updates is None else updates)


def metric_by_name(payload: Payload, name: str) -> Metric:
    (metric,) = [m for m in payload.metrics if m.name == name]
    return metric


# ---------------------------------------------------------------------------- plain subscriber


async def test_tahu_births_and_device_data_decode_in_plantbus(broker, group_id):
    async with Recorder(broker.url, f"spBv1.0/{group_id}/#", "interop-recorder") as rec:
        async with tahu_node(broker, group_id) as edge:
            await edge.wait_event("ddata", count=len(UPDATES))
            await rec.until(count(MessageType.DDATA, len(UPDATES)), "Tahu's DDATA")
            # before the node goes (its Will would follow)
            messages = list(rec.messages)

    topics = [m.topic for m in messages]
    assert topics == [
        f"spBv1.0/{group_id}/NBIRTH/{EDGE}",
        f"spBv1.0/{group_id}/DBIRTH/{EDGE}/{DEVICE}",
        *[f"spBv1.0/{group_id}/DDATA/{EDGE}/{DEVICE}"] * len(UPDATES),
    ]
    # births and data at QoS 0, not retained (received at 0 although subscribed at 1)
    assert all(m.qos == 0 and not m.retain for m in messages)

    decoded = [decode_payload(m.payload) for m in messages]
    assert [p.seq for p in decoded] == list(range(2 + len(UPDATES)))
    assert all(p.timestamp is not None and abs(p.timestamp - now_ms()) < 60_000 for p in decoded)

    nbirth, dbirth, *ddata = decoded
    # Quirk 7: bdSeq is UInt64 (the spec says Int64) and 0
    assert metric_by_name(nbirth, "bdSeq") == Metric("bdSeq", DataType.UInt64, 0)
    rebirth = metric_by_name(nbirth, "Node Control/Rebirth")
    assert rebirth.datatype is DataType.Boolean and rebirth.value is False
    definition = metric_by_name(nbirth, "_types_/Motor").value
    assert definition.is_definition and definition.template_ref is None
    assert [(p.name, p.type, p.value) for p in definition.parameters] == [("MaxRPM", DataType.UInt32, 3000)]

    for name, alias, _, _, datatype, expected in DEVICE_CASES:
        metric = metric_by_name(dbirth, name)
        assert (metric.alias, metric.datatype, metric.value) == (alias, datatype, expected), name
        assert metric.timestamp is not None
    weight = metric_by_name(dbirth, "Weight")
    assert weight.properties == {"Quality": PropertyValue(DataType.Int32, 192),
                                 "engUnit": PropertyValue(DataType.String, "g")}

    values = {m.alias: m.value for p in ddata for m in p.metrics}
    assert values == UPDATED
    assert all(m.name is None for p in ddata for m in p.metrics)


async def test_tahu_rebirths_on_ncmd_and_applies_a_plantbus_dcmd(broker, group_id):
    async with Recorder(broker.url, f"spBv1.0/{group_id}/#", "interop-recorder") as rec:
        async with tahu_node(broker, group_id, updates=[]) as edge:
            await edge.wait_event("births")
            await rec.until(count(MessageType.DBIRTH, 1), "the first DBIRTH")

            async with make_client(BrokerUrl.parse(broker.url), "interop-commander") as cmd:
                ncmd = Payload(timestamp=now_ms(), metrics=[Metric("Node Control/Rebirth", DataType.Boolean, True)])
                await cmd.publish(str(SparkplugTopic.node(MessageType.NCMD, group_id, EDGE)), encode_payload(ncmd))
                await edge.wait_event("rebirth")
                await rec.until(count(MessageType.DBIRTH, 2), "the DBIRTH after the rebirth")

                # written by name and by alias, as a host may; Tahu echoes the written values as DDATA
                dcmd = Payload(timestamp=now_ms(), metrics=[
                    Metric("Setpoint", DataType.Double, 42.5, timestamp=now_ms()),
                    Metric(None, DataType.Int16, -7, alias=2),
                    Metric("Total", DataType.Int64, -(2**62)),
                ])
                await cmd.publish(str(SparkplugTopic.device(MessageType.DCMD, group_id, EDGE, DEVICE)),
                                  encode_payload(dcmd))
                received = await edge.wait_event("dcmd")
                await rec.until(count(MessageType.DDATA, 1), "the DDATA echoing the DCMD")

            assert await edge.stop() == 0
            await rec.until(count(MessageType.NDEATH, 1), "Tahu's NDEATH")

    # what Tahu's decoder made of Plantbus's DCMD
    assert [(m.get("name"), m.get("alias"), m["type"], m["value"])
            for m in untag(received["payload"])["metrics"]] == [
        ("Setpoint", None, "Double", 42.5),
        (None, 2, "Int16", -7),
        ("Total", None, "Int64", -(2**62)),
    ]

    births = sparkplug(rec.messages, MessageType.NBIRTH)
    assert len(births) == 2
    bd_seqs = {metric_by_name(p, "bdSeq").value for _, p in births}
    assert bd_seqs == {0}  # the same session, so the same bdSeq (payloads-nbirth-bdseq-repeat)
    assert [p.seq for _, p in births] == [0, 0]
    assert [p.seq for _, p in sparkplug(rec.messages, MessageType.DBIRTH)] == [1, 1]

    ((_, echo),) = sparkplug(rec.messages, MessageType.DDATA)
    assert echo.seq == 2
    assert {m.name: m.value for m in echo.metrics} == {"Setpoint": 42.5, "Tare": -7, "Total": -(2**62)}

    ((death_msg, death),) = sparkplug(rec.messages, MessageType.NDEATH)
    assert death.seq is None
    assert [(m.name, m.value) for m in death.metrics] == [("bdSeq", 0)]
    assert not death_msg.retain


async def test_tahu_will_ndeath_carries_the_births_bdseq(broker, group_id):
    async with Recorder(broker.url, f"spBv1.0/{group_id}/#", "interop-recorder") as rec:
        async with tahu_node(broker, group_id, updates=[]) as edge:
            await rec.until(count(MessageType.DBIRTH, 1), "the DBIRTH")
            await edge.kill()  # no DISCONNECT: the broker publishes the Will
            await rec.until(count(MessageType.NDEATH, 1), "the Will NDEATH", timeout=20)

    ((_, nbirth),) = sparkplug(rec.messages, MessageType.NBIRTH)
    ((will_msg, will),) = sparkplug(rec.messages, MessageType.NDEATH)
    assert will.seq is None and will.timestamp is not None
    assert [(m.name, m.datatype, m.value) for m in will.metrics] == [("bdSeq", DataType.UInt64, 0)]
    assert metric_by_name(nbirth, "bdSeq").value == will.metrics[0].value
    assert not will_msg.retain
    # Quirk 8: the Will was registered at QoS 0 (spec: 1), so it arrives at 0 on a QoS 1 subscription
    assert will_msg.qos == 0


# ---------------------------------------------------------------------------- hosted by Plantbus


def _hub_available() -> str | None:
    try:
        import hub.app  # noqa: F401
        import hub.mirror  # noqa: F401
        import hub.sparkplug.host  # noqa: F401
    except ImportError as exc:
        return f"the primary host / mirror / Hub are not importable yet: {exc}"
    return None


def uns_values(messages: list[Received]) -> dict[str, dict[str, Any]]:
    """The last JSON document on every UNS topic."""
    return {m.topic: json.loads(m.payload) for m in messages if m.payload}


def uns_path(group_id: str, metric: str, device: str | None = DEVICE) -> str:
    return "/".join(["uns", group_id, EDGE, *([device] if device else []), metric])


@pytest.mark.skipif(_hub_available() is not None, reason=str(_hub_available()))
async def test_plantbus_hub_hosts_a_tahu_edge_node_and_mirrors_it_onto_the_uns(broker, group_id, tmp_path):
    from hub.app import Hub
    from hub.config import parse_config

    config = parse_config({
        "host": {"host_id": f"pb-{group_id}", "groups": [group_id], "diagnostics_interval_s": 60},
        "uns": {"prefix": "uns"},
        "state_dir": str(tmp_path / "state"),
    })
    hub = Hub(config, broker_override=broker.url)
    hub_task = asyncio.create_task(hub.run(), name="interop-hub")
    try:
        await asyncio.wait_for(hub.host.wait_online(), 15)
        async with Recorder(broker.url, f"uns/{group_id}/#", "interop-uns") as uns:
            async with tahu_node(broker, group_id) as edge:
                expected = {uns_path(group_id, name): (datatype, value)
                            for name, _, _, _, datatype, value in DEVICE_CASES}
                by_alias = {alias: name for name, alias, *_ in DEVICE_CASES}
                for alias, value in UPDATED.items():
                    path = uns_path(group_id, by_alias[alias])
                    expected[path] = (expected[path][0], value)

                def settled(messages: list[Received]) -> bool:
                    docs = uns_values(messages)
                    return all(p in docs and docs[p]["value"] is not None
                               and _json_equal(docs[p]["value"], datatype, value)
                               for p, (datatype, value) in expected.items())

                await uns.until(settled, "every Tahu device metric with its last value on the UNS")
                docs = uns_values(uns.messages)
                for path, (datatype, _) in expected.items():
                    doc = docs[path]
                    assert doc["quality"] == "GOOD" and doc["datatype"] == datatype.name, path
                    assert isinstance(doc["timestamp"], int) and abs(doc["timestamp"] - now_ms()) < 60_000, path
                assert docs[uns_path(group_id, "Node Control/Rebirth", device=None)]["value"] is False
                assert docs[uns_path(group_id, "bdSeq", device=None)] | {"timestamp": 0} == {
                    "value": 0, "quality": "GOOD", "datatype": "UInt64", "timestamp": 0}
                assert docs[f"uns/{group_id}/{EDGE}/{DEVICE}/_status"]["online"] is True

                # a write through the hub: DCMD to Tahu, which echoes the value back as DDATA
                await hub.write(uns_path(group_id, "Setpoint"), 42.5)
                await hub.write(uns_path(group_id, "Lane/Offset"), -100)
                await edge.wait_event("dcmd", count=2)
                await uns.until(
                    lambda ms: uns_values(ms).get(uns_path(group_id, "Setpoint"), {}).get("value") == 42.5
                    and uns_values(ms).get(uns_path(group_id, "Lane/Offset"), {}).get("value") == -100,
                    "the written values echoed by Tahu on the UNS",
                )

                # a clean stop: NDEATH, and the mirror marks the node's metrics STALE
                assert await edge.stop() == 0
                node_status = f"uns/{group_id}/{EDGE}/_status"
                await uns.until(
                    lambda ms: uns_values(ms).get(uns_path(group_id, "Setpoint"), {}).get("quality") == "STALE"
                    and uns_values(ms).get(node_status, {}).get("online") is False,
                    "the node offline and its metrics STALE after Tahu's NDEATH",
                )
                docs = uns_values(uns.messages)
                assert docs[node_status]["reason"] == "death" and docs[node_status]["bdSeq"] == 0
                assert docs[uns_path(group_id, "Setpoint")]["value"] == 42.5  # the last value is kept
                assert all(docs[p]["quality"] == "STALE" for p in expected)

        # the mirror's topics are retained: a late subscriber sees the current state at once
        async with Recorder(broker.url, f"uns/{group_id}/#", "interop-late") as late:
            product = uns_path(group_id, "Product")
            await late.until(lambda ms: product in uns_values(ms), "retained UNS state")
            (first,) = [m for m in late.messages if m.topic == product]
            assert first.retain
            assert json.loads(first.payload) | {"timestamp": 0} == {
                "value": "Салат «Витаминный»", "quality": "STALE", "datatype": "String", "timestamp": 0}
    finally:
        hub_task.cancel()
        await asyncio.gather(hub_task, return_exceptions=True)


def _json_equal(got: Any, datatype: DataType, expected: Any) -> bool:
    """Compare a mirrored JSON value with the Python value the metric carries."""
    if datatype is DataType.Bytes:
        return got == base64.b64encode(expected).decode("ascii")
    if datatype is DataType.DataSet:
        return got == {"columns": expected.columns, "types": [t.name for t in expected.types], "rows": expected.rows}
    if datatype is DataType.Template:
        return got.get("template_ref") == expected.template_ref and got.get("metrics") == {
            m.name: m.value for m in expected.metrics}
    if isinstance(expected, float):
        return isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=0, abs_tol=0)
    return got == expected and type(got) is type(expected)
