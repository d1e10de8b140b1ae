"""`plantbus sparkplug sniff`: Sparkplug traffic decoded into JSON lines, for engineers."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from hub.errors import PlantbusError
from hub.mqtt import BrokerUrl, make_client
from hub.sparkplug.payload import decode_payload, now_ms, payload_to_json
from hub.sparkplug.topic import ALL_TOPICS, MessageType, SparkplugTopic


def describe(topic: str, data: bytes) -> dict[str, Any]:
    """One JSON-ready record for a message on a Sparkplug topic; never raises on bad input."""
    record: dict[str, Any] = {"received": now_ms(), "topic": topic}
    try:
        parsed = SparkplugTopic.parse(topic)
    except PlantbusError as exc:
        record["error"] = str(exc)
        return record
    record["type"] = parsed.message_type.value
    if parsed.message_type is MessageType.STATE:
        record["host_id"] = parsed.host_id
        try:
            record["state"] = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            record["error"] = "STATE payload is not JSON"
            record["raw"] = data[:200].hex()
        return record
    record["group"] = parsed.group_id
    record["edge_node"] = parsed.edge_node_id
    if parsed.device_id is not None:
        record["device"] = parsed.device_id
    try:
        record["payload"] = payload_to_json(decode_payload(data))
    except PlantbusError as exc:
        record["error"] = str(exc)
        record["raw"] = data[:200].hex()
    return record


async def sniff(broker: BrokerUrl, topic: str = ALL_TOPICS, count: int | None = None, out: TextIO = sys.stdout) -> int:
    """Print decoded messages until cancelled or `count` were printed; returns how many."""
    seen = 0
    async with make_client(broker, f"plantbus-sniff-{now_ms() % 100000}") as client:
        await client.subscribe(topic, qos=0)
        async for message in client.messages:
            record = describe(str(message.topic), bytes(message.payload))
            if message.retain:
                record["retained"] = True
            out.write(json.dumps(record, ensure_ascii=False, default=repr) + "\n")
            out.flush()
            seen += 1
            if count is not None and seen >= count:
                break
    return seen
