"""Primary host robustness: mutated and random payloads on every message type never escape as exceptions."""

from __future__ import annotations

import asyncio
import random

from hub.config import UnsConfig
from hub.mirror import UnsMirror
from hub.sparkplug.payload import DataSet, DataType, Metric, Payload, PropertyValue, Template, encode_payload, now_ms
from hub.sparkplug.topic import MessageType
from sparkplug_fakes import make_host


def seeds() -> list[tuple[str, str | None, bytes]]:
    ts = now_ms()
    birth = Payload(timestamp=ts, seq=0, metrics=[
        Metric("bdSeq", DataType.Int64, 1),
        Metric("Node Control/Rebirth", DataType.Boolean, False),
        Metric("A", DataType.Double, 1.0, alias=1),
        Metric("B", DataType.Int32, -3, alias=2),
        Metric("S", DataType.String, "x", alias=3),
        Metric("Arr", DataType.BooleanArray, [True, False], alias=4),
        Metric("DS", DataType.DataSet, DataSet(["a"], [DataType.Int8], [[1]]), alias=5),
        Metric("T", DataType.Template, Template(metrics=[Metric("x", DataType.Int32, 1)], template_ref="t"), alias=6),
        Metric("U", DataType.UInt8, 3, alias=7, properties={"Quality": PropertyValue(DataType.Int32, 500)}),
    ])
    dbirth = Payload(timestamp=ts, seq=1, metrics=[Metric("X", DataType.Float, 1.0, alias=10),
                                                   Metric("Y", DataType.StringArray, ["a", "b"], alias=11)])
    by_alias = Payload(timestamp=ts, seq=2, metrics=[Metric(None, DataType.Double, 2.0, alias=1),
                                                     Metric(None, DataType.BooleanArray, [True], alias=4)])
    by_name = Payload(timestamp=ts, seq=2, metrics=[Metric("S", DataType.String, "zz"),
                                                    Metric("DS", DataType.DataSet, DataSet(["a"], [DataType.Int8], [[2]]))])
    return [
        ("NBIRTH", None, encode_payload(birth)),
        ("DBIRTH", "d", encode_payload(dbirth)),
        ("NDATA", None, encode_payload(by_alias)),
        ("NDATA", None, encode_payload(by_name)),
        ("DDATA", "d", encode_payload(Payload(timestamp=ts, seq=3, metrics=[Metric(None, DataType.Float, 3.0, alias=10)]))),
        ("NDEATH", None, encode_payload(Payload(metrics=[Metric("bdSeq", DataType.Int64, 1)]))),
        ("DDEATH", "d", encode_payload(Payload(timestamp=ts, seq=4))),
    ]


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    k = rnd.random()
    if k < 0.35:
        for _ in range(rnd.randint(1, 8)):
            if b:
                b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif k < 0.5:
        b = bytearray(rnd.randbytes(rnd.randint(0, 200)))
    elif k < 0.6:
        del b[rnd.randrange(len(b) + 1):]
    elif k < 0.7:
        pos = rnd.randrange(len(b) + 1)
        b[pos:pos] = rnd.randbytes(rnd.randint(1, 10))
    return bytes(b)


async def test_thousands_of_mutated_payloads_are_counted_never_raised():
    # No broker: the receive path is fed directly; rebirth requests simply count as unsent.
    uns = UnsConfig()
    host = make_host("mqtt://127.0.0.1:1", uns=uns, reorder_timeout_ms=20)
    mirror = UnsMirror(host, uns)  # its JSON encoding runs on every sample too
    rnd = random.Random(20240601)
    base = seeds()
    kinds = [t.value for t in MessageType] + ["XX"]
    odd_topics = ["spBv1.0/g", "spBv1.0/STATE/testhost", "spBv1.0/g/NDATA/n1/d", "spBv1.0/g/STATE/n1",
                  "spBv1.0//NDATA/n1", "spBv1.0/STATE/other"]
    for i in range(3000):
        mt, device, data = rnd.choice(base)
        if rnd.random() < 0.05:
            mt = rnd.choice(kinds)
        if rnd.random() < 0.03:
            topic = rnd.choice(odd_topics)
        else:
            topic = "/".join(["spBv1.0", "g", mt, rnd.choice(["n1", "n2"])] + ([device] if device else []))
        host.handle_message(topic, mutate(rnd, data))
        if i % 500 == 0:
            await asyncio.sleep(0.03)  # let reorder timers fire
    diag = host.diagnostics()
    assert "internal_error" not in diag["malformed"], diag["malformed"]
    assert diag["malformed"]["not_protobuf"] > 0 and diag["malformed"]["bad_topic"] > 0
    assert diag["listener_errors"] == 0
    assert mirror.queued > 0 and mirror.encode_errors == 0
    assert diag["messages_total"] == 3000
