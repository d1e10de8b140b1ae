"""Sparkplug B 3.0 edge node engine, shared by the equipment connectors and the edge computer-vision process.

An `EdgeNode` owns one MQTT session at a time and keeps it alive forever (`run()`): Will NDEATH with a
persisted bdSeq, subscriptions (NCMD, one DCMD per device, the primary host's STATE), NBIRTH and DBIRTHs,
report-by-exception DATA, commands (rebirth, writes), and store-and-forward of DATA while the broker or the
primary host is away.

Two choices shape the hot path:

* DATA, births and DDEATH are handed to paho synchronously (`_send`), not through aiomqtt's awaitable
  `publish`. The seq number must follow wire order and a birth sequence must never have DATA in between;
  a synchronous hand-off gives both without locks, and it is ~5x faster than awaiting every QoS 0 publish.
* Sparkplug requires QoS 0 for DATA, which the broker never acknowledges. To know what the broker really
  received, the engine periodically sends an UNSUBSCRIBE for a filter it never subscribed (its own NDATA
  topic): brokers handle a connection's packets in order, so the UNSUBACK proves every PUBLISH before it
  was processed. DATA not yet confirmed when the connection drops goes to the outbox and is replayed as
  historical in the next session (at least once across sessions; never twice within one).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import math
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from hub.errors import ConfigError, PayloadError, PlantbusError
from hub.mqtt import BrokerUrl, make_client
from hub.sparkplug import sparkplug_b_pb2 as pb
from hub.sparkplug.bdseq import BdSeqStore
from hub.sparkplug.outbox import DEFAULT_MAX_MESSAGES, Outbox
from hub.sparkplug.payload import (
    INT_RANGES,
    NUMERIC_TYPES,
    STRING_TYPES,
    DataType,
    Metric,
    Payload,
    PropertyValue,
    coerce,
    decode_value,
    encode_metric,
    encode_payload,
    now_ms,
    parse_payload,
)
from hub.sparkplug.topic import MessageType, SparkplugTopic, legacy_state_topic, validate_id

log = logging.getLogger(__name__)

BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
NEXT_SERVER = "Node Control/Next Server"
SCAN_RATE = "Node Control/Scan Rate"
QUALITY = "Quality"

WriteHandler = Callable[[str | None, str, Any], Any]

# How the hot path writes a value into the protobuf metric, by datatype.
_LONG, _INT, _FLOAT, _DOUBLE, _BOOL, _STRING, _OTHER = range(7)
_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
_NOT_METRIC_TYPES = frozenset({DataType.Unknown, DataType.Template, DataType.PropertySet, DataType.PropertySetList})


class Quality(IntEnum):
    """Sparkplug quality codes (specification 6.4.8, the 'Quality' property, Int32)."""

    BAD = 0
    GOOD = 192
    STALE = 500


def _value_kind(datatype: DataType) -> int:
    if datatype in INT_RANGES:
        return _LONG if INT_RANGES[datatype][0] == 64 else _INT
    if datatype is DataType.Double:
        return _DOUBLE
    if datatype is DataType.Float:
        return _FLOAT
    if datatype is DataType.Boolean:
        return _BOOL
    if datatype in STRING_TYPES:
        return _STRING
    return _OTHER


def _infer_property(value: Any) -> PropertyValue:
    if isinstance(value, PropertyValue):
        return value
    if isinstance(value, bool):
        return PropertyValue(DataType.Boolean, value)
    if isinstance(value, int):
        return PropertyValue(DataType.Int64, value)
    if isinstance(value, float):
        return PropertyValue(DataType.Double, value)
    if isinstance(value, str):
        return PropertyValue(DataType.String, value)
    raise ConfigError(f"metric property value {value!r}: give a PropertyValue or a bool, int, float or str")


class EdgeMetric:
    """One declared metric: its birth description and its last reported value."""

    __slots__ = (
        "name", "datatype", "alias", "writable", "deadband", "properties", "value", "timestamp", "quality",
        "device_id", "kind", "low", "high",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        datatype: DataType,
        alias: int | None,
        value: Any,
        *,
        writable: bool,
        deadband: float | None,
        properties: dict[str, PropertyValue] | None,
        timestamp: int | None,
        device_id: str | None,
    ) -> None:
        self.name = name
        self.datatype = datatype
        self.alias = alias
        self.writable = writable
        self.deadband = deadband
        self.properties = properties
        self.value = value
        self.timestamp = timestamp
        self.quality = int(Quality.GOOD)
        self.device_id = device_id
        self.kind = _value_kind(datatype)
        bits, signed = INT_RANGES.get(datatype, (64, True))
        self.low, self.high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def differs(self, value: Any) -> bool:
        """Whether `value` is a change worth reporting (exact, or beyond the deadband for numerics)."""
        old = self.value
        if value is None or old is None:
            return (value is None) != (old is None)
        if self.deadband is not None:
            return abs(value - old) > self.deadband
        if value != old:
            # NaN != NaN, but a NaN that stays NaN is no change.
            return not (isinstance(value, float) and math.isnan(value) and isinstance(old, float) and math.isnan(old))
        return False

    def __repr__(self) -> str:
        return f"EdgeMetric({self.name!r}, {self.datatype.name}, alias={self.alias}, value={self.value!r})"


class _Target:
    """What a DATA message is about: the edge node itself (device_id None) or one of its devices."""

    def __init__(self, node: EdgeNode, device_id: str | None) -> None:
        self.node = node
        self.device_id = device_id
        self.metrics: dict[str, EdgeMetric] = {}
        self._lower_names: set[str] = set()
        self.online = True
        self.born = False  # DBIRTH (or NBIRTH for the node) sent in the current session
        g, e = node.group_id, node.edge_node_id
        if device_id is None:
            self.data_topic = str(SparkplugTopic.node(MessageType.NDATA, g, e))
            self.label = f"edge node {g}/{e}"
        else:
            self.data_topic = str(SparkplugTopic.device(MessageType.DDATA, g, e, device_id))
            self.birth_topic = str(SparkplugTopic.device(MessageType.DBIRTH, g, e, device_id))
            self.death_topic = str(SparkplugTopic.device(MessageType.DDEATH, g, e, device_id))
            self.cmd_topic = str(SparkplugTopic.device(MessageType.DCMD, g, e, device_id))
            self.label = f"device {g}/{e}/{device_id}"

    def add_metric(
        self,
        name: str,
        datatype: DataType | str | int,
        value: Any = None,
        *,
        writable: bool = False,
        deadband: float | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
    ) -> EdgeMetric:
        """Validate and declare a metric of this node or device (see EdgeNode.add_node_metric)."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.label}: a metric name must be a non-empty string, got {name!r}")
        dt = DataType.parse(datatype)
        if dt in _NOT_METRIC_TYPES:
            raise ConfigError(f"{self.label}: metric {name!r} cannot have datatype {dt.name} in this edge node engine")
        if name.lower() in self._lower_names or name.lower() in self.node._reserved_names(self.device_id):
            # Sparkplug is case sensitive, but hosts and databases often are not (spec 5.2): refuse 'a' next to 'A'.
            raise ConfigError(f"{self.label}: metric {name!r} is already declared (names are compared ignoring case)")
        if deadband is not None:
            if dt not in NUMERIC_TYPES:
                raise ConfigError(f"{self.label}: metric {name!r} is {dt.name}; a deadband needs a numeric datatype")
            if deadband < 0:
                raise ConfigError(f"{self.label}: metric {name!r} deadband must be >= 0, got {deadband}")
        try:
            value = coerce(dt, value)
            props = {k: _infer_property(v) for k, v in (properties or {}).items()} or None
            if props and QUALITY in props:
                raise ConfigError(f"{self.label}: metric {name!r}: set quality through update(), not as a property")
            # Encode once now so a bad value or property fails here, not in the middle of a birth.
            encode_metric(pb.Payload.Metric(), Metric(name, dt, value, properties=props))
        except PayloadError as exc:
            raise ConfigError(f"{self.label}: metric {name!r}: {exc}") from None
        metric = EdgeMetric(
            name,
            dt,
            self.node._next_alias(),
            value,
            writable=writable,
            deadband=deadband,
            properties=props,
            timestamp=timestamp,
            device_id=self.device_id,
        )
        self.metrics[name] = metric
        self._lower_names.add(name.lower())
        if metric.alias is not None:
            self.node._by_alias[metric.alias] = metric
        self.node._metric_added(self)
        return metric


class EdgeDevice:
    """A Sparkplug device behind an edge node; declare its metrics with add_metric()."""

    def __init__(self, target: _Target) -> None:
        self._target = target

    @property
    def device_id(self) -> str:
        """The Sparkplug device id."""
        return self._target.device_id  # type: ignore[return-value]

    @property
    def online(self) -> bool:
        """Whether the device is reported alive (DBIRTH) rather than dead (DDEATH)."""
        return self._target.online

    @property
    def metrics(self) -> Mapping[str, EdgeMetric]:
        """The device's declared metrics by name, with their last reported values."""
        return self._target.metrics

    def add_metric(
        self,
        name: str,
        datatype: DataType | str | int,
        value: Any = None,
        *,
        writable: bool = False,
        deadband: float | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
    ) -> EdgeMetric:
        """Declare a metric; when the node is online this publishes a new DBIRTH describing it."""
        return self._target.add_metric(
            name, datatype, value, writable=writable, deadband=deadband, properties=properties, timestamp=timestamp
        )


@dataclass
class EdgeStats:
    """Counters of one EdgeNode since it was created."""

    published: int = 0  # MQTT messages handed to the broker connection (births, DATA, DDEATH, NDEATH)
    data_messages: int = 0  # live NDATA/DDATA
    metrics_published: int = 0  # metric values in live DATA
    births: int = 0  # NBIRTH + DBIRTH
    rebirths_requested: int = 0  # NCMD Node Control/Rebirth received
    writes_accepted: int = 0
    writes_rejected: int = 0
    stored: int = 0  # DATA messages written to the outbox
    replayed: int = 0  # stored messages re-published as historical
    dropped: int = 0  # DATA lost: outbox cap, store_forward off, or no longer declared
    confirmed: int = 0  # DATA messages the broker is known to have processed
    connects: int = 0  # MQTT sessions established
    reconnects: int = 0  # sessions after the first
    connect_failures: int = 0
    state_ignored: int = 0  # STATE messages that were stale, malformed or for another host


class EdgeNode:
    """A Sparkplug B 3.0 edge node: run() keeps its session alive; update() reports values by exception."""

    def __init__(
        self,
        broker: BrokerUrl,
        group_id: str,
        edge_node_id: str,
        *,
        state_dir: Path,
        primary_host_id: str | None = None,
        client_id: str | None = None,
        scan_rate_ms: int | None = None,
        store_forward: bool = True,
        on_write: WriteHandler | None = None,
        keepalive: int = 30,
        accept_legacy_state: bool = False,
        outbox_max_messages: int = DEFAULT_MAX_MESSAGES,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        confirm_interval_s: float = 0.1,
        replay_chunk: int = 200,
        max_unconfirmed: int = 20_000,
    ) -> None:
        self.broker = broker
        self.group_id = validate_id("group id", group_id)
        self.edge_node_id = validate_id("edge node id", edge_node_id)
        self.primary_host_id = validate_id("host id", primary_host_id) if primary_host_id is not None else None
        self.client_id = client_id or f"plantbus-edge-{group_id}-{edge_node_id}"
        self.store_forward = store_forward
        self.keepalive = keepalive
        self.accept_legacy_state = accept_legacy_state
        self.stats = EdgeStats()
        self._on_write = on_write
        self._backoff = (backoff_min_s, backoff_max_s)
        self._confirm_interval = confirm_interval_s
        self._replay_chunk = replay_chunk
        self._max_unconfirmed = max_unconfirmed
        self._random = random.Random()

        for kind, value in (("group id", group_id), ("edge node id", edge_node_id)):
            if value in (".", ".."):
                raise ConfigError(f"Sparkplug {kind} {value!r} would escape the state folder; choose another name")
        self.state_path = Path(state_dir) / "sparkplug" / group_id / edge_node_id
        self.state_path.mkdir(parents=True, exist_ok=True)
        self._bdseq_store = BdSeqStore(self.state_path / "bdseq")
        self._outbox = Outbox(self.state_path / "outbox.sqlite3", outbox_max_messages)
        self._bdseq: int | None = None

        g, e = group_id, edge_node_id
        self._nbirth_topic = str(SparkplugTopic.node(MessageType.NBIRTH, g, e))
        self._ndeath_topic = str(SparkplugTopic.node(MessageType.NDEATH, g, e))
        self._ncmd_topic = str(SparkplugTopic.node(MessageType.NCMD, g, e))
        # Never subscribed: the filter the confirmation barrier unsubscribes from (module docstring).
        self._barrier_topic = str(SparkplugTopic.node(MessageType.NDATA, g, e))
        self._state_topic = str(SparkplugTopic.state(primary_host_id)) if primary_host_id else None
        self._legacy_state_topic = (
            legacy_state_topic(primary_host_id) if primary_host_id and accept_legacy_state else None
        )

        self._alias_counter = 0
        self._by_alias: dict[int, EdgeMetric] = {}
        self._node = _Target(self, None)
        self._devices: dict[str, _Target] = {}
        self._device_ids_lower: set[str] = set()
        # Node Control metrics live apart from the owner's node metrics: update() must not touch bdSeq.
        self._control: dict[str, EdgeMetric] = {}
        for name, dt, value, alias in (
            (BDSEQ, DataType.Int64, 0, True),
            (REBIRTH, DataType.Boolean, False, False),  # no alias: any host must be able to ask (spec 5.18)
            (NEXT_SERVER, DataType.Boolean, False, True),
        ):
            self._control[name] = self._make_control(name, dt, value, alias)
        if scan_rate_ms is not None:
            if scan_rate_ms <= 0:
                raise ConfigError(f"edge node {g}/{e}: scan_rate_ms must be positive, got {scan_rate_ms}")
            self._control[SCAN_RATE] = self._make_control(SCAN_RATE, DataType.Int64, int(scan_rate_ms), True)

        # Session state.
        self._client: aiomqtt.Client | None = None
        self._paho: paho.Client | None = None
        self._born = False
        self._born_event = asyncio.Event()
        self._seq = 0
        self._session_end: asyncio.Future[str] | None = None
        self._subscribed: set[str] = set()
        self._birth_pending: set[str | None] = set()
        self._birth_task: asyncio.Task[None] | None = None
        # DATA handed to the connection but not yet confirmed by a barrier: (device_id, alias payload) for
        # live messages, an outbox row id for replayed ones. Totals let concurrent barriers confirm safely.
        self._unconfirmed: collections.deque[tuple[str | None, bytes] | int] = collections.deque()
        self._sent_total = 0
        self._confirmed_total = 0
        self._confirmed_event = asyncio.Event()

        # Primary host STATE, kept across sessions: an old death must not knock a newer session over.
        self._host_online = False
        self._host_last_ts: int | None = None
        self._host_online_ts: int | None = None

        self._writes: asyncio.Queue[tuple[str | None, EdgeMetric, Any]] = asyncio.Queue()
        self._stop_event = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._drop_warned = False

    # ------------------------------------------------------------------ definitions

    def _make_control(self, name: str, dt: DataType, value: Any, alias: bool) -> EdgeMetric:
        metric = EdgeMetric(
            name, dt, self._next_alias() if alias else None, value,
            writable=name != BDSEQ, deadband=None, properties=None, timestamp=None, device_id=None,
        )  # fmt: skip
        if metric.alias is not None:
            self._by_alias[metric.alias] = metric
        return metric

    def _next_alias(self) -> int:
        # Aliases start at 1: some hosts read alias 0 as "no alias".
        self._alias_counter += 1
        return self._alias_counter

    def _reserved_names(self, device_id: str | None) -> set[str]:
        return {name.lower() for name in self._control} if device_id is None else set()

    def add_node_metric(
        self,
        name: str,
        datatype: DataType | str | int,
        value: Any = None,
        *,
        writable: bool = False,
        deadband: float | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
    ) -> EdgeMetric:
        """Declare an edge-node-level metric; when online this triggers a full rebirth describing it."""
        return self._node.add_metric(
            name, datatype, value, writable=writable, deadband=deadband, properties=properties, timestamp=timestamp
        )

    def add_device(self, device_id: str, *, online: bool = True) -> EdgeDevice:
        """Declare a device; when the node is online its DBIRTH follows at once."""
        validate_id("device id", device_id)
        if device_id.lower() in self._device_ids_lower:
            raise ConfigError(
                f"edge node {self.group_id}/{self.edge_node_id}: device {device_id!r} is already declared "
                "(device ids are compared ignoring case)"
            )
        target = _Target(self, device_id)
        target.online = online
        self._devices[device_id] = target
        self._device_ids_lower.add(device_id.lower())
        self._metric_added(target)
        return EdgeDevice(target)

    def device(self, device_id: str) -> EdgeDevice:
        """The declared device `device_id`."""
        return EdgeDevice(self._device_target(device_id))

    @property
    def devices(self) -> list[str]:
        """Ids of the declared devices."""
        return list(self._devices)

    @property
    def node_metrics(self) -> Mapping[str, EdgeMetric]:
        """The owner's edge-node-level metrics by name (Node Control metrics excluded)."""
        return self._node.metrics

    @property
    def online(self) -> bool:
        """True while the node's births are out in the current session (it is visible to hosts)."""
        return self._born

    @property
    def bdseq(self) -> int | None:
        """The bdSeq of the current (or latest) session."""
        return self._bdseq

    @property
    def scan_rate_ms(self) -> int | None:
        """The current Node Control/Scan Rate, or None when the node was created without one."""
        metric = self._control.get(SCAN_RATE)
        return None if metric is None else metric.value

    @property
    def outbox_size(self) -> int:
        """DATA messages waiting in the store-and-forward outbox."""
        return len(self._outbox)

    def _device_target(self, device_id: str) -> _Target:
        try:
            return self._devices[device_id]
        except KeyError:
            raise PlantbusError(
                f"edge node {self.group_id}/{self.edge_node_id} has no device {device_id!r}; "
                "declare it with add_device() first"
            ) from None

    def _metric_added(self, target: _Target) -> None:
        """A definition changed: births must describe every metric, so (re)birth what it belongs to."""
        if not self._born:
            return
        self._schedule_births(None if target.device_id is None else target.device_id)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> asyncio.Task[None]:
        """Run the node in a background task (named for the TaskGroup convention)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"plantbus[edge:{self.group_id}/{self.edge_node_id}].run"
            )
        return self._task

    async def __aenter__(self) -> EdgeNode:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Publish NDEATH, disconnect, and return once run() has finished."""
        self._stop_event.set()
        if self._running:
            await self._finished.wait()
        if self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)

    def close(self) -> None:
        """Release the outbox file (after stop())."""
        self._outbox.close()

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until the births of a session are out."""
        await asyncio.wait_for(self._born_event.wait(), timeout)

    async def run(self) -> None:
        """Connect and keep the Sparkplug session alive, reconnecting forever, until stop() or cancellation."""
        if self._running:
            raise PlantbusError(f"edge node {self.group_id}/{self.edge_node_id} is already running")
        self._running = True
        self._finished.clear()
        worker = asyncio.get_running_loop().create_task(
            self._write_worker(), name=f"plantbus[edge:{self.group_id}/{self.edge_node_id}].writes"
        )
        attempt = 0
        try:
            while not self._stop_event.is_set():
                try:
                    reason = await self._connect_once()
                except (PlantbusError, OSError, RuntimeError):
                    # An edge node must outlive its own surprises (a full disk, a bug); retry with backoff.
                    log.exception("edge node %s/%s session failed; retrying", self.group_id, self.edge_node_id)
                    reason = None
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # aiomqtt may have turned our cancellation into an MqttError on the way out.
                    raise asyncio.CancelledError
                if self._stop_event.is_set():
                    break
                if reason in ("primary host offline", "next server requested"):
                    # Spec: start session establishment over at once (there is no other server to walk to).
                    attempt = 0
                    continue
                if reason is not None:
                    attempt = 0  # the session had been up: the next attempt starts the backoff afresh
                delay = self._backoff_delay(attempt)
                attempt += 1
                try:
                    await asyncio.wait_for(self._stop_event.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            self._running = False
            self._stop_event.clear()  # the object may run() again later
            self._finished.set()

    def _backoff_delay(self, attempt: int) -> float:
        low, high = self._backoff
        cap = min(high, low * (2**attempt))
        # Jitter spreads a fleet of edge nodes that lost the same broker.
        return self._random.uniform(max(low, cap / 2), cap)

    async def _connect_once(self) -> str | None:
        """One CONNECT attempt and, if it succeeds, the session; returns why the session ended (None: no session)."""
        bdseq = self._bdseq_store.next()
        self._bdseq = bdseq
        self._control[BDSEQ].value = bdseq
        will = aiomqtt.Will(self._ndeath_topic, self._ndeath_payload(bdseq), qos=1, retain=False)
        client = make_client(self.broker, self.client_id, will=will, clean_session=True, keepalive=self.keepalive)
        reason: str | None = None
        try:
            async with client:
                self.stats.connects += 1
                if self.stats.connects > 1:
                    self.stats.reconnects += 1
                if self._failing_since is not None:
                    log.info(
                        "edge node %s/%s reconnected to %s after %.1f s",
                        self.group_id, self.edge_node_id, self.broker,
                        asyncio.get_running_loop().time() - self._failing_since,
                    )  # fmt: skip
                    self._failing_since = None
                reason = "connection lost"
                reason = await self._session(client, bdseq)
        except aiomqtt.MqttError as exc:
            if reason is None:
                self.stats.connect_failures += 1
            if self._failing_since is None:
                # Log when the trouble starts, not on every retry.
                self._failing_since = asyncio.get_running_loop().time()
                log.warning(
                    "edge node %s/%s cannot reach the broker %s (%s); storing data and retrying",
                    self.group_id, self.edge_node_id, self.broker, exc,
                )  # fmt: skip
        finally:
            self._end_session_state()
        return reason

    async def _session(self, client: aiomqtt.Client, bdseq: int) -> str:
        loop = asyncio.get_running_loop()
        self._client = client
        # The synchronous publish path (module docstring); aiomqtt 2.5 keeps its paho client here.
        self._paho = client._client  # noqa: SLF001
        sock = self._paho.socket()
        if isinstance(sock, socket.socket):
            # Without it, Nagle holds back every DATA after the first of a burst until the broker's delayed
            # ACK (40 ms on Linux): measured 42 ms median latency for 10 devices ticking together.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._session_end = loop.create_future()
        self._host_online = False
        self._seq = 0
        name = f"plantbus[edge:{self.group_id}/{self.edge_node_id}]"

        subscriptions = [(self._ncmd_topic, 1)]
        subscriptions += [(t.cmd_topic, 1) for t in self._devices.values()]
        if self._state_topic is not None:
            subscriptions.append((self._state_topic, 1))
        if self._legacy_state_topic is not None:
            subscriptions.append((self._legacy_state_topic, 1))
        tasks: list[asyncio.Task[Any]] = []
        try:
            # Spec 5: NCMD (and DCMD, STATE) subscribed before any birth.
            await client.subscribe(subscriptions)
            self._subscribed = set(self._devices)
            reader = loop.create_task(self._read(client), name=f"{name}.read")
            stop_wait = loop.create_task(self._stop_event.wait())
            tasks += [
                reader,
                stop_wait,
                loop.create_task(self._confirm_loop(client), name=f"{name}.confirm"),
                loop.create_task(self._replay_loop(client), name=f"{name}.replay"),
            ]
            if self.primary_host_id is None:
                await self._births(full=True)
            else:
                log.info(
                    "edge node %s/%s connected (bdSeq %d); waiting for primary host %r to be online",
                    self.group_id, self.edge_node_id, bdseq, self.primary_host_id,
                )  # fmt: skip
            done, _ = await asyncio.wait({reader, self._session_end, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                exc = reader.exception()
                if isinstance(exc, aiomqtt.MqttError):
                    log.warning("edge node %s/%s lost the broker: %s", self.group_id, self.edge_node_id, exc)
                    return "connection lost"
                if exc is not None:
                    raise exc
                return "connection lost"
            reason = self._session_end.result() if self._session_end.done() else "stopped"
            await self._say_goodbye(client, bdseq, reason)
            return reason
        except asyncio.CancelledError:
            # Cancelled like any task under a TaskGroup: still tell the hosts, then let go.
            await self._say_goodbye(client, bdseq, "cancelled")
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _say_goodbye(self, client: aiomqtt.Client, bdseq: int, reason: str) -> None:
        """Intentional disconnect: NDEATH (QoS 1, acknowledged) before the DISCONNECT packet."""
        self._born = False
        self._born_event.clear()
        try:
            await client.publish(self._ndeath_topic, self._ndeath_payload(bdseq), qos=1, retain=False, timeout=5)
        except aiomqtt.MqttError as exc:
            log.warning("edge node %s/%s could not publish NDEATH (%s): %s", self.group_id, self.edge_node_id, reason, exc)
            return
        self.stats.published += 1
        # The PUBACK came after every earlier PUBLISH was processed: all DATA so far is delivered.
        self._confirm_upto(self._sent_total)
        log.info("edge node %s/%s sent NDEATH (bdSeq %d): %s", self.group_id, self.edge_node_id, bdseq, reason)

    def _end_session_state(self) -> None:
        self._born = False
        self._born_event.clear()
        self._node.born = False
        for target in self._devices.values():
            target.born = False
        self._client = None
        self._paho = None
        self._birth_pending.clear()
        if self._birth_task is not None:
            self._birth_task.cancel()
            self._birth_task = None
        self._stash_unconfirmed()

    def _ndeath_payload(self, bdseq: int) -> bytes:
        ts = now_ms()
        return encode_payload(Payload(timestamp=ts, metrics=[Metric(BDSEQ, DataType.Int64, bdseq, timestamp=ts)]))

    # ------------------------------------------------------------------ births

    def _schedule_births(self, key: str | None) -> None:
        """Queue a birth: None for the full NBIRTH+DBIRTH sequence, a device id for that DBIRTH."""
        self._birth_pending.add(key)
        if self._birth_task is None or self._birth_task.done():
            self._birth_task = asyncio.get_running_loop().create_task(self._pending_births())

    async def _pending_births(self) -> None:
        await asyncio.sleep(0)  # several add_metric() calls in a row become one birth
        while self._birth_pending and self._client is not None:
            full = None in self._birth_pending
            if not full and not self._born:
                return  # device births ride on the node's next full birth
            if full and not self._born and self.primary_host_id is not None and not self._host_online:
                return  # the STATE online message will schedule it
            devices = {d for d in self._birth_pending if d is not None}
            self._birth_pending.clear()
            try:
                await self._births(full=full, devices=devices)
            except aiomqtt.MqttError:
                return  # the session is ending; the next one births everything

    async def _await_births(self) -> None:
        task = self._birth_task
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def _births(self, *, full: bool, devices: set[str] | None = None) -> None:
        """NBIRTH (if full) then the DBIRTHs of all online devices (or of `devices`)."""
        client = self._client
        if client is None or (not full and not self._born):
            return
        targets = [t for t in self._devices.values() if t.online and (full or t.device_id in (devices or ()))]
        missing = [t for t in targets if t.device_id not in self._subscribed]
        if missing:
            # A device declared after CONNECT: its DCMD subscription must exist before its DBIRTH.
            await client.subscribe([(t.cmd_topic, 1) for t in missing])
            self._subscribed.update(t.device_id for t in missing)  # type: ignore[misc]
            if self._client is not client:
                return
        # From here on nothing awaits: no DATA can slip in between the births.
        if full:
            self._seq = 0
            self._send(self._nbirth_topic, self._nbirth_payload())
            self._node.born = True
            self._born = True
            self.stats.births += 1
            self._birth_pending.discard(None)
        for target in targets:
            self._send(target.birth_topic, self._dbirth_payload(target))
            target.born = True
            self.stats.births += 1
            self._birth_pending.discard(target.device_id)
        if full:
            self._born_event.set()
            self._drop_warned = False
            log.info(
                "edge node %s/%s born (bdSeq %s, %d device(s))",
                self.group_id, self.edge_node_id, self._bdseq, len(targets),
            )  # fmt: skip

    def _birth_metric(self, metric: EdgeMetric, ts: int) -> Metric:
        props = dict(metric.properties) if metric.properties else {}
        if metric.quality != Quality.GOOD:
            props[QUALITY] = PropertyValue(DataType.Int32, metric.quality)
        return Metric(
            name=metric.name,
            datatype=metric.datatype,
            value=metric.value,
            alias=metric.alias,
            timestamp=metric.timestamp if metric.timestamp is not None else ts,
            properties=props or None,
        )

    def _nbirth_payload(self) -> bytes:
        ts = now_ms()
        control = [Metric(m.name, m.datatype, m.value, alias=m.alias, timestamp=ts) for m in self._control.values()]
        metrics = control + [self._birth_metric(m, ts) for m in self._node.metrics.values()]
        return encode_payload(Payload(timestamp=ts, metrics=metrics, seq=self._take_seq()))

    def _dbirth_payload(self, target: _Target) -> bytes:
        ts = now_ms()
        metrics = [self._birth_metric(m, ts) for m in target.metrics.values()]
        return encode_payload(Payload(timestamp=ts, metrics=metrics, seq=self._take_seq()))

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) & 0xFF
        return seq

    def _send(self, topic: str, payload: bytes) -> bool:
        """Hand a QoS 0, non-retained message to the connection, in order; False when there is none."""
        client = self._paho
        if client is None:
            return False
        if client.publish(topic, payload, 0, False).rc != paho.MQTT_ERR_SUCCESS:
            return False
        self.stats.published += 1
        return True

    async def set_device_online(self, device_id: str, online: bool) -> None:
        """Report a device reachable (DBIRTH with its current values) or lost (DDEATH)."""
        target = self._device_target(device_id)
        if target.online == online:
            return
        target.online = online
        if not self._born:
            return
        if online:
            await self._births(full=False, devices={device_id})
        else:
            target.born = False
            payload = encode_payload(Payload(timestamp=now_ms(), seq=self._take_seq()))
            self._send(target.death_topic, payload)

    # ------------------------------------------------------------------ data

    async def update(
        self,
        device_id: str | None,
        values: Mapping[str, Any],
        timestamp: int | None = None,
        *,
        quality: Quality | int | Mapping[str, Quality | int] | None = None,
        force: bool = False,
    ) -> int:
        """Report new values by exception (one NDATA/DDATA for all changes); returns how many metrics changed.

        `quality` marks the values (one code for all, or per name); None means GOOD. A value None is
        is_null. `force` reports every given metric even when unchanged.
        """
        target = self._node if device_id is None else self._device_target(device_id)
        if self._birth_pending:
            await self._await_births()
        ts = now_ms() if timestamp is None else timestamp
        changed = self._apply(target, values, ts, quality, force)
        if changed:
            self._emit(target, changed)
            if self._sent_total - self._confirmed_total > self._max_unconfirmed and self._client is not None:
                # Backpressure: let the broker catch up instead of queueing without bound.
                self._confirmed_event.clear()
                try:
                    await asyncio.wait_for(self._confirmed_event.wait(), 10)
                except TimeoutError:
                    pass
        return len(changed)

    async def set_quality(
        self, device_id: str | None, quality: Quality | int, names: list[str] | None = None
    ) -> int:
        """Mark metrics (all of the target, or `names`) with a quality, keeping their values; e.g. BAD on a failed poll."""
        target = self._node if device_id is None else self._device_target(device_id)
        chosen = list(target.metrics) if names is None else names
        return await self.update(device_id, {n: self._metric_of(target, n).value for n in chosen}, quality=quality)

    def _metric_of(self, target: _Target, name: str) -> EdgeMetric:
        metric = target.metrics.get(name)
        if metric is None:
            if target.device_id is None and name == SCAN_RATE and SCAN_RATE in self._control:
                return self._control[SCAN_RATE]
            raise PayloadError(f"{target.label} has no metric {name!r}; declare it with add_metric() first")
        return metric

    def _apply(
        self,
        target: _Target,
        values: Mapping[str, Any],
        ts: int,
        quality: Quality | int | Mapping[str, Quality | int] | None,
        force: bool,
    ) -> list[tuple[EdgeMetric, bool]]:
        # Validate everything before touching any state, so a bad value leaves the metrics as they were.
        staged = []
        metrics = target.metrics
        per_name = isinstance(quality, Mapping)
        q = 192 if quality is None or per_name else int(quality)  # type: ignore[arg-type]
        for name, value in values.items():
            metric = metrics.get(name) or self._metric_of(target, name)
            kind = metric.kind
            # The common cases need no coerce(): they are exactly what the protobuf field takes.
            if value is None or (kind == _DOUBLE and type(value) is float) or (kind == _BOOL and type(value) is bool):
                pass
            elif kind == _LONG and type(value) is int and metric.low <= value <= metric.high:
                pass
            else:
                try:
                    value = coerce(metric.datatype, value)
                except PayloadError as exc:
                    raise PayloadError(f"{target.label}, metric {name!r}: {exc}") from None
            if per_name:
                q = int(quality.get(name, Quality.GOOD))  # type: ignore[union-attr]
            if q != 192 and q != 0 and q != 500:
                raise PayloadError(f"quality {q} for {name!r}: use Quality.GOOD (192), BAD (0) or STALE (500)")
            staged.append((metric, value, q))
        changed = []
        for metric, value, q in staged:
            quality_changed = q != metric.quality
            if force or quality_changed or metric.differs(value):
                metric.value = value
                metric.timestamp = ts
                metric.quality = q
                changed.append((metric, quality_changed))
        return changed

    def _emit(self, target: _Target, changed: list[tuple[EdgeMetric, bool]]) -> None:
        if self._born and target.born:
            msg = pb.Payload()
            msg.timestamp = now_ms()
            _fill_metrics(msg, changed, named=False)
            msg.seq = self._take_seq()
            payload = msg.SerializeToString()
            if self._send(target.data_topic, payload):
                self._unconfirmed.append((target.device_id, payload))
                self._sent_total += 1
                self.stats.data_messages += 1
                self.stats.metrics_published += len(changed)
                return
        if not target.online:
            return  # a dead device has no data to keep; its next DBIRTH carries the current values
        if not self.store_forward:
            self.stats.dropped += 1
            return
        msg = pb.Payload()
        msg.timestamp = now_ms()
        _fill_metrics(msg, changed, named=True)
        self._store([(target.device_id, msg.SerializeToString())])

    def _store(self, rows: list[tuple[str | None, bytes]]) -> None:
        dropped = self._outbox.append_many(rows)
        self.stats.stored += len(rows)
        if dropped:
            if not self._drop_warned:
                self._drop_warned = True  # once per outage, not once per message
                log.warning(
                    "edge node %s/%s outbox is full (%d messages): dropped the %d oldest",
                    self.group_id, self.edge_node_id, self._outbox.max_messages, dropped,
                )  # fmt: skip
            self.stats.dropped += dropped

    def _stash_unconfirmed(self) -> None:
        """The session ended: live DATA the broker may not have processed goes to the outbox as historical."""
        live = [entry for entry in self._unconfirmed if isinstance(entry, tuple)]
        self._unconfirmed.clear()
        self._confirmed_total = self._sent_total
        if not live:
            return
        if not self.store_forward:
            self.stats.dropped += len(live)
            return
        rows = []
        for device_id, payload in live:
            msg = parse_payload(payload)
            msg.ClearField("seq")
            for pm in msg.metrics:
                metric = self._by_alias[pm.alias]
                pm.name = metric.name
                pm.ClearField("alias")
                pm.datatype = metric.datatype
                pm.is_historical = True
            rows.append((device_id, msg.SerializeToString()))
        self._store(rows)

    def _confirm_upto(self, mark: int) -> None:
        ids = []
        while self._confirmed_total < mark and self._unconfirmed:
            entry = self._unconfirmed.popleft()
            self._confirmed_total += 1
            self.stats.confirmed += 1
            if isinstance(entry, int):
                ids.append(entry)
        self._confirmed_total = max(self._confirmed_total, min(mark, self._sent_total))
        if ids:
            self._outbox.delete(ids)
        self._confirmed_event.set()

    async def _barrier(self, client: aiomqtt.Client) -> None:
        mark = self._sent_total
        if mark == self._confirmed_total:
            return
        await client.unsubscribe(self._barrier_topic, timeout=30)
        if self._client is client:
            self._confirm_upto(mark)

    async def _confirm_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self._confirm_interval)
            try:
                await self._barrier(client)
            except aiomqtt.MqttError as exc:
                # A slow broker: try again; a dead connection is the reader's to notice.
                log.debug("edge node %s/%s confirmation barrier failed: %s", self.group_id, self.edge_node_id, exc)

    async def _replay_loop(self, client: aiomqtt.Client) -> None:
        """After the births, re-publish stored DATA as historical in chunks, each confirmed before the next."""
        cursor = 0
        while True:
            await self._born_event.wait()
            rows = self._outbox.read_after(cursor, self._replay_chunk)
            if not rows:
                return
            lost = []
            for row_id, device_id, blob in rows:
                if not self._born:
                    break  # a rebirth is under way; resume from this row once it is done
                cursor = row_id
                target = self._node if device_id is None else self._devices.get(device_id)
                if target is None:
                    lost.append(row_id)  # the device is no longer declared
                    continue
                if not target.born:
                    continue  # a dead device: keep the row for a later session
                payload = self._historical(target, blob)
                if payload is None:
                    lost.append(row_id)
                    continue
                if not self._send(target.data_topic, payload):
                    return
                self._unconfirmed.append(row_id)
                self._sent_total += 1
                self.stats.replayed += 1
            if lost:
                self._outbox.delete(lost)
                self.stats.dropped += len(lost)
                log.warning(
                    "edge node %s/%s dropped %d stored message(s) whose device or metrics are no longer declared",
                    self.group_id, self.edge_node_id, len(lost),
                )  # fmt: skip
            # Paces the replay and lets live DATA through between chunks.
            await self._barrier(client)
            await asyncio.sleep(0)

    def _historical(self, target: _Target, blob: bytes) -> bytes | None:
        stored = parse_payload(blob)
        msg = pb.Payload()
        msg.timestamp = now_ms()
        for pm in stored.metrics:
            metric = target.metrics.get(pm.name)
            if metric is None and target.device_id is None:
                metric = self._control.get(pm.name) if pm.name == SCAN_RATE else None
            if metric is None or metric.datatype != pm.datatype or metric.alias is None:
                continue
            out = msg.metrics.add()
            out.CopyFrom(pm)
            out.ClearField("name")
            out.ClearField("datatype")
            out.alias = metric.alias
            out.is_historical = True
        if not msg.metrics:
            return None
        msg.seq = self._take_seq()
        return msg.SerializeToString()

    # ------------------------------------------------------------------ incoming: commands and STATE

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            raw = message.payload
            payload = bytes(raw) if isinstance(raw, (bytes, bytearray)) else b"" if raw is None else str(raw).encode()
            try:
                await self._dispatch(topic, payload)
            except aiomqtt.MqttError:
                raise
            except Exception:
                # A malformed message must never take the session down.
                log.exception("edge node %s/%s failed to handle a message on %s", self.group_id, self.edge_node_id, topic)

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        if topic == self._state_topic:
            self._on_state(payload)
        elif topic == self._legacy_state_topic:
            self._on_legacy_state(payload)
        elif topic == self._ncmd_topic:
            await self._on_command(None, payload)
        else:
            try:
                parsed = SparkplugTopic.parse(topic)
            except PlantbusError:
                parsed = None
            if (
                parsed is None
                or parsed.message_type is not MessageType.DCMD
                or parsed.group_id != self.group_id
                or parsed.edge_node_id != self.edge_node_id
            ):
                log.debug("edge node %s/%s ignores a message on %s", self.group_id, self.edge_node_id, topic)
                return
            await self._on_command(parsed.device_id, payload)

    def _reject(self, where: str, why: str) -> None:
        self.stats.writes_rejected += 1
        log.warning("edge node %s/%s rejected a write to %s: %s", self.group_id, self.edge_node_id, where, why)

    async def _on_command(self, device_id: str | None, payload: bytes) -> None:
        where = "the edge node" if device_id is None else f"device {device_id!r}"
        try:
            msg = parse_payload(payload)
        except PayloadError as exc:
            self._reject(where, str(exc))
            return
        target = self._node if device_id is None else self._devices.get(device_id)
        if target is None:
            self._reject(where, "no such device")
            return
        for pm in msg.metrics:
            metric = self._resolve(target, pm)
            label = pm.name if pm.HasField("name") else f"alias {pm.alias}" if pm.HasField("alias") else "a nameless metric"
            if metric is None:
                self._reject(where, f"{label} is not declared")
                continue
            value, error = self._command_value(metric, pm)
            if error is not None:
                self._reject(where, f"{metric.name}: {error}")
                continue
            if device_id is None and metric.name == REBIRTH:
                if value:
                    await self._on_rebirth()
                continue
            if device_id is None and metric.name == NEXT_SERVER:
                if value and self._session_end is not None and not self._session_end.done():
                    self._session_end.set_result("next server requested")
                continue
            if not metric.writable:
                self._reject(where, f"{metric.name} is read-only")
                continue
            if metric.name == SCAN_RATE and device_id is None and value <= 0:
                self._reject(where, f"{SCAN_RATE} must be a positive number of milliseconds, got {value}")
                continue
            self._writes.put_nowait((device_id, metric, value))

    def _resolve(self, target: _Target, pm: Any) -> EdgeMetric | None:
        if pm.HasField("name"):
            metric = target.metrics.get(pm.name)
            if metric is None and target.device_id is None:
                metric = self._control.get(pm.name)
            return metric
        if pm.HasField("alias"):
            metric = self._by_alias.get(pm.alias)
            if metric is not None and metric.device_id == target.device_id:
                return metric
        return None

    def _command_value(self, metric: EdgeMetric, pm: Any) -> tuple[Any, str | None]:
        kind = pm.WhichOneof("value")
        if pm.is_null or kind is None:
            return None, "a write needs a value, got null"
        try:
            sent_type = DataType.parse(pm.datatype) if pm.HasField("datatype") and pm.datatype else metric.datatype
            value = decode_value(sent_type, kind, getattr(pm, kind))
            return coerce(metric.datatype, value), None
        except PayloadError as exc:
            return None, f"not a valid {metric.datatype.name} ({exc})"

    async def _on_rebirth(self) -> None:
        self.stats.rebirths_requested += 1
        if not self._born:
            return  # births are about to happen anyway
        log.info("edge node %s/%s: rebirth requested", self.group_id, self.edge_node_id)
        self._born = False  # no DATA from the request until the new births are out
        self._born_event.clear()
        self._birth_pending.clear()
        await self._births(full=True)

    async def _write_worker(self) -> None:
        while True:
            device_id, metric, value = await self._writes.get()
            try:
                if self._on_write is not None:
                    result = self._on_write(device_id, metric.name, value)
                    if inspect.isawaitable(result):
                        await result
            except Exception as exc:  # the owner's handler failed: the write did not happen
                self._reject("the edge node" if device_id is None else f"device {device_id!r}", f"{metric.name}: {exc}")
                continue
            self.stats.writes_accepted += 1
            try:
                await self.update(device_id, {metric.name: value}, force=True)
            except PlantbusError as exc:
                log.warning("edge node %s/%s could not report a write back: %s", self.group_id, self.edge_node_id, exc)

    def _on_state(self, payload: bytes) -> None:
        try:
            data = json.loads(payload)
            online = data["online"]
            ts = data["timestamp"]
            if not isinstance(online, bool) or isinstance(ts, bool) or not isinstance(ts, (int, float)):
                raise ValueError("online must be a boolean and timestamp a number")
        except (ValueError, KeyError, TypeError) as exc:
            self.stats.state_ignored += 1
            log.warning("edge node %s/%s ignores a malformed STATE %r: %s", self.group_id, self.edge_node_id, payload[:100], exc)
            return
        self._apply_state(online, int(ts))

    def _on_legacy_state(self, payload: bytes) -> None:
        text = payload.strip().upper()
        if text not in (b"ONLINE", b"OFFLINE"):
            self.stats.state_ignored += 1
            return
        self._apply_state(text == b"ONLINE", None)

    def _apply_state(self, online: bool, ts: int | None) -> None:
        if ts is not None and self._host_last_ts is not None and ts < self._host_last_ts:
            # Older than what we know: e.g. the Will of a host session that has since been replaced.
            self.stats.state_ignored += 1
            log.info(
                "edge node %s/%s ignores a stale STATE of %r (timestamp %d < %d)",
                self.group_id, self.edge_node_id, self.primary_host_id, ts, self._host_last_ts,
            )  # fmt: skip
            return
        if ts is not None:
            self._host_last_ts = ts
        if online:
            if ts is not None:
                self._host_online_ts = ts
            self._host_online = True
            if self._client is not None and not self._born:
                self._schedule_births(None)
            return
        self._host_online = False
        if self._born and self._session_end is not None and not self._session_end.done():
            # Spec 5: NDEATH, disconnect, and start session establishment over.
            self._session_end.set_result("primary host offline")


def _fill_metrics(msg: Any, changed: list[tuple[EdgeMetric, bool]], *, named: bool) -> None:
    """Write changed metrics into a protobuf Payload: aliases for live DATA, names+datatypes for the outbox."""
    add = msg.metrics.add
    for metric, quality_changed in changed:
        pm = add()
        if named:
            pm.name = metric.name
            pm.datatype = metric.datatype
            pm.is_historical = True
        else:
            pm.alias = metric.alias
        pm.timestamp = metric.timestamp
        value = metric.value
        kind = metric.kind
        if value is None:
            pm.is_null = True
        elif kind == _DOUBLE:
            pm.double_value = value
        elif kind == _LONG:
            pm.long_value = value & _M64
        elif kind == _INT:
            pm.int_value = value & _M32
        elif kind == _BOOL:
            pm.boolean_value = value
        elif kind == _STRING:
            pm.string_value = value
        elif kind == _FLOAT:
            pm.float_value = value
        else:
            encode_metric(pm, Metric(None, metric.datatype, value))
            if not named:
                pm.ClearField("datatype")  # DATA carries no datatype (spec 6.4.6)
        if quality_changed or metric.quality != 192:
            props = pm.properties
            props.keys.append(QUALITY)
            pv = props.values.add()
            pv.type = DataType.Int32
            pv.int_value = metric.quality & _M32


__all__ = [
    "BDSEQ",
    "NEXT_SERVER",
    "QUALITY",
    "REBIRTH",
    "SCAN_RATE",
    "EdgeDevice",
    "EdgeMetric",
    "EdgeNode",
    "EdgeStats",
    "Quality",
    "WriteHandler",
]
