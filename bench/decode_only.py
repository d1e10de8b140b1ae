"""Decode-only throughput of the primary host: parse, sequence check, alias lookup, samples. One core, no network."""

from __future__ import annotations

import time

from hub.config import HostConfig, UnsConfig
from hub.mqtt import BrokerUrl
from hub.samples import Sample
from hub.sparkplug.host import PrimaryHost
from hub.sparkplug.payload import DataType, Metric, Payload, encode_payload, now_ms
from hub.sparkplug.topic import MessageType, SparkplugTopic
from hub.uns_paths import UnsMapper

DEVICES, METRICS = 10, 20


def _messages(group: str, node: str, rounds: int) -> list[tuple[str, bytes]]:
    ts = now_ms()
    out = [
        (
            str(SparkplugTopic.node(MessageType.NBIRTH, group, node)),
            encode_payload(
                Payload(
                    timestamp=ts,
                    seq=0,
                    metrics=[Metric("bdSeq", DataType.UInt64, 0), Metric("Node Control/Rebirth", DataType.Boolean, False)],
                )
            ),
        )
    ]
    seq = 1
    for d in range(DEVICES):
        birth = [Metric(f"m{m}", DataType.Double, 0.0, alias=d * METRICS + m + 1, timestamp=ts) for m in range(METRICS)]
        out.append((str(SparkplugTopic.device(MessageType.DBIRTH, group, node, f"dev-{d}")), encode_payload(Payload(ts, birth, seq))))
        seq += 1
    for r in range(rounds):
        for d in range(DEVICES):
            data = [Metric(None, DataType.Double, r + m * 0.5, alias=d * METRICS + m + 1, timestamp=ts) for m in range(METRICS)]
            topic = str(SparkplugTopic.device(MessageType.DDATA, group, node, f"dev-{d}"))
            out.append((topic, encode_payload(Payload(ts, data, seq % 256))))
            seq += 1
    return out


def measure(seconds: float = 3.0) -> float:
    """Metrics per second through PrimaryHost.handle_message with a listener that keeps the samples."""
    host = PrimaryHost(HostConfig(host_id="bench"), BrokerUrl(), mapper=UnsMapper(UnsConfig()))
    received: list[int] = [0]

    def listener(samples: list[Sample]) -> None:
        received[0] += len(samples)

    host.add_listener(listener)
    # 128 rounds x 10 devices = 1,280 messages, a multiple of 256: replaying the list continues the seq.
    messages = _messages("bench", "node", rounds=128)
    data = messages[1 + DEVICES :]
    for topic, payload in messages[: 1 + DEVICES]:
        host.handle_message(topic, payload)
    metrics = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for topic, payload in data:
            host.handle_message(topic, payload)
        metrics += len(data) * METRICS
    elapsed = time.perf_counter() - start
    if received[0] < metrics:
        raise RuntimeError(f"host produced {received[0]} samples for {metrics} metrics: decode-only run is not valid")
    return metrics / elapsed


if __name__ == "__main__":
    print(f"{measure():,.0f} metrics/s")
