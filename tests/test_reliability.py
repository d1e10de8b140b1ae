"""The whole Sparkplug chain under failure: real EdgeNode -> real Mosquitto -> real Hub (host + UNS mirror).

Each test breaks something the way a plant does (the broker restarts, the hub is killed, garbage arrives)
and checks what an operator would check: nothing lost, quality honest, the hub still running.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hub.app import Hub
from hub.config import parse_config
from hub.mqtt import BrokerUrl, make_client
from hub.samples import Quality, Sample
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.payload import DataType, Metric, Payload, encode_payload, now_ms
from hub.sparkplug.topic import MessageType, SparkplugTopic
from _edge_support import wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def hub_config(group: str, host_id: str, state_dir: Path) -> dict:
    return {
        "host": {"host_id": host_id, "groups": [group], "reorder_timeout_ms": 500, "diagnostics_interval_s": 60},
        "state_dir": str(state_dir),
    }


def counter_node(broker_url: str, group: str, host_id: str, state_dir: Path) -> EdgeNode:
    node = EdgeNode(
        BrokerUrl.parse(broker_url), group, "line1", state_dir=state_dir, primary_host_id=host_id,
        backoff_min_s=0.1, backoff_max_s=0.5,
    )
    dev = node.add_device("filler")
    dev.add_metric("count", DataType.Int64, 0)
    dev.add_metric("speed", DataType.Double, 0.0)
    return node


async def test_broker_restart_mid_stream_loses_no_value_and_quality_goes_stale_then_good(broker, group_id, tmp_path):
    hub = Hub(parse_config(hub_config(group_id, "rel-host", tmp_path / "hub")), broker_override=broker.url)
    samples: list[Sample] = []
    hub.host.add_listener(samples.extend)
    path = f"uns/{group_id}/line1/filler/count"
    node = counter_node(broker.url, group_id, "rel-host", tmp_path / "edge")
    hub_task = asyncio.create_task(hub.run())
    node_task = node.start()
    try:
        await asyncio.wait_for(node.wait_online(), 15)
        sent = 0

        async def produce(n: int) -> None:
            nonlocal sent
            for _ in range(n):
                sent += 1
                await node.update("filler", {"count": sent, "speed": sent * 0.1})
                await asyncio.sleep(0.01)

        await produce(100)
        # The broker goes away mid-stream (values keep coming, into the edge's outbox), then returns.
        restart = asyncio.create_task(asyncio.to_thread(broker.restart, 1.0))
        await produce(150)
        await restart
        await produce(100)
        await wait_until(lambda: node.online and node.outbox_size == 0, timeout=20, what="the outbox to drain")

        def counts() -> set[int]:
            return {s.value for s in samples if s.path == path and s.quality is Quality.GOOD}

        await wait_until(lambda: set(range(1, sent + 1)) <= counts(), timeout=20, what=f"all {sent} counts at the host")
        qualities = [s.quality for s in samples if s.path == path and not s.is_historical]
        first_stale = qualities.index(Quality.STALE)
        assert Quality.GOOD in qualities[first_stale:], "the value never came back GOOD after going STALE"
        assert any(s.is_historical for s in samples if s.path == path), "nothing was replayed as historical"
        live = hub.host.current(path)
        assert live is not None and live.quality is Quality.GOOD and live.value == sent
        assert node.stats.stored > 0 and node.stats.replayed > 0
    finally:
        await node.stop()
        hub_task.cancel()
        await asyncio.gather(node_task, hub_task, return_exceptions=True)


async def _retained(broker_url: str, topic: str, timeout: float = 5.0) -> dict:
    async with make_client(BrokerUrl.parse(broker_url), f"probe-{now_ms()}") as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                return json.loads(message.payload)
    raise AssertionError(f"no retained message on {topic}")


def _start_hub_process(config_file: Path, broker_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "run", "-c", str(config_file), "--broker", broker_url],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.spec(
    "tck-id-operational-behavior-edge-node-termination-host-offline",
    "tck-id-operational-behavior-edge-node-termination-host-offline-reconnect",
)
async def test_killed_hub_is_restarted_reasserts_state_and_rebuilds_the_namespace_through_rebirths(
    broker, group_id, tmp_path
):
    import yaml

    config_file = tmp_path / "hub.yaml"
    config_file.write_text(yaml.safe_dump(hub_config(group_id, "rel-kill", tmp_path / "hub")))
    node = counter_node(broker.url, group_id, "rel-kill", tmp_path / "edge")
    state_topic = str(SparkplugTopic.state("rel-kill"))
    path = f"uns/{group_id}/line1/filler/count"
    hub = _start_hub_process(config_file, broker.url)
    node_task = node.start()
    try:
        await asyncio.wait_for(node.wait_online(), 20)
        await node.update("filler", {"count": 7})
        await wait_until_async(lambda: _retained(broker.url, path), lambda doc: doc["value"] == 7, "the first value")
        first_bdseq = node.bdseq

        hub.send_signal(signal.SIGKILL)  # no goodbye: only the Will says the host is gone
        hub.wait(10)
        state = await _retained(broker.url, state_topic)
        assert state["online"] is False
        # The edge node saw its primary host die: NDEATH, then a new session waiting for the host.
        await wait_until(lambda: not node.online, timeout=10, what="the edge node to go offline")

        hub = _start_hub_process(config_file, broker.url)
        await asyncio.wait_for(node.wait_online(), 20)
        assert node.bdseq != first_bdseq
        state = await _retained(broker.url, state_topic)
        assert state["online"] is True
        await node.update("filler", {"count": 8})
        doc = await wait_until_async(lambda: _retained(broker.url, path), lambda d: d["value"] == 8, "the value after restart")
        assert doc["quality"] == "GOOD"
        status = await _retained(broker.url, f"uns/{group_id}/line1/filler/_status")
        assert status["online"] is True
    finally:
        await node.stop()
        await asyncio.gather(node_task, return_exceptions=True)
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()


async def wait_until_async(fetch, check, what: str, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    """Fetch repeatedly until `check(result)` holds."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                result = await fetch()
            except (AssertionError, TimeoutError):
                result = None
            if result is not None and check(result):
                return result
            await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _garbage(rng: random.Random, seeds: list[bytes]) -> bytes:
    """Random bytes, or a valid Sparkplug payload with bits flipped, bytes cut, or bytes spliced in."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 200))
    data = bytearray(rng.choice(seeds))
    if kind == 1:
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 2:
        del data[rng.randrange(len(data)) :]
    else:
        i = rng.randrange(len(data))
        data[i:i] = rng.randbytes(rng.randrange(1, 20))
    return bytes(data)


async def test_ten_thousand_random_and_mutated_payloads_are_each_counted_and_the_hub_keeps_hosting(
    broker, group_id, tmp_path
):
    hub = Hub(parse_config(hub_config(group_id, "rel-fuzz", tmp_path / "hub")), broker_override=broker.url)
    node = counter_node(broker.url, group_id, "rel-fuzz", tmp_path / "edge")
    hub_task = asyncio.create_task(hub.run())
    node_task = node.start()
    rng = random.Random(20261128)
    ts = now_ms()
    seeds = [
        encode_payload(Payload(ts, [Metric("bdSeq", DataType.Int64, 1), Metric("a", DataType.Double, 1.5, alias=1)], 0)),
        encode_payload(Payload(ts, [Metric(None, DataType.Double, 2.5, alias=1, timestamp=ts)], 1)),
        encode_payload(
            Payload(ts, [Metric("s", DataType.StringArray, ["x", "y"]), Metric("b", DataType.BooleanArray, [True])], 2)
        ),
    ]
    topics = [
        str(SparkplugTopic.node(mt, group_id, f"fuzz{i}"))
        for i in range(5)
        for mt in (MessageType.NBIRTH, MessageType.NDATA, MessageType.NDEATH)
    ] + [str(SparkplugTopic.device(MessageType.DDATA, group_id, f"fuzz{i}", "d")) for i in range(5)]
    # The real edge node's own topics get garbage too: the host must keep hosting it afterwards.
    topics.append(str(SparkplugTopic.device(MessageType.DDATA, group_id, "line1", "filler")))
    total = 10_000
    try:
        await asyncio.wait_for(node.wait_online(), 15)
        await node.update("filler", {"count": 1})
        await wait_until(lambda: hub.host.current(f"uns/{group_id}/line1/filler/count") is not None, 10, "the node")
        before = hub.host.diagnostics()["messages_total"]
        async with make_client(BrokerUrl.parse(broker.url), "fuzzer") as client:
            for _ in range(total):
                # QoS 1 both ways, so every one of the 10,000 reaches the host and can be counted.
                await client.publish(rng.choice(topics), _garbage(rng, seeds), qos=1)

        def delivered() -> int:
            return hub.host.diagnostics()["messages_total"] - before

        await wait_until(lambda: delivered() >= total, timeout=60, what="10,000 messages at the host")
        diag = hub.host.diagnostics()
        assert diag["malformed_total"] > 1000, diag["malformed"]
        assert diag["malformed"].get("internal_error", 0) == 0, "a payload reached a code path that raised"
        assert not hub_task.done(), "the hub stopped"
        # After the storm the real node is hosted again (a rebirth if the garbage broke its seq).
        await node.update("filler", {"count": 99})
        await wait_until(
            lambda: (s := hub.host.current(f"uns/{group_id}/line1/filler/count")) is not None
            and s.value == 99
            and s.quality is Quality.GOOD,
            timeout=20,
            what="the real node's value after the garbage",
        )
    finally:
        await node.stop()
        hub_task.cancel()
        await asyncio.gather(node_task, hub_task, return_exceptions=True)
