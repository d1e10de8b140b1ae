"""Test doubles that speak real MQTT: a hand-driven Sparkplug edge node, a topic watcher, a sample recorder.

They let the host tests craft exactly the traffic they need (seq gaps, unknown aliases, malformed
payloads) against the real Mosquitto of the `broker` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from hub.config import HostConfig, UnsConfig
from hub.mqtt import BrokerUrl, make_client
from hub.samples import NodeStatus, Quality, Sample
from hub.sparkplug.host import PrimaryHost
from hub.sparkplug.payload import DataType, Metric, Payload, decode_payload, encode_payload, now_ms
from hub.sparkplug.topic import MessageType, SparkplugTopic
from hub.uns_paths import UnsMapper


async def wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Watcher:
    """An MQTT client that records everything on the topics it subscribes to."""

    def __init__(self, broker: BrokerUrl, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id
        self.messages: list[Received] = []
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, *topics: str, qos: int = 1) -> Watcher:
        self._client = make_client(self.broker, self.client_id)
        await self._client.__aenter__()
        for topic in topics:
            await self._client.subscribe(topic, qos=qos)
        self._task = asyncio.create_task(self._read(), name=f"test-watcher-{self.client_id}")
        return self

    async def _read(self) -> None:
        assert self._client is not None
        async for m in self._client.messages:
            self.messages.append(Received(m.topic.value, bytes(m.payload), m.qos, m.retain, time.monotonic()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    async def wait_for(self, topic: str, predicate: Callable[[Received], bool] = lambda m: True,
                       timeout: float = 5.0) -> Received:
        def found() -> Received | None:
            for m in self.messages:
                if m.topic == topic and predicate(m):
                    return m
            return None

        return await wait_until(found, timeout, f"a message on {topic}")


class Recorder:
    """A host listener that keeps every sample and status change."""

    def __init__(self, host: PrimaryHost) -> None:
        self.samples: list[Sample] = []
        self.statuses: list[NodeStatus] = []
        host.add_listener(self.samples.extend)
        host.add_status_listener(self.statuses.append)

    def latest(self, path: str) -> Sample | None:
        for s in reversed(self.samples):
            if s.path == path and not s.is_historical:
                return s
        return None

    async def wait_quality(self, path: str, quality: Quality, timeout: float = 5.0) -> Sample:
        return await wait_until(
            lambda: (s := self.latest(path)) is not None and s.quality is quality and s,
            timeout,
            f"{path} to be {quality.value}",
        )

    async def wait_value(self, path: str, value: Any, timeout: float = 5.0) -> Sample:
        return await wait_until(
            lambda: (s := self.latest(path)) is not None and s.value == value and s.quality is Quality.GOOD and s,
            timeout,
            f"{path} to be {value!r} GOOD",
        )


class FakeEdge:
    """A Sparkplug edge node driven by hand: every message is published exactly as the test says."""

    def __init__(self, broker: BrokerUrl, group: str, edge_node: str, *, bd_seq: int = 0,
                 auto_rebirth: bool = False) -> None:
        self.broker = broker
        self.group = group
        self.edge_node = edge_node
        self.bd_seq = bd_seq
        self.auto_rebirth = auto_rebirth
        self.seq = 0
        self.node_metrics: list[Metric] = []
        self.devices: dict[str, list[Metric]] = {}
        self.commands: list[tuple[SparkplugTopic, Payload, int, bool]] = []
        self.raw_commands: list[bytes] = []
        self.barriers: list[str] = []
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    # topics
    def topic(self, mt: MessageType, device: str | None = None) -> str:
        if device is None:
            return str(SparkplugTopic.node(mt, self.group, self.edge_node))
        return str(SparkplugTopic.device(mt, self.group, self.edge_node, device))

    @property
    def barrier_topic(self) -> str:
        return f"test-barrier/{self.group}/{self.edge_node}"

    def _death_payload(self) -> bytes:
        return encode_payload(Payload(timestamp=now_ms(), metrics=[Metric("bdSeq", DataType.Int64, self.bd_seq)]))

    async def connect(self) -> FakeEdge:
        will = aiomqtt.Will(self.topic(MessageType.NDEATH), self._death_payload(), qos=1, retain=False)
        self._client = make_client(self.broker, f"edge-{self.group}-{self.edge_node}-{self.bd_seq}", will=will)
        await self._client.__aenter__()
        await self._client.subscribe(self.topic(MessageType.NCMD), qos=1)
        # a subscription filter, which SparkplugTopic (rightly) refuses to build with a wildcard
        await self._client.subscribe(f"spBv1.0/{self.group}/DCMD/{self.edge_node}/+", qos=1)
        await self._client.subscribe(self.barrier_topic, qos=0)
        self._task = asyncio.create_task(self._read(), name=f"test-edge-{self.edge_node}")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
            self._task = None
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
            self._client = None

    async def reconnect(self) -> None:
        """A new MQTT session (after a broker restart): bdSeq goes up by one."""
        await self.close()
        self.bd_seq += 1
        await self.connect()

    async def _read(self) -> None:
        assert self._client is not None
        async for m in self._client.messages:
            topic = m.topic.value
            if topic == self.barrier_topic:
                self.barriers.append(bytes(m.payload).decode())
                continue
            parsed = SparkplugTopic.parse(topic)
            self.raw_commands.append(bytes(m.payload))
            payload = decode_payload(bytes(m.payload))
            self.commands.append((parsed, payload, m.qos, m.retain))
            if self.auto_rebirth and parsed.message_type is MessageType.NCMD and any(
                mm.name == "Node Control/Rebirth" and mm.value is True for mm in payload.metrics
            ):
                await self.birth()

    def rebirth_requests(self) -> list[Payload]:
        return [
            p for t, p, _, _ in self.commands
            if t.message_type is MessageType.NCMD and any(m.name == "Node Control/Rebirth" for m in p.metrics)
        ]

    async def barrier(self, host: PrimaryHost, timeout: float = 5.0) -> None:
        """Everything the host published before this call has reached this edge node."""
        token = f"{time.monotonic_ns()}"
        assert host.publish_nowait(self.barrier_topic, token.encode(), qos=0)
        await wait_until(lambda: token in self.barriers, timeout, "the barrier message")

    # publishing
    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) & 255
        return seq

    async def publish(self, mt: MessageType, metrics: list[Metric], *, device: str | None = None,
                      seq: int | None = None, timestamp: int | None = None) -> None:
        if seq is None:
            seq = self._next_seq()
        else:
            self.seq = (seq + 1) & 255
        payload = Payload(timestamp=timestamp or now_ms(), metrics=metrics, seq=seq)
        await self.raw(self.topic(mt, device), encode_payload(payload))

    async def raw(self, topic: str, data: bytes, qos: int = 0, retain: bool = False) -> None:
        assert self._client is not None
        await self._client.publish(topic, data, qos=qos, retain=retain)

    async def nbirth(self, metrics: list[Metric] | None = None, *, seq: int = 0) -> None:
        if metrics is not None:
            self.node_metrics = metrics
        self.seq = seq
        full = [Metric("bdSeq", DataType.Int64, self.bd_seq),
                Metric("Node Control/Rebirth", DataType.Boolean, False)] + self.node_metrics
        await self.publish(MessageType.NBIRTH, full)

    async def dbirth(self, device: str, metrics: list[Metric] | None = None, **kw: Any) -> None:
        if metrics is not None:
            self.devices[device] = metrics
        await self.publish(MessageType.DBIRTH, self.devices[device], device=device, **kw)

    async def birth(self) -> None:
        await self.nbirth()
        for device in self.devices:
            await self.dbirth(device)

    async def ndata(self, metrics: list[Metric], **kw: Any) -> None:
        await self.publish(MessageType.NDATA, metrics, **kw)

    async def ddata(self, device: str, metrics: list[Metric], **kw: Any) -> None:
        await self.publish(MessageType.DDATA, metrics, device=device, **kw)

    async def ddeath(self, device: str, **kw: Any) -> None:
        await self.publish(MessageType.DDEATH, [], device=device, **kw)

    async def ndeath(self, bd_seq: int | None = None) -> None:
        metrics = [Metric("bdSeq", DataType.Int64, self.bd_seq if bd_seq is None else bd_seq)]
        await self.raw(self.topic(MessageType.NDEATH), encode_payload(Payload(timestamp=now_ms(), metrics=metrics)))


def host_config(**overrides: Any) -> HostConfig:
    base: dict[str, Any] = {"host_id": "testhost", "reorder_timeout_ms": 300, "rebirth_debounce_ms": 5000}
    base.update(overrides)
    return HostConfig(**base)


@contextlib.asynccontextmanager
async def running(*runnables: Any) -> AsyncIterator[None]:
    """Run objects with `async run()` as tasks; cancel them (gracefully) on exit."""
    tasks = [asyncio.create_task(r.run(), name=f"test-{type(r).__name__}") for r in runnables]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            done, _ = await asyncio.wait({task}, timeout=20)
            if not done:
                # A graceful stop that never ends is a bug: show where it is stuck.
                task.print_stack()
                raise AssertionError(f"{task.get_name()} did not stop within 20 s of being cancelled")
            with contextlib.suppress(asyncio.CancelledError):
                task.result()


def make_host(broker_url: str, *, uns: UnsConfig | None = None, **config: Any) -> PrimaryHost:
    kwargs = {k: config.pop(k) for k in ("resync_grace_ms", "compact_commands", "client_id") if k in config}
    return PrimaryHost(host_config(**config), BrokerUrl.parse(broker_url), mapper=UnsMapper(uns or UnsConfig()),
                       **kwargs)
