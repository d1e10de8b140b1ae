"""`plantbus sparkplug sniff` turns live Sparkplug traffic into JSON lines, bad payloads included."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys

from hub.mqtt import BrokerUrl, make_client
from hub.sniff import sniff
from hub.sparkplug.payload import DataType, Metric, Payload, encode_payload, now_ms
from hub.sparkplug.topic import MessageType, SparkplugTopic


async def _publish_when_subscribed(url: BrokerUrl, messages: list[tuple[str, bytes]]) -> None:
    await asyncio.sleep(0.3)  # the sniffer subscribes first; a retained message would hide ordering bugs
    async with make_client(url, "sniff-test-pub") as client:
        for topic, data in messages:
            await client.publish(topic, data, qos=1)


async def test_sniff_prints_decoded_births_state_and_flags_malformed_payloads(broker, group_id):
    url = BrokerUrl.parse(broker.url)
    birth = Payload(
        timestamp=now_ms(),
        seq=0,
        metrics=[
            Metric("bdSeq", DataType.UInt64, 3),
            Metric("Temperature", DataType.Double, 21.5, alias=7),
            Metric("Counts", DataType.Int32Array, [-1, 2]),
        ],
    )
    messages = [
        (str(SparkplugTopic.node(MessageType.NBIRTH, group_id, "e1")), encode_payload(birth)),
        (str(SparkplugTopic.state("h1")), json.dumps({"online": True, "timestamp": 5}).encode()),
        (str(SparkplugTopic.device(MessageType.DDATA, group_id, "e1", "d1")), b"\xff\xff\xff not protobuf"),
    ]
    out = io.StringIO()
    sniffer = asyncio.create_task(sniff(url, count=3, out=out))
    await _publish_when_subscribed(url, messages)
    assert await asyncio.wait_for(sniffer, 10) == 3
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    nbirth, state, bad = records
    assert nbirth["type"] == "NBIRTH" and nbirth["group"] == group_id and nbirth["edge_node"] == "e1"
    metrics = {m["name"]: m for m in nbirth["payload"]["metrics"]}
    assert metrics["Temperature"] == {"name": "Temperature", "datatype": "Double", "alias": 7, "value": 21.5}
    assert metrics["Counts"]["value"] == [-1, 2]
    assert state["state"] == {"online": True, "timestamp": 5} and state["host_id"] == "h1"
    assert bad["device"] == "d1" and "not a Sparkplug B payload" in bad["error"]


def test_sniff_command_exits_after_count_messages(broker, group_id):
    payload = encode_payload(Payload(timestamp=now_ms(), seq=1, metrics=[Metric(None, DataType.Int8, -5, alias=2)]))
    topic = str(SparkplugTopic.node(MessageType.NDATA, group_id, "e9"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "sparkplug", "sniff", "--broker", broker.url, "--count", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Publish until the sniffer (which needs a moment to connect) has seen one message.
        deadline = 20
        while proc.poll() is None and deadline > 0:
            subprocess.run(
                ["mosquitto_pub", "-p", str(broker.port), "-t", topic, "-s"], input=payload, capture_output=True, timeout=5
            )
            try:
                proc.wait(0.5)
            except subprocess.TimeoutExpired:
                deadline -= 1
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    record = json.loads(out.splitlines()[0])
    assert record["payload"]["metrics"][0]["value"] == -5
    assert proc.returncode == 0
