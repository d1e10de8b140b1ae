"""The Sparkplug B 3.0 primary host application: STATE, births and deaths, seq/bdSeq, rebirths, writes.

One `PrimaryHost` owns one MQTT connection. It announces itself with the 3.0 STATE birth/death pair
(`spBv1.0/STATE/<host_id>`, JSON, retained, QoS 1), keeps a model of every edge node and device it
hosts (metric definitions from NBIRTH/DBIRTH, aliases, current values, bdSeq, the next expected seq),
turns every received metric into a `Sample` and hands batches of them to listeners, synchronously
(the UNS mirror is one). It marks data STALE when a node or device dies or when the host itself loses
the broker, and asks edge nodes to rebirth when it can no longer trust its model of them.

Choices the specification leaves to the implementer, and what this host does:

* Reordering: an out-of-order seq is held for `reorder_timeout_ms` waiting for the missing messages;
  if they arrive everything is processed in seq order. If the timeout elapses, the gap is counted,
  the held messages are still processed in seq order (their values and timestamps are real, and the
  historian wants them), a rebirth is requested, and further DATA from the node is ignored until the
  new NBIRTH.
* After a reconnect the host relies first on the edge nodes re-birthing on their own (a broker restart
  drops them too, and nodes that wait for this primary host re-birth when they see STATE online);
  nodes that were online before the loss and have not re-birthed within `resync_grace_ms` get a
  rebirth request, so a quiet report-by-exception node does not stay STALE for hours. Any DATA from a
  node without a birth in this session also triggers a (debounced) rebirth request.
* NCMD/DCMD writes identify the metric by its alias alone when it has one, as
  tck-id-payloads-alias-data-cmd-requirement (MUST) asks, but keep the datatype although
  tck-id-payloads-metric-datatype-not-req says SHOULD NOT: edge nodes built on Eclipse Tahu's
  JavaScript codec cannot decode a command value without it (tests/test_interop_live.py).
  `compact_commands=False` (config `host.command_names: true`) adds the name too, for edge nodes
  that can only match commands by name (chapter 5's SHOULD).
* `accept_legacy_state`: an MQTT Will can carry only one topic, so the Sparkplug 2.2
  `STATE/<host_id>` ONLINE/OFFLINE pair runs on a second, tiny connection with its own Will. It
  publishes ONLINE only while the main session is online and OFFLINE as soon as it is not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.client import MQTT_ERR_SUCCESS

from hub.config import HostConfig
from hub.errors import PayloadError, TopicError, WriteError
from hub.mqtt import BrokerUrl, make_client
from hub.samples import NodeStatus, Quality, Sample
from hub.sparkplug import sparkplug_b_pb2
from hub.sparkplug.payload import (
    DataType,
    Metric,
    Payload,
    coerce,
    decode_metric,
    decode_value,
    encode_metric,
    encode_payload,
    now_ms,
    parse_payload,
)
from hub.sparkplug.topic import ALL_TOPICS, NAMESPACE, MessageType, SparkplugTopic, legacy_state_topic
from hub.uns_paths import UnsMapper

log = logging.getLogger(__name__)

REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
QUALITY_PROPERTY = "Quality"

Listener = Callable[[list[Sample]], None]
StatusListener = Callable[[NodeStatus], None]

# Oneof fields whose raw value already is the Python value for a datatype; anything else goes through
# decode_value (sign extension, width masks, arrays, datasets, templates).
_DIRECT_KIND: dict[DataType, str] = {
    DataType.Double: "double_value",
    DataType.Float: "float_value",
    DataType.Boolean: "boolean_value",
    DataType.String: "string_value",
    DataType.Text: "string_value",
    DataType.UUID: "string_value",
    DataType.UInt32: "int_value",
    DataType.UInt64: "long_value",
    DataType.DateTime: "long_value",
    DataType.Bytes: "bytes_value",
    DataType.File: "bytes_value",
}

_GOOD, _STALE, _BAD = Quality.GOOD, Quality.STALE, Quality.BAD
_HOLD_LIMIT = 255  # never hold more messages than the seq space can tell apart
_MAX_NODES = 100_000  # bound memory when someone floods spBv1.0/ with invented edge node ids
_ROUTE_CACHE_LIMIT = 200_000
_LOG_WINDOW_S = 60.0
_RATE_WINDOW_S = 10


class _MetricDef:
    """What the host knows about one metric: its birth definition and its last value."""

    __slots__ = ("name", "alias", "datatype", "direct", "path", "properties", "writable",
                 "value", "timestamp", "quality", "owner")

    def __init__(self, name: str, alias: int | None, datatype: DataType, path: str,
                 properties: dict[str, Any] | None, owner: _Owner) -> None:
        self.name = name
        self.alias = alias
        self.datatype = datatype
        self.direct = _DIRECT_KIND.get(datatype)
        self.path = path
        self.properties = properties
        self.writable = _writable_hint(name, properties)
        self.value: Any = None
        self.timestamp = 0
        self.quality = _GOOD
        self.owner = owner


class _Owner:
    """Common part of an edge node and a device: the metrics of its birth."""

    __slots__ = ("group", "edge_node", "device", "path", "online", "by_alias", "by_name")

    def __init__(self, group: str, edge_node: str, device: str | None, path: str) -> None:
        self.group = group
        self.edge_node = edge_node
        self.device = device
        self.path = path
        self.online = False
        self.by_alias: dict[int, _MetricDef] = {}
        self.by_name: dict[str, _MetricDef] = {}


class _Device(_Owner):
    __slots__ = ("node",)

    def __init__(self, node: _Node, device: str, path: str) -> None:
        super().__init__(node.group, node.edge_node, device, path)
        self.node = node


class _Node(_Owner):
    __slots__ = ("devices", "bd_seq", "expected_seq", "awaiting_birth", "rebirth_at", "held",
                 "reorder_handle", "resync", "retry_handle")

    def __init__(self, group: str, edge_node: str, path: str) -> None:
        super().__init__(group, edge_node, None, path)
        self.devices: dict[str, _Device] = {}
        self.bd_seq: int | None = None
        self.expected_seq: int | None = None
        # True once a rebirth was asked for: DATA is ignored until the next NBIRTH.
        self.awaiting_birth = False
        self.rebirth_at: float | None = None
        self.held: dict[int, tuple[MessageType, str | None, Any]] = {}
        self.reorder_handle: asyncio.TimerHandle | None = None
        # Online when the host lost the broker: asked to rebirth if it stays silent after reconnect.
        self.resync = False
        # A debounced request that must still go out once the debounce window ends.
        self.retry_handle: asyncio.TimerHandle | None = None


def _writable_hint(name: str, properties: dict[str, Any] | None) -> bool | None:
    """True/False when the birth says whether a metric may be written, None when it does not."""
    if name.startswith("Node Control/"):
        return True
    if name == BDSEQ_METRIC or name.startswith("Properties/"):
        return False
    if properties:
        prop = properties.get("writable") or properties.get("Writable")
        if prop is not None and isinstance(prop.value, bool):
            return prop.value
        prop = properties.get("readOnly") or properties.get("ReadOnly")
        if prop is not None and isinstance(prop.value, bool):
            return not prop.value
    return None


def _quality_of(properties: Any) -> Quality:
    """Quality from a raw protobuf PropertySet (absent Quality means GOOD)."""
    keys = properties.keys
    for i, key in enumerate(keys):
        if key == QUALITY_PROPERTY:
            if i >= len(properties.values):
                return _BAD
            pv = properties.values[i]
            kind = pv.WhichOneof("value")
            if kind == "int_value":
                # int32 travels as a two's complement uint32
                code = pv.int_value - (1 << 32) if pv.int_value >= 1 << 31 else pv.int_value
                return Quality.from_code(code)
            if kind == "long_value":
                return Quality.from_code(pv.long_value)
            return _BAD
    return _GOOD


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library turned into another error on the way out.

    aiomqtt's `async with client` can replace the CancelledError with an MqttError when its
    DISCONNECT fails; a reconnect loop catching MqttError would then run on forever and the
    task that cancelled it would wait forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _publish_packet(topic: str, payload: bytes, retain: bool) -> bytes:
    """An MQTT 3.1.1 PUBLISH packet at QoS 0."""
    name = topic.encode()
    if "+" in topic or "#" in topic or not name or len(name) > 65535:
        raise ValueError(f"{topic!r} cannot be an MQTT topic name")
    remaining = 2 + len(name) + len(payload)
    header = bytearray((0x31 if retain else 0x30,))
    while True:
        byte = remaining & 0x7F
        remaining >>= 7
        if remaining:
            header.append(byte | 0x80)
        else:
            header.append(byte)
            break
    return bytes(header) + len(name).to_bytes(2, "big") + name + payload


def _percentiles(values: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None}
    last = len(ordered) - 1
    return {"p50": round(ordered[last // 2], 3), "p99": round(ordered[min(last, int(last * 0.99 + 0.5))], 3)}


class HostStats:
    """Counters and rolling figures of one host; `PrimaryHost.diagnostics()` reports them."""

    def __init__(self) -> None:
        self.messages = 0
        self.metrics = 0
        self.rebirths_requested = 0
        self.rebirths_debounced = 0
        self.rebirths_unsent = 0
        self.rebirth_reasons: dict[str, int] = {}
        self.seq_gaps = 0
        self.reorders = 0
        self.ndeath_ignored = 0
        self.ignored_awaiting_birth = 0
        self.ignored_other_groups = 0
        self.malformed: dict[str, int] = {}
        self.listener_errors = 0
        self.state_reasserts = 0
        self.foreign_state = 0
        self.connects = 0
        self.connection_losses = 0
        self.writes = 0
        self.latency_ms: deque[float] = deque(maxlen=4096)
        self.processing_ms: deque[float] = deque(maxlen=4096)
        # (second, messages, metrics) buckets for the rolling rates
        self.buckets: deque[list[int]] = deque(maxlen=_RATE_WINDOW_S + 1)

    def count_rate(self, second: int, metrics: int) -> None:
        """Count one message and its metrics in the bucket of `second`."""
        buckets = self.buckets
        if buckets and buckets[-1][0] == second:
            bucket = buckets[-1]
            bucket[1] += 1
            bucket[2] += metrics
        else:
            buckets.append([second, 1, metrics])

    def rates(self, now_second: int) -> tuple[float, float]:
        """Messages/s and metrics/s over the last complete seconds of the window."""
        complete = [b for b in self.buckets if now_second - _RATE_WINDOW_S <= b[0] < now_second]
        if not complete:
            return 0.0, 0.0
        return (sum(b[1] for b in complete) / _RATE_WINDOW_S, sum(b[2] for b in complete) / _RATE_WINDOW_S)


class PrimaryHost:
    """A Sparkplug B 3.0 primary host application on one MQTT connection."""

    def __init__(
        self,
        config: HostConfig,
        broker: BrokerUrl,
        *,
        mapper: UnsMapper,
        client_id: str | None = None,
        resync_grace_ms: int = 2000,
        compact_commands: bool = True,
        keepalive: int = 30,
    ) -> None:
        self.config = config
        self.broker = broker
        self.mapper = mapper
        self.host_id = config.host_id
        self.client_id = client_id or f"plantbus-{config.host_id}"
        self.state_topic = str(SparkplugTopic.state(config.host_id))
        self.compact_commands = compact_commands
        self.keepalive = keepalive
        self.stats = HostStats()
        self._groups = frozenset(config.groups)
        self._reorder_s = config.reorder_timeout_ms / 1000
        self._debounce_s = config.rebirth_debounce_ms / 1000
        self._resync_s = resync_grace_ms / 1000
        self._listeners: list[Listener] = []
        self._status_listeners: list[StatusListener] = []
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._by_path: dict[str, _MetricDef] = {}
        self._routes: dict[str, tuple[MessageType, _Node | None, str | None] | None] = {}
        self._client: aiomqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._online = False
        self._online_event = asyncio.Event()
        self._offline_event = asyncio.Event()
        self._offline_event.set()
        self._state_ts = 0
        self._last_logged: dict[str, float] = {}
        self._resync_handle: asyncio.TimerHandle | None = None
        self._stopping = False

    # ------------------------------------------------------------------ public API

    def add_listener(self, callback: Listener) -> None:
        """Call `callback(samples)` synchronously for every decoded message; it must be cheap."""
        self._listeners.append(callback)

    def add_status_listener(self, callback: StatusListener) -> None:
        """Call `callback(status)` whenever a node or device goes online or offline."""
        self._status_listeners.append(callback)

    @property
    def online(self) -> bool:
        """True while connected, subscribed and STATE online has been published."""
        return self._online

    @property
    def state_timestamp(self) -> int:
        """The timestamp of the current session's STATE Will and birth."""
        return self._state_ts

    async def wait_online(self) -> None:
        """Wait until the host has published STATE online on its current connection."""
        await self._online_event.wait()

    async def run(self) -> None:
        """Connect, announce STATE, host edge nodes, reconnect with backoff; until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._connection_loop(), name=f"plantbus[host:{self.host_id}].mqtt")
            if self.config.accept_legacy_state:
                tg.create_task(self._legacy_state_loop(), name=f"plantbus[host:{self.host_id}].legacy_state")

    def publish_nowait(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> bool:
        """Queue a publish on the host's connection without waiting; False when not connected.

        aiomqtt's `publish` waits for each message to be written (and acknowledged for QoS 1); the
        mirror publishes thousands of messages a second, so it hands them to paho's own buffer,
        which the event loop writes out as the socket accepts them. Raises ValueError for a topic
        MQTT cannot carry.
        """
        client = self._client
        if client is None or not self._online:
            return False
        info = client._client.publish(topic, payload, qos, retain)
        return info.rc == MQTT_ERR_SUCCESS

    def publish_many_nowait(self, messages: list[tuple[str, bytes, bool]], qos: int = 0) -> int:
        """Queue several publishes (topic, payload, retain) in order; returns how many were accepted.

        At QoS 0 the PUBLISH packets are built here and handed to the connection as one write: paho
        would otherwise make a system call, a message-info object and a PUBACK-properties object per
        message, which is most of the mirror's cost. All or nothing at QoS 0; at QoS 1 it stops at the
        first refusal. Raises ValueError, before sending anything, for a topic MQTT cannot carry.
        """
        client = self._client
        if client is None or not self._online or not messages:
            return 0
        paho = client._client
        out = getattr(paho, "_out_packet", None)
        if qos != 0 or out is None or getattr(paho, "_sock", None) is None:
            for i, (topic, payload, retain) in enumerate(messages):
                if not self.publish_nowait(topic, payload, qos, retain):
                    return i
            return len(messages)
        blob = b"".join([_publish_packet(topic, payload, retain) for topic, payload, retain in messages])
        # Command 0 is no MQTT packet type: paho writes the bytes in order with everything else it
        # queued, keeps its keepalive bookkeeping, and runs no per-publish callbacks.
        out.append({"command": 0, "mid": 0, "qos": 0, "pos": 0, "to_process": len(blob), "packet": blob,
                    "info": None})
        paho._call_socket_register_write()
        return len(messages)

    def outgoing_backlog(self) -> int:
        """Messages handed to the connection and not yet written to the socket (or acknowledged)."""
        client = self._client
        if client is None:
            return 0
        paho = client._client
        return len(getattr(paho, "_out_packet", ())) + len(getattr(paho, "_out_messages", ()))

    def diagnostics(self) -> dict[str, Any]:
        """Counters, rates and latencies of the host, JSON-friendly."""
        s = self.stats
        msg_rate, metric_rate = s.rates(int(time.perf_counter()))
        nodes_online = sum(1 for n in self._nodes.values() if n.online)
        devices_online = sum(1 for n in self._nodes.values() for d in n.devices.values() if d.online)
        return {
            "host_id": self.host_id,
            "online": self._online,
            "state_timestamp": self._state_ts,
            "messages_per_s": round(msg_rate, 1),
            "metrics_per_s": round(metric_rate, 1),
            "messages_total": s.messages,
            "metrics_total": s.metrics,
            "nodes_known": len(self._nodes),
            "nodes_online": nodes_online,
            "devices_online": devices_online,
            "rebirths_requested": s.rebirths_requested,
            "rebirths_debounced": s.rebirths_debounced,
            "rebirths_unsent": s.rebirths_unsent,
            "rebirth_reasons": dict(s.rebirth_reasons),
            "seq_gaps": s.seq_gaps,
            "reorders": s.reorders,
            "ndeath_ignored": s.ndeath_ignored,
            "ignored_awaiting_birth": s.ignored_awaiting_birth,
            "ignored_other_groups": s.ignored_other_groups,
            "malformed": dict(s.malformed),
            "malformed_total": sum(s.malformed.values()),
            "listener_errors": s.listener_errors,
            "state_reasserts": s.state_reasserts,
            "foreign_state": s.foreign_state,
            "connects": s.connects,
            "connection_losses": s.connection_losses,
            "writes": s.writes,
            "outgoing_backlog": self.outgoing_backlog(),
            "latency_ms": _percentiles(s.latency_ms),
            "processing_ms": _percentiles(s.processing_ms),
        }

    def node_online(self, group: str, edge_node: str, device: str | None = None) -> bool:
        """Whether the host considers this edge node (or one of its devices) online."""
        node = self._nodes.get((group, edge_node))
        if node is None:
            return False
        if device is None:
            return node.online
        dev = node.devices.get(device)
        return dev is not None and dev.online and node.online

    def current(self, path: str) -> Sample | None:
        """The last live value the host holds for a UNS path or Sparkplug address, or None."""
        d = self._lookup(path)
        if d is None:
            return None
        owner = d.owner
        return Sample(d.path, d.value, d.timestamp, d.quality, d.datatype, owner.group, owner.edge_node,
                      owner.device, d.name)

    async def write(self, path: str, value: Any) -> None:
        """Send a value to a metric as NCMD (node metric) or DCMD (device metric).

        `path` is the metric's UNS path as mirrored, or its Sparkplug address
        `group/edge_node[/device]/metric`. Raises WriteError when it cannot be sent.
        """
        d = self._lookup(path)
        if d is None:
            raise WriteError(
                f"no metric at {path!r}: use a UNS path as mirrored (e.g. uns/<group>/<edge_node>/<device>/<metric>) "
                "or group/edge_node[/device]/metric of a metric that was born"
            )
        owner = d.owner
        node = owner.node if isinstance(owner, _Device) else owner
        where = f"{owner.group}/{owner.edge_node}" + (f"/{owner.device}" if owner.device else "")
        if not node.online:
            raise WriteError(f"cannot write {path!r}: edge node {owner.group}/{owner.edge_node} is offline")
        if not owner.online:
            raise WriteError(f"cannot write {path!r}: device {where} is offline")
        if d.writable is False:
            raise WriteError(f"cannot write {path!r}: metric {d.name!r} of {where} is read-only")
        if value is None:
            raise WriteError(f"cannot write {path!r}: give a value (null cannot be written)")
        try:
            coerced = coerce(d.datatype, value)
        except PayloadError as exc:
            raise WriteError(f"cannot write {value!r} to {path!r} ({d.datatype.name}): {exc}") from None
        ts = now_ms()
        compact = self.compact_commands and d.alias is not None
        msg = sparkplug_b_pb2.Payload(timestamp=ts)
        try:
            encode_metric(msg.metrics.add(), Metric(name=None if compact else d.name, datatype=d.datatype,
                                                    value=coerced, alias=d.alias, timestamp=ts))
        except (PayloadError, ValueError, TypeError, OverflowError) as exc:
            raise WriteError(f"cannot write {value!r} to {path!r} ({d.datatype.name}): {exc}") from None
        data = msg.SerializeToString()
        if isinstance(owner, _Device):
            topic = SparkplugTopic.device(MessageType.DCMD, owner.group, owner.edge_node, owner.device)
        else:
            topic = SparkplugTopic.node(MessageType.NCMD, owner.group, owner.edge_node)
        # Commands go at QoS 0 and not retained (tck-id-payloads-ncmd-qos, -dcmd-qos, -retain).
        if not self.publish_nowait(str(topic), data, qos=0, retain=False):
            raise WriteError(f"cannot write {path!r}: the hub is not connected to the MQTT broker {self.broker}")
        self.stats.writes += 1

    def request_rebirth(self, group: str, edge_node: str) -> bool:
        """Ask an edge node to rebirth now (not debounced); False when it could not be sent."""
        node = self._node(group, edge_node)
        if node is None:
            return False
        node.rebirth_at = None
        return self._request_rebirth(node, "operator")

    # ------------------------------------------------------------------ connection

    def _new_state_timestamp(self) -> int:
        ts = now_ms()
        # Strictly increasing, so edges can tell this session's STATE from the last one's Will.
        self._state_ts = max(ts, self._state_ts + 1)
        return self._state_ts

    def _state_payload(self, online: bool, ts: int) -> bytes:
        return json.dumps({"online": online, "timestamp": ts}).encode()

    def _subscriptions(self) -> list[str]:
        # Subscription filters, not topics: SparkplugTopic refuses wildcards, so they are spelt here.
        if self._groups:
            # A hub that hosts a shard of the plant's groups should not receive the others' traffic.
            filters = [f"{NAMESPACE}/{g}/#" for g in sorted(self._groups)]
        else:
            filters = [ALL_TOPICS]  # the literal spBv1.0/# the Eclipse TCK looks for
        return filters + [self.state_topic]

    async def _connection_loop(self) -> None:
        backoff = 0.25
        failing_since: float | None = None
        while True:
            ts = self._new_state_timestamp()
            will = aiomqtt.Will(self.state_topic, self._state_payload(False, ts), qos=1, retain=True)
            client = make_client(self.broker, self.client_id, will=will, clean_session=True,
                                 keepalive=self.keepalive)
            try:
                async with client:
                    self._client = client
                    try:
                        for topic in self._subscriptions():
                            await client.subscribe(topic, qos=1)
                        await client.publish(self.state_topic, self._state_payload(True, ts), qos=1, retain=True)
                        self.stats.connects += 1
                        log.info("primary host %s online at %s (STATE timestamp %d)", self.host_id, self.broker, ts)
                        failing_since = None
                        backoff = 0.25
                        self._set_online(True)
                        self._schedule_resync()
                        await self._receive_loop(client)
                    except asyncio.CancelledError:
                        await self._goodbye(client)
                        raise
            except MqttConnectError as exc:
                # Logged once per outage, not once per retry; the broker may be fixed while we wait.
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.error("primary host %s: the MQTT broker %s refused the connection (%s) — check "
                              "broker.username / broker.password_env and the broker's ACL for client id %s; "
                              "retrying", self.host_id, self.broker, exc, self.client_id)
            except aiomqtt.MqttError as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("primary host %s: no connection to the MQTT broker %s (%s); retrying with backoff",
                                self.host_id, self.broker, exc)
            finally:
                self._client = None
                if self._online:
                    self._set_online(False)
                    self._connection_lost("host_disconnected")
            _raise_if_cancelled()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 30.0)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Graceful stop: STALE to the listeners, then STATE offline before the DISCONNECT."""
        self._stopping = True
        self._connection_lost("host_stopped")
        # The death certificate carries the time of the disconnect, newer than the Will's, so edges
        # ignore the Will if the broker delivers it late (tck-id-host-topic-phid-death-payload-timestamp-disconnect-clean).
        try:
            await client.publish(self.state_topic, self._state_payload(False, max(now_ms(), self._state_ts)),
                                 qos=1, retain=True, timeout=3)
        except aiomqtt.MqttError as exc:
            log.warning("primary host %s could not publish STATE offline: %s", self.host_id, exc)
        self._set_online(False)

    def _set_online(self, online: bool) -> None:
        self._online = online
        if online:
            self._offline_event.clear()
            self._online_event.set()
        else:
            self._online_event.clear()
            self._offline_event.set()
            if self._resync_handle is not None:
                self._resync_handle.cancel()
                self._resync_handle = None

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        handle = self.handle_message
        # aiomqtt's iterator costs a task per message; drain what is already queued directly.
        queue: asyncio.Queue[aiomqtt.Message] | None = getattr(client, "_queue", None)
        async for message in client.messages:
            handle(message.topic.value, message.payload)
            if queue is None:
                continue
            for _ in range(1000):
                try:
                    message = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                handle(message.topic.value, message.payload)

    def _connection_lost(self, reason: str) -> None:
        """The host can no longer see its edge nodes: every metric it knows goes STALE."""
        self.stats.connection_losses += reason == "host_disconnected"
        ts = now_ms()
        for node in self._nodes.values():
            if node.online:
                node.resync = True
                self._node_offline(node, ts, reason)
            node.awaiting_birth = False
            node.rebirth_at = None

    def _schedule_resync(self) -> None:
        if not any(n.resync for n in self._nodes.values()):
            return
        loop = self._loop or asyncio.get_running_loop()
        self._resync_handle = loop.call_later(self._resync_s, self._resync)

    def _resync(self) -> None:
        self._resync_handle = None
        for node in self._nodes.values():
            if node.resync and not node.online:
                self._request_rebirth(node, "resync_after_reconnect")
            node.resync = False

    async def _legacy_state_loop(self) -> None:
        """Sparkplug 2.2 `STATE/<host_id>` ONLINE/OFFLINE on a connection of its own (see module doc)."""
        topic = legacy_state_topic(self.host_id)
        backoff = 0.25
        while True:
            await self._online_event.wait()
            client = make_client(self.broker, f"{self.client_id}-legacy",
                                 will=aiomqtt.Will(topic, b"OFFLINE", qos=1, retain=True), clean_session=True,
                                 keepalive=self.keepalive)
            try:
                async with client:
                    await client.subscribe(topic, qos=1)
                    await client.publish(topic, b"ONLINE", qos=1, retain=True)
                    backoff = 0.25
                    reader = asyncio.create_task(self._legacy_reader(client, topic),
                                                 name=f"plantbus[host:{self.host_id}].legacy_state.read")
                    watcher = asyncio.create_task(self._offline_event.wait(),
                                                  name=f"plantbus[host:{self.host_id}].legacy_state.watch")
                    try:
                        try:
                            done, _ = await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            # stop the reader first, or it would answer our own OFFLINE with ONLINE
                            for task in (reader, watcher):
                                task.cancel()
                            await asyncio.gather(reader, watcher, return_exceptions=True)
                    except asyncio.CancelledError:
                        await self._legacy_offline(client, topic)
                        raise
                    if watcher in done:
                        await self._legacy_offline(client, topic)
                    else:
                        reader.result()
            except aiomqtt.MqttError as exc:
                log.warning("primary host %s: legacy STATE connection lost (%s)", self.host_id, exc)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 30.0)

    async def _legacy_offline(self, client: aiomqtt.Client, topic: str) -> None:
        try:
            await client.publish(topic, b"OFFLINE", qos=1, retain=True, timeout=3)
        except aiomqtt.MqttError as exc:
            log.warning("primary host %s could not publish legacy STATE OFFLINE: %s", self.host_id, exc)

    async def _legacy_reader(self, client: aiomqtt.Client, topic: str) -> None:
        async for message in client.messages:
            if message.payload == b"OFFLINE" and self._online and not self._stopping:
                await client.publish(topic, b"ONLINE", qos=1, retain=True)

    # ------------------------------------------------------------------ receiving

    def handle_message(self, topic: str, payload: Any) -> None:
        """Process one message received on the Sparkplug namespace; never raises.

        The receive loop calls this for every message; benchmarks and robustness tests may too.
        """
        t0 = time.perf_counter()
        stats = self.stats
        stats.messages += 1
        metrics = 0
        try:
            route = self._routes.get(topic, False)
            if route is False:
                route = self._route(topic)
            if route is None:
                return
            mt, node, device_id = route
            if mt is MessageType.STATE:
                self._on_own_state(payload)
                return
            if node is None or mt.is_command:
                return
            try:
                pb = parse_payload(payload)
            except PayloadError:
                self._malformed("not_protobuf", f"{topic}: not a Sparkplug B payload")
                return
            except TypeError:
                self._malformed("not_protobuf", f"{topic}: payload is not bytes")
                return
            metrics = len(pb.metrics)
            if mt is MessageType.NDEATH:
                # a Will's timestamp is from the CONNECT, not a measure of delivery latency
                self._on_ndeath(node, pb)
                return
            if pb.HasField("timestamp"):
                stats.latency_ms.append(time.time() * 1000 - pb.timestamp)
            if mt is MessageType.NBIRTH:
                self._on_nbirth(node, pb)
            else:
                self._sequenced(node, mt, device_id, pb)
        except Exception as exc:  # noqa: BLE001 - one bad message must never stop the host
            self._malformed("internal_error", f"{topic}: {type(exc).__name__}: {exc}", exc_info=True)
        finally:
            t1 = time.perf_counter()
            stats.metrics += metrics
            stats.processing_ms.append((t1 - t0) * 1000)
            stats.count_rate(int(t1), metrics)

    def _route(self, topic: str) -> tuple[MessageType, _Node | None, str | None] | None:
        """Parse and cache a topic: None for topics this host ignores."""
        try:
            parsed = SparkplugTopic.parse(topic)
        except TopicError as exc:
            self._malformed("bad_topic", str(exc))
            return None
        if parsed.message_type is MessageType.STATE:
            route = (MessageType.STATE, None, None) if parsed.host_id == self.host_id else None
        elif self._groups and parsed.group_id not in self._groups:
            self.stats.ignored_other_groups += 1
            route = None
        else:
            key = (parsed.group_id, parsed.edge_node_id)
            node = self._nodes.get(key)
            if node is None:
                if len(self._nodes) >= _MAX_NODES:
                    self._malformed("too_many_nodes", f"{topic}: more than {_MAX_NODES} edge nodes")
                    return None
                path = str(self.mapper.device_path(parsed.group_id, parsed.edge_node_id, None))
                node = self._nodes[key] = _Node(parsed.group_id, parsed.edge_node_id, path)  # type: ignore[arg-type]
            route = (parsed.message_type, node, parsed.device_id)
        if len(self._routes) >= _ROUTE_CACHE_LIMIT:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _on_own_state(self, payload: Any) -> None:
        try:
            state = json.loads(payload)
            online = state["online"]
            ts = state.get("timestamp")
        except (ValueError, TypeError, KeyError, AttributeError):
            self._malformed("bad_state_payload", f"{self.state_topic}: not a STATE JSON payload")
            return
        if online is False and not self._stopping:
            # Another instance's Will, or a stale retained death: we are alive, say so again
            # with this session's timestamp (tck-id-message-flow-hid-sparkplug-state-message-delivered).
            if self.publish_nowait(self.state_topic, self._state_payload(True, self._state_ts), qos=1, retain=True):
                self.stats.state_reasserts += 1
        elif online is True and isinstance(ts, int) and ts > self._state_ts:
            # Newer than our own session: someone else runs with our host id.
            self.stats.foreign_state += 1
            self._log_once("foreign_state", logging.WARNING,
                           "another primary host announced STATE online as %r (timestamp %r); host ids must be "
                           "unique — give one of them another host.host_id", self.host_id, ts)

    def _sequenced(self, node: _Node, mt: MessageType, device_id: str | None, pb: Any) -> None:
        """DBIRTH, DDEATH, NDATA, DDATA: check the seq, reorder within the timeout, then apply."""
        if not node.online:
            self._request_rebirth(node, "data_before_birth" if node.bd_seq is None else "data_while_offline")
            return
        if node.awaiting_birth:
            self.stats.ignored_awaiting_birth += 1
            self._request_rebirth(node, "still_awaiting_birth")
            return
        expected = node.expected_seq
        if not pb.HasField("seq"):
            self._malformed("missing_seq", f"{mt.value} from {node.group}/{node.edge_node} carries no seq")
            self._apply(node, mt, device_id, pb)
            return
        seq = pb.seq
        if seq > 255:
            self._malformed("bad_seq", f"{mt.value} from {node.group}/{node.edge_node} has seq {seq} > 255")
            return
        if expected is None or seq == expected:
            node.expected_seq = (seq + 1) & 255
            self._apply(node, mt, device_id, pb)
            if node.held:
                self._drain_held(node)
            return
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # fed outside an event loop (a benchmark): no reorder timers, a gap is a gap
        if self._reorder_s <= 0 or seq in node.held or len(node.held) >= _HOLD_LIMIT or self._loop is None:
            self._gap(node, (mt, device_id, pb))
            return
        node.held[seq] = (mt, device_id, pb)
        if node.reorder_handle is None:
            node.reorder_handle = self._loop.call_later(self._reorder_s, self._reorder_expired, node)

    def _drain_held(self, node: _Node) -> None:
        held = node.held
        while node.online and not node.awaiting_birth and node.expected_seq in held:
            mt, device_id, pb = held.pop(node.expected_seq)  # type: ignore[arg-type]
            node.expected_seq = (node.expected_seq + 1) & 255  # type: ignore[operator]
            self.stats.reorders += 1
            self._apply(node, mt, device_id, pb)
        if not held and node.reorder_handle is not None:
            node.reorder_handle.cancel()
            node.reorder_handle = None

    def _reorder_expired(self, node: _Node) -> None:
        node.reorder_handle = None
        if node.held:
            try:
                self._gap(node)
            except Exception as exc:  # noqa: BLE001 - a timer callback must not die silently
                self._malformed("internal_error", f"reorder timeout of {node.group}/{node.edge_node}: {exc}",
                                exc_info=True)

    def _gap(self, node: _Node, last: tuple[MessageType, str | None, Any] | None = None) -> None:
        """The missing seq never came: process what we hold (and `last`) in order, then ask for a rebirth."""
        self.stats.seq_gaps += 1
        if node.reorder_handle is not None:
            node.reorder_handle.cancel()
            node.reorder_handle = None
        held = node.held
        node.held = {}
        start = node.expected_seq or 0
        pending = [held[seq] for seq in sorted(held, key=lambda s: (s - start) & 255)]
        if last is not None:
            pending.append(last)
        for mt, device_id, pb in pending:
            if node.online and not node.awaiting_birth:
                self._apply(node, mt, device_id, pb)
        self._request_rebirth(node, "seq_gap")

    def _apply(self, node: _Node, mt: MessageType, device_id: str | None, pb: Any) -> None:
        if mt is MessageType.NDATA:
            self._on_data(node, pb, node)
        elif mt is MessageType.DDATA:
            device = node.devices.get(device_id)  # type: ignore[arg-type]
            if device is None or not device.online:
                self._request_rebirth(node, "ddata_before_dbirth")
                return
            self._on_data(node, pb, device)
        elif mt is MessageType.DBIRTH:
            self._on_dbirth(node, device_id, pb)  # type: ignore[arg-type]
        elif mt is MessageType.DDEATH:
            self._on_ddeath(node, device_id, pb)  # type: ignore[arg-type]

    def _on_data(self, node: _Node, pb: Any, owner: _Owner) -> None:
        """The hot path: resolve aliases with dict lookups and emit one Sample per metric."""
        payload_ts = pb.timestamp if pb.HasField("timestamp") else now_ms()
        by_alias = owner.by_alias
        by_name = owner.by_name
        group, edge_node, device = owner.group, owner.edge_node, owner.device
        samples: list[Sample] = []
        append = samples.append
        unknown = False
        for m in pb.metrics:
            # try costs nothing until something raises (3.11); any garbage ends in a counted metric
            try:
                has = m.HasField
                if has("alias"):
                    d = by_alias.get(m.alias)
                elif has("name"):
                    d = by_name.get(m.name)
                else:
                    d = None
                if d is None:
                    unknown = True
                    continue
                dt = d.datatype
                if has("datatype") and m.datatype != dt:
                    self._malformed("datatype_mismatch",
                                    f"{d.path}: DATA says datatype {m.datatype}, the birth said {dt.name}")
                    continue
                kind = m.WhichOneof("value")
                if kind is None or m.is_null:
                    value = None
                elif kind == d.direct:
                    value = getattr(m, kind)
                else:
                    value = decode_value(dt, kind, getattr(m, kind))
                ts = m.timestamp if has("timestamp") else payload_ts
                quality = _quality_of(m.properties) if has("properties") else _GOOD
            except Exception as exc:  # noqa: BLE001 - decode_value and protobuf may meet any garbage
                self._malformed("bad_value", f"a DATA metric of {owner.path}: {type(exc).__name__}: {exc}")
                continue
            if m.is_historical:
                append(Sample(d.path, value, ts, quality, dt, group, edge_node, device, d.name, True))
                continue
            d.value = value
            d.timestamp = ts
            d.quality = quality
            append(Sample(d.path, value, ts, quality, dt, group, edge_node, device, d.name))
        if samples:
            self._emit(samples)
        if unknown:
            # A metric the birth did not announce: our model of the node is out of date.
            self._request_rebirth(node, "unknown_metric")

    # ------------------------------------------------------------------ births and deaths

    def _birth_metrics(self, owner: _Owner, pb: Any, fallback_ts: int) -> tuple[list[_MetricDef], list[Sample]]:
        """Decode every metric of a birth into definitions and samples; bad metrics are counted and skipped."""
        defs: list[_MetricDef] = []
        samples: list[Sample] = []
        for raw in pb.metrics:
            try:
                metric = decode_metric(raw)
            except Exception as exc:  # noqa: BLE001 - births come from anywhere
                self._malformed("bad_birth_metric", f"{owner.path}: {type(exc).__name__}: {exc}")
                continue
            if not metric.name:
                self._malformed("birth_metric_without_name", f"{owner.path}: a birth metric has no name")
                continue
            if metric.datatype is DataType.Unknown:
                self._malformed("birth_metric_without_datatype", f"{owner.path}: {metric.name!r} has no datatype")
                continue
            try:
                path = self.mapper.metric_path(owner.group, owner.edge_node, owner.device, metric.name)
            except (TopicError, ValueError) as exc:
                self._malformed("bad_metric_name", f"{owner.path}: metric {metric.name!r}: {exc}")
                continue
            d = _MetricDef(metric.name, metric.alias, metric.datatype, path, metric.properties, owner)
            quality = _GOOD
            if metric.properties and QUALITY_PROPERTY in metric.properties:
                code = metric.properties[QUALITY_PROPERTY].value
                quality = Quality.from_code(code if isinstance(code, int) else 0)
            ts = metric.timestamp if metric.timestamp is not None else fallback_ts
            sample = Sample(path, metric.value, ts, quality, metric.datatype, owner.group, owner.edge_node,
                            owner.device, metric.name, metric.is_historical)
            samples.append(sample)
            if not metric.is_historical:
                d.value, d.timestamp, d.quality = metric.value, ts, quality
            defs.append(d)
        return defs, samples

    def _install(self, owner: _Owner, defs: list[_MetricDef], ts: int, samples: list[Sample]) -> None:
        """Replace an owner's definitions; metrics the new birth dropped go STALE."""
        new_names = {d.name for d in defs}
        for old in owner.by_name.values():
            if self._by_path.get(old.path) is old:
                del self._by_path[old.path]
            if old.name not in new_names and old.quality is not _STALE:
                samples.append(self._stale_sample(old, ts))
        by_alias: dict[int, _MetricDef] = {}
        by_name: dict[str, _MetricDef] = {}
        for d in defs:
            if d.alias is not None:
                if d.alias in by_alias:
                    self._malformed("duplicate_alias", f"{owner.path}: alias {d.alias} is used twice in one birth")
                by_alias[d.alias] = d
            by_name[d.name] = d
            self._by_path[d.path] = d
        owner.by_alias = by_alias
        owner.by_name = by_name

    def _on_nbirth(self, node: _Node, pb: Any) -> None:
        ts = pb.timestamp if pb.HasField("timestamp") else now_ms()
        defs, samples = self._birth_metrics(node, pb, ts)
        bd_seq = None
        for d in defs:
            if d.name == BDSEQ_METRIC and isinstance(d.value, int) and not isinstance(d.value, bool):
                bd_seq = d.value
        if bd_seq is None:
            self._malformed("nbirth_without_bdseq", f"NBIRTH of {node.group}/{node.edge_node} carries no bdSeq")
        stale: list[Sample] = []
        now = now_ms()
        # A new NBIRTH starts a new session: the devices of the old one are gone until they DBIRTH again.
        for device in node.devices.values():
            if device.online:
                self._device_offline(device, now, "node_rebirth", stale)
        if node.reorder_handle is not None:
            node.reorder_handle.cancel()
            node.reorder_handle = None
        node.held = {}
        self._install(node, defs, now, stale)
        node.bd_seq = bd_seq
        if pb.HasField("seq") and pb.seq <= 255:
            node.expected_seq = (pb.seq + 1) & 255
        else:
            self._malformed("missing_seq", f"NBIRTH of {node.group}/{node.edge_node} carries no valid seq")
            node.expected_seq = None
        node.online = True
        node.awaiting_birth = False
        node.resync = False
        if node.retry_handle is not None:
            node.retry_handle.cancel()
            node.retry_handle = None
        if stale:
            self._emit(stale)
        self._status(node, True, ts, "birth")
        self._emit(samples)

    def _on_dbirth(self, node: _Node, device_id: str, pb: Any) -> None:
        device = node.devices.get(device_id)
        if device is None:
            device = _Device(node, device_id, str(self.mapper.device_path(node.group, node.edge_node, device_id)))
            node.devices[device_id] = device
        ts = pb.timestamp if pb.HasField("timestamp") else now_ms()
        defs, samples = self._birth_metrics(device, pb, ts)
        stale: list[Sample] = []
        self._install(device, defs, ts, stale)
        device.online = True
        if stale:
            self._emit(stale)
        self._status(device, True, ts, "birth")
        self._emit(samples)

    def _on_ddeath(self, node: _Node, device_id: str, pb: Any) -> None:
        device = node.devices.get(device_id)
        if device is None or not device.online:
            return
        # DDEATH is published by the edge node itself, so its timestamp is meaningful (unlike NDEATH's).
        ts = pb.timestamp if pb.HasField("timestamp") else now_ms()
        samples: list[Sample] = []
        self._device_offline(device, ts, "death", samples)
        self._emit(samples)

    def _on_ndeath(self, node: _Node, pb: Any) -> None:
        bd_seq = None
        for raw in pb.metrics:
            try:
                metric = decode_metric(raw)
            except Exception:  # noqa: BLE001
                continue
            if metric.name == BDSEQ_METRIC and isinstance(metric.value, int):
                bd_seq = metric.value
        if not node.online:
            self.stats.ndeath_ignored += 1
            return
        if node.bd_seq is not None and bd_seq != node.bd_seq:
            # The Will of an older session arriving late: this session is still alive.
            self.stats.ndeath_ignored += 1
            self._log_once("ndeath_ignored", logging.INFO,
                           "ignored NDEATH of %s/%s with bdSeq %r: the current NBIRTH has bdSeq %r",
                           node.group, node.edge_node, bd_seq, node.bd_seq)
            return
        if node.held:
            self._gap_before_death(node)
        # A Will's timestamp says nothing about when the node died: use our own clock.
        self._node_offline(node, now_ms(), "death")

    def _gap_before_death(self, node: _Node) -> None:
        held = node.held
        node.held = {}
        if node.reorder_handle is not None:
            node.reorder_handle.cancel()
            node.reorder_handle = None
        self.stats.seq_gaps += 1
        start = node.expected_seq or 0
        for seq in sorted(held, key=lambda s: (s - start) & 255):
            mt, device_id, pb = held[seq]
            self._apply(node, mt, device_id, pb)

    def _node_offline(self, node: _Node, ts: int, reason: str) -> None:
        samples: list[Sample] = []
        for device in node.devices.values():
            if device.online:
                self._device_offline(device, ts, reason, samples)
        node.online = False
        node.expected_seq = None
        node.held = {}
        if node.reorder_handle is not None:
            node.reorder_handle.cancel()
            node.reorder_handle = None
        for d in node.by_name.values():
            samples.append(self._stale_sample(d, ts))
        self._emit(samples)
        self._status(node, False, ts, reason)

    def _device_offline(self, device: _Device, ts: int, reason: str, samples: list[Sample]) -> None:
        device.online = False
        for d in device.by_name.values():
            samples.append(self._stale_sample(d, ts))
        self._status(device, False, ts, reason)

    @staticmethod
    def _stale_sample(d: _MetricDef, ts: int) -> Sample:
        d.quality = _STALE
        d.timestamp = ts
        owner = d.owner
        return Sample(d.path, d.value, ts, _STALE, d.datatype, owner.group, owner.edge_node, owner.device, d.name)

    # ------------------------------------------------------------------ rebirths, listeners, bookkeeping

    def _request_rebirth(self, node: _Node, reason: str) -> bool:
        """NCMD `Node Control/Rebirth` = true, at most once per `rebirth_debounce_ms` per node."""
        stats = self.stats
        stats.rebirth_reasons[reason] = stats.rebirth_reasons.get(reason, 0) + 1
        if node.online:
            node.awaiting_birth = True
        now = time.monotonic()
        if node.rebirth_at is not None and now - node.rebirth_at < self._debounce_s:
            stats.rebirths_debounced += 1
            # A quiet node sends no more DATA to re-trigger the request: retry when the window ends,
            # unless its NBIRTH arrives first.
            if (node.awaiting_birth or not node.online) and node.retry_handle is None and self._loop is not None:
                delay = node.rebirth_at + self._debounce_s - now
                node.retry_handle = self._loop.call_later(delay, self._retry_rebirth, node)
            return False
        if node.retry_handle is not None:
            node.retry_handle.cancel()
            node.retry_handle = None
        ts = now_ms()
        payload = encode_payload(Payload(timestamp=ts, metrics=[Metric(REBIRTH_METRIC, DataType.Boolean, True,
                                                                       timestamp=ts)]))
        topic = SparkplugTopic.node(MessageType.NCMD, node.group, node.edge_node)
        if not self.publish_nowait(str(topic), payload, qos=0, retain=False):
            stats.rebirths_unsent += 1
            return False
        node.rebirth_at = now
        stats.rebirths_requested += 1
        self._log_once(f"rebirth:{reason}", logging.INFO, "asked %s/%s to rebirth (%s)", node.group,
                       node.edge_node, reason)
        return True

    def _retry_rebirth(self, node: _Node) -> None:
        node.retry_handle = None
        if node.awaiting_birth or not node.online:
            self._request_rebirth(node, "retry_after_debounce")

    def _emit(self, samples: list[Sample]) -> None:
        for listener in self._listeners:
            try:
                listener(samples)
            except Exception as exc:  # noqa: BLE001 - a broken consumer must not stop ingest
                self.stats.listener_errors += 1
                self._log_once("listener_error", logging.ERROR, "a sample listener failed: %s", exc,
                               exc_info=True)

    def _status(self, owner: _Owner, online: bool, ts: int, reason: str) -> None:
        if not self._status_listeners:
            return
        node = owner if isinstance(owner, _Node) else owner.node  # type: ignore[attr-defined]
        status = NodeStatus(owner.path, owner.group, owner.edge_node, owner.device, online, ts, node.bd_seq, reason)
        for listener in self._status_listeners:
            try:
                listener(status)
            except Exception as exc:  # noqa: BLE001
                self.stats.listener_errors += 1
                self._log_once("listener_error", logging.ERROR, "a status listener failed: %s", exc,
                               exc_info=True)

    def _malformed(self, reason: str, detail: str, exc_info: bool = False) -> None:
        counts = self.stats.malformed
        counts[reason] = counts.get(reason, 0) + 1
        self._log_once(f"malformed:{reason}", logging.WARNING,
                       "malformed Sparkplug message (%s, %d so far): %s", reason, counts[reason], detail,
                       exc_info=exc_info)

    def _log_once(self, key: str, level: int, msg: str, *args: Any, exc_info: bool = False) -> None:
        """Log at most once per key and minute, so a flood of bad messages cannot flood the log."""
        now = time.monotonic()
        last = self._last_logged.get(key)
        if last is not None and now - last < _LOG_WINDOW_S:
            return
        if len(self._last_logged) > 1000:
            self._last_logged.clear()
        self._last_logged[key] = now
        log.log(level, msg, *args, exc_info=exc_info)

    def _node(self, group: str, edge_node: str) -> _Node | None:
        return self._nodes.get((group, edge_node))

    def _lookup(self, path: str) -> _MetricDef | None:
        """A metric by UNS path first, then by Sparkplug address group/edge_node[/device]/metric."""
        d = self._by_path.get(path)
        if d is not None:
            return d
        parts = path.strip("/").split("/")
        if len(parts) < 3:
            return None
        node = self._nodes.get((parts[0], parts[1]))
        if node is None:
            return None
        if len(parts) >= 4:
            device = node.devices.get(parts[2])
            if device is not None:
                d = device.by_name.get("/".join(parts[3:]))
                if d is not None:
                    return d
        return node.by_name.get("/".join(parts[2:]))
