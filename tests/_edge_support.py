"""Helpers for the edge node tests: an observing subscriber, hand-made commands and STATE, condition waits."""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiomqtt

from hub.broker import LocalMosquitto
from hub.errors import PayloadError
from hub.mqtt import BrokerUrl, make_client
from hub.sparkplug.payload import DataType, Metric, Payload, decode_payload, encode_payload, now_ms
from hub.sparkplug.topic import ALL_TOPICS, MessageType, SparkplugTopic


@dataclass
class Seen:
    """One message the observer received, decoded."""

    topic: SparkplugTopic
    payload: Payload | None
    raw: bytes
    qos: int
    retain: bool
    at: float  # time.monotonic() at arrival
    wall_ms: int  # wall clock at arrival, comparable with payload timestamps

    @property
    def type(self) -> MessageType:
        return self.topic.message_type

    def metric(self, name: str) -> Metric:
        assert self.payload is not None
        for m in self.payload.metrics:
            if m.name == name:
                return m
        raise AssertionError(f"{name!r} not in {self.topic}: {[m.name for m in self.payload.metrics]}")


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll `predicate` on the event loop until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class Subscriber(abc.ABC):
    """A plain aiomqtt subscriber at QoS 1 that hands every message to `_record` and rejoins the broker after a
    restart. With `persistent=True` it keeps a broker-side session (clean_session false), so what is published
    while it reconnects waits for it on the broker."""

    def __init__(self, broker: LocalMosquitto, *filters: str, persistent: bool = False) -> None:
        self.url = BrokerUrl.parse(broker.url)
        self.filters = filters
        self.persistent = persistent
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._id = f"{type(self).__name__.lower()}-{id(self)}"

    async def __aenter__(self) -> Self:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with make_client(self.url, self._id, clean_session=not self.persistent) as client:
                    await client.subscribe([(f, 1) for f in self.filters])
                    self.connected.set()
                    async for message in client.messages:
                        self._record(message)
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.02)

    @abc.abstractmethod
    def _record(self, message: aiomqtt.Message) -> None:
        """Keep one received message."""


class Observer(Subscriber):
    """Records every Sparkplug message, decoded; see `Subscriber` for reconnects and `persistent`."""

    def __init__(self, broker: LocalMosquitto, topic: str = ALL_TOPICS, *, persistent: bool = False) -> None:
        super().__init__(broker, topic, persistent=persistent)
        self.messages: list[Seen] = []

    def _record(self, message: aiomqtt.Message) -> None:
        raw = bytes(message.payload) if isinstance(message.payload, (bytes, bytearray)) else b""
        topic = SparkplugTopic.parse(message.topic.value)
        try:
            payload = None if topic.message_type is MessageType.STATE else decode_payload(raw)
        except PayloadError:
            payload = None  # e.g. a deliberately malformed command a test sent

        self.messages.append(Seen(topic, payload, raw, message.qos, message.retain, time.monotonic(), now_ms()))

    def of(self, *types: MessageType, device: str | None | type[Ellipsis] = ...) -> list[Seen]:
        return [
            m
            for m in self.messages
            if m.type in types and (device is ... or m.topic.device_id == device)
        ]

    async def wait_for(self, predicate: Callable[[Seen], bool], timeout: float = 5.0, after: int = 0) -> Seen:
        """The first message from index `after` that satisfies `predicate`."""

        def find() -> Seen | None:
            for m in self.messages[after:]:
                if predicate(m):
                    return m
            return None

        return await wait_until(find, timeout, "a matching message")

    async def wait_type(self, mt: MessageType, timeout: float = 5.0, after: int = 0, device: str | None = None) -> Seen:
        return await self.wait_for(
            lambda m: m.type is mt and (device is None or m.topic.device_id == device), timeout, after
        )

    def sparkplug_stream(self, group: str, node: str) -> list[Seen]:
        """Messages of one edge node, in arrival order (STATE excluded)."""
        return [
            m for m in self.messages if m.topic.group_id == group and m.topic.edge_node_id == node
        ]


class AliasBook:
    """What a host learns from births: alias -> (name, datatype), to read DATA sent by alias."""

    def __init__(self) -> None:
        self.by_alias: dict[int, Metric] = {}

    def learn(self, birth: Seen) -> None:
        assert birth.payload is not None
        for m in birth.payload.metrics:
            if m.alias is not None:
                self.by_alias[m.alias] = m

    def values(self, data: Seen) -> dict[str, Any]:
        """name -> value of a DATA message, resolving aliases and reinterpreting raw fields by datatype."""
        from hub.sparkplug.payload import parse_payload, decode_value

        out = {}
        for pm in parse_payload(data.raw).metrics:
            known = self.by_alias[pm.alias]
            kind = pm.WhichOneof("value")
            out[known.name] = None if pm.is_null or kind is None else decode_value(known.datatype, kind, getattr(pm, kind))
        return out


async def publish(broker: LocalMosquitto, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
    """Publish one message from a throwaway client (a host or an operator tool)."""
    async with make_client(BrokerUrl.parse(broker.url), f"tool-{time.monotonic_ns()}") as client:
        await client.publish(topic, payload, qos=qos, retain=retain)


def command(*metrics: Metric) -> bytes:
    """An NCMD/DCMD payload: timestamp, no seq (spec 6.4.x)."""
    return encode_payload(Payload(timestamp=now_ms(), metrics=list(metrics)))


async def send_ncmd(broker: LocalMosquitto, group: str, node: str, *metrics: Metric) -> None:
    await publish(broker, str(SparkplugTopic.node(MessageType.NCMD, group, node)), command(*metrics))


async def send_dcmd(broker: LocalMosquitto, group: str, node: str, device: str, *metrics: Metric) -> None:
    await publish(broker, str(SparkplugTopic.device(MessageType.DCMD, group, node, device)), command(*metrics))


async def send_rebirth(broker: LocalMosquitto, group: str, node: str) -> None:
    await send_ncmd(broker, group, node, Metric("Node Control/Rebirth", DataType.Boolean, True))


async def send_state(broker: LocalMosquitto, host_id: str, online: bool, timestamp: int) -> None:
    """A primary host's STATE, retained and QoS 1 as the spec wants."""
    body = json.dumps({"online": online, "timestamp": timestamp}).encode()
    await publish(broker, str(SparkplugTopic.state(host_id)), body, qos=1, retain=True)


def debug_broker(tmp_path: Path, extra: str = "") -> LocalMosquitto:
    """A broker that logs every packet (CONNECT flags, Will, SUBSCRIBE QoS, PUBLISH QoS/retain)."""
    return LocalMosquitto(workdir=tmp_path / "mosquitto-debug", extra_conf="log_type all\n" + extra)


def broker_log(broker: LocalMosquitto) -> list[str]:
    return (broker.workdir / "mosquitto.log").read_text().splitlines()


def persistent_broker(tmp_path: Path) -> LocalMosquitto:
    """A broker that keeps sessions across restart() and queues QoS 0 for a persistent Observer meanwhile.

    The observer then misses nothing an edge node publishes right after the restart, whoever reconnects first.
    """
    store = tmp_path / "mosquitto-store"
    store.mkdir(parents=True, exist_ok=True)
    return LocalMosquitto(
        workdir=tmp_path / "mosquitto-persistent",
        extra_conf=f"persistence true\npersistence_location {store}/\nqueue_qos0_messages true\n",
    )
