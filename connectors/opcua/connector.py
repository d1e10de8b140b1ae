"""The OPC UA connector: an asyncua client session feeding a Sparkplug edge node, kept alive across server restarts.

One `OpcUaConnector` owns one `EdgeNode` (one Sparkplug device per configured device) and one OPC UA session at
a time. A session resolves every tag (NodeId or browse path), reads its current value, then either creates a
subscription with one monitored item per tag (sampling interval and deadband per tag or device) or polls.
When the session is lost (the client's watchdog, a failed request, the subscription reporting a bad status)
every tag turns BAD, the client is dropped and a fresh one connects after a jittered backoff and recreates the
subscription from scratch: a restarted server has forgotten the old one, so nothing is reused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, Node, ua
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from connectors.base import ConnectorContext
from connectors.opcua.config import Deadband, Device, OpcUaSettings, Tag
from hub.errors import AuthenticationFailed, ConfigError, PayloadError, PlantbusError, WriteError
from hub.sparkplug.edge import EdgeNode, Quality
from hub.sparkplug.payload import ARRAY_TYPES, DataType, coerce

log = logging.getLogger(__name__)

_VT = ua.VariantType
SCALAR_TYPES: dict[ua.VariantType, DataType] = {
    _VT.Boolean: DataType.Boolean, _VT.SByte: DataType.Int8, _VT.Byte: DataType.UInt8,
    _VT.Int16: DataType.Int16, _VT.UInt16: DataType.UInt16, _VT.Int32: DataType.Int32,
    _VT.UInt32: DataType.UInt32, _VT.Int64: DataType.Int64, _VT.UInt64: DataType.UInt64,
    _VT.Float: DataType.Float, _VT.Double: DataType.Double, _VT.String: DataType.String,
    _VT.DateTime: DataType.DateTime, _VT.Guid: DataType.UUID, _VT.ByteString: DataType.Bytes,
    _VT.XmlElement: DataType.String, _VT.LocalizedText: DataType.Text, _VT.StatusCode: DataType.UInt32,
}  # fmt: skip
ARRAY_OF: dict[ua.VariantType, DataType] = {
    _VT.Boolean: DataType.BooleanArray, _VT.SByte: DataType.Int8Array, _VT.Byte: DataType.UInt8Array,
    _VT.Int16: DataType.Int16Array, _VT.UInt16: DataType.UInt16Array, _VT.Int32: DataType.Int32Array,
    _VT.UInt32: DataType.UInt32Array, _VT.Int64: DataType.Int64Array, _VT.UInt64: DataType.UInt64Array,
    _VT.Float: DataType.FloatArray, _VT.Double: DataType.DoubleArray, _VT.String: DataType.StringArray,
    _VT.DateTime: DataType.DateTimeArray,
}  # fmt: skip
_CURRENT_WRITE = 0x02  # AccessLevel bit (OPC UA Part 3, 8.57)
# ActivateSession refusals: the identity is wrong, or of a kind the server does not take (e.g. anonymous).
_AUTH_ERRORS = (
    ua.uaerrors.BadUserAccessDenied, ua.uaerrors.BadIdentityTokenRejected, ua.uaerrors.BadIdentityTokenInvalid,
    ua.uaerrors.BadUserSignatureInvalid,
)  # fmt: skip
# CreateMonitoredItems results that refuse the filter, not the node (Part 4 Table 65, Part 8 6.2).
_FILTER_REFUSALS = frozenset({
    ua.StatusCodes.BadFilterNotAllowed, ua.StatusCodes.BadMonitoredItemFilterUnsupported,
    ua.StatusCodes.BadMonitoredItemFilterInvalid, ua.StatusCodes.BadDeadbandFilterInvalid,
})  # fmt: skip
# Errors that mean "this session is gone or never came": retry with backoff.
_SESSION_ERRORS = (OSError, TimeoutError, ConnectionError, ua.UaError, asyncio.IncompleteReadError)


def sparkplug_type(vtype: ua.VariantType, is_array: bool) -> DataType | None:
    """The Sparkplug datatype for an OPC UA variant type (None when Sparkplug has no fitting type)."""
    return (ARRAY_OF if is_array else SCALAR_TYPES).get(vtype)


def quality_of(status: ua.StatusCode | None) -> Quality:
    """OPC UA status severity to Sparkplug quality: Good → GOOD, Uncertain → STALE, Bad → BAD."""
    if status is None:
        return Quality.GOOD
    severity = (status.value >> 30) & 0x3
    return Quality.GOOD if severity == 0 else Quality.STALE if severity == 1 else Quality.BAD


def _ms(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)  # OPC UA DateTime is UTC; asyncua may hand it naive
    return int(value.timestamp() * 1000)


def to_sparkplug(datatype: DataType, value: Any) -> Any:
    """Convert an asyncua value to what the Sparkplug codec takes for `datatype` (raises PayloadError)."""
    if value is None:
        return None
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    elif isinstance(value, ua.StatusCode):
        value = value.value
    elif isinstance(value, dt.datetime):
        value = _ms(value)
    elif isinstance(value, uuid.UUID):
        value = str(value)
    elif datatype in ARRAY_TYPES and isinstance(value, (list, tuple)):
        value = [_ms(v) if isinstance(v, dt.datetime) else v for v in value]
    return coerce(datatype, value)


def to_opcua(vtype: ua.VariantType, is_array: bool, value: Any) -> ua.Variant:
    """Build the variant a write sends, converting Sparkplug representations back (ms → datetime, str → Guid)."""

    def one(v: Any) -> Any:
        if vtype is _VT.DateTime and isinstance(v, int):
            return dt.datetime.fromtimestamp(v / 1000, dt.UTC)
        if vtype is _VT.Guid and isinstance(v, str):
            return uuid.UUID(v)
        if vtype is _VT.LocalizedText and isinstance(v, str):
            return ua.LocalizedText(v)
        return v

    return ua.Variant([one(v) for v in value] if is_array else one(value), vtype)


@dataclass(eq=False)
class TagState:
    """A configured tag and what the current session knows about its node."""

    device: Device
    tag: Tag
    datatype: DataType | None = None
    vtype: ua.VariantType | None = None
    is_array: bool = False
    node: Node | None = None
    server_writable: bool = False
    declared: bool = False
    problem: str | None = None  # why it is BAD, logged once per distinct problem
    deadband_note: str | None = None  # why its deadband is not in effect this session (the tag still flows)
    logged: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        return f"{self.device.device_id}/{self.tag.name}"

    @property
    def address(self) -> str:
        return f"node_id {self.tag.node_id}" if self.tag.node_id else f"browse_path {self.tag.browse_path}"

    def sampling(self) -> float:
        t = self.tag.sampling_interval_ms
        return self.device.sampling_interval_ms if t is None else t

    def deadband(self) -> Deadband | None:
        return self.tag.deadband if self.tag.deadband is not None else self.device.deadband


class _Lost(Exception):
    """The OPC UA session is gone; the message says why."""


class OpcUaConnector:
    """An OPC UA server published as a Sparkplug edge node; `run()` until cancelled."""

    def __init__(
        self,
        name: str,
        settings: OpcUaSettings,
        context: ConnectorContext,
        *,
        edge_options: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.context = context
        self._password = settings.password()  # a missing variable is a configuration error, found now
        self._edge_options = dict(edge_options or {})
        self.edge: EdgeNode | None = None
        self._tags = [TagState(device, tag) for device in settings.devices for tag in device.tags]
        self._by_node: dict[ua.NodeId, list[TagState]] = {}
        self._client: Client | None = None
        self._lost: asyncio.Future[str] | None = None
        self._changes: asyncio.Queue[tuple[TagState, ua.DataValue]] = asyncio.Queue()
        self._random = random.Random()
        self._failing: str | None = None
        self.auth_failed: str | None = None  # the server's refusal of our identity, once it happened
        self.mode_in_use: str | None = None
        self.sessions = 0
        self.changes_received = 0
        self.connected = asyncio.Event()

    # ------------------------------------------------------------------ public

    def diagnostics(self) -> dict[str, Any]:
        """Connection state, mode in use, tag problems and the edge node's counters."""
        return {
            "endpoint": self.settings.endpoint,
            "connected": self.connected.is_set(),
            "mode": self.mode_in_use,
            "sessions": self.sessions,
            "changes_received": self.changes_received,
            "failing": self._failing,
            "auth_failed": self.auth_failed,
            "bad_tags": {t.label: t.problem for t in self._tags if t.problem},
            "deadband_fallbacks": {t.label: t.deadband_note for t in self._tags if t.deadband_note},
            "edge_online": self.edge.online if self.edge is not None else False,
            "edge": vars(self.edge.stats) if self.edge is not None else None,
        }

    async def run(self) -> None:
        """Keep an OPC UA session and the Sparkplug edge node alive until cancelled (NDEATH on the way out)."""
        if all(t.tag.datatype is not None for t in self._tags):
            # Every type is known without the server: be visible (BAD) on Sparkplug even while it is down.
            self._ensure_declared({})
        attempt = 0
        try:
            while True:
                reason = await self._session()
                self.connected.clear()
                await self._mark_all(Quality.BAD)
                if reason is not None:
                    attempt = 0  # the session had been up: start the backoff afresh
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
        finally:
            await self._close_client()
            if self.edge is not None:
                await self.edge.stop()
                self.edge.close()

    # ------------------------------------------------------------------ edge node

    def _make_edge(self) -> EdgeNode:
        s, c = self.settings, self.context
        edge = EdgeNode(
            c.broker, s.group_id, s.edge_node_id, state_dir=c.state_dir, primary_host_id=c.primary_host_id,
            on_write=self._on_write, **self._edge_options,
        )  # fmt: skip
        for device in s.devices:
            edge.add_device(device.device_id)
        return edge

    def _declare(self, t: TagState, datatype: DataType, value: Any = None, quality: Quality = Quality.BAD) -> None:
        assert self.edge is not None
        writable = t.tag.writable and (t.server_writable or t.node is None)
        metric = self.edge.device(t.device.device_id).add_metric(t.tag.name, datatype, value, writable=writable)
        metric.quality = int(quality)  # the birth carries it; there is no earlier DATA to mark
        t.declared = True
        t.datatype = datatype

    def _ensure_declared(self, initial: dict[TagState, ua.DataValue]) -> bool:
        """First time only: declare every tag (server type, else configured, else String) and start the edge node."""
        if self.edge is not None:
            return False
        self.edge = self._make_edge()
        for t in self._tags:
            datatype = t.datatype or (DataType.parse(t.tag.datatype) if t.tag.datatype else None)
            if datatype is None:
                # Unknown now and no type configured: declare it so it shows up BAD; String holds any text.
                datatype = DataType.String
                self._log_once(t, "no-type", "declared as String; set `datatype:` on the tag to declare its real type")
            value, quality = None, Quality.BAD
            if t in initial:
                value, quality = self._convert(t, datatype, initial[t])
            self._declare(t, datatype, value, quality)
        self.edge.start()
        return True

    async def _mark_all(self, quality: Quality) -> None:
        if self.edge is None:
            return
        for device in self.settings.devices:
            names = [t.tag.name for t in self._tags if t.device is device and t.declared]
            if names:
                await self.edge.set_quality(device.device_id, quality, names)

    # ------------------------------------------------------------------ session

    def _backoff(self, attempt: int) -> float:
        low, high = self.settings.reconnect_min_s, self.settings.reconnect_max_s
        cap = min(high, low * (2**attempt))
        # Jitter spreads many connectors that lost the same server.
        return self._random.uniform(max(low, cap / 2), cap)

    def _fail(self, message: str) -> None:
        if self._failing != message:
            log.warning("OPC UA connector %s: %s (retrying with backoff)", self.name, message)
            self._failing = message

    async def _session(self) -> str | None:
        """Connect, resolve, subscribe (or poll) and wait for the session's end; returns why (None: never up)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        client = Client(s.endpoint, timeout=s.request_timeout_s, watchdog_intervall=s.watchdog_interval_s)
        self._client = client
        try:
            await self._secure(client)
            client.connection_lost_callback = self._on_connection_lost
            await asyncio.wait_for(client.connect(), s.request_timeout_s * 2)
        except ConfigError:
            raise
        except _AUTH_ERRORS as exc:
            await self._close_client()
            code = type(exc).__name__
            if s.username is None:
                message = (f"OPC UA server at {s.endpoint} refused an anonymous session ({code}): it wants a login; "
                           "set username and password_env")  # fmt: skip
            elif isinstance(exc, ua.uaerrors.BadUserAccessDenied):
                message = (f"OPC UA server at {s.endpoint} refused user {s.username!r} ({code}): check the user name "
                           f"and the password in ${s.password_env}")  # fmt: skip
            else:
                message = (f"OPC UA server at {s.endpoint} does not take a user-name login for {s.username!r} ({code}):"
                           " check which identity its endpoint accepts")  # fmt: skip
            self._failing = self.auth_failed = message
            raise AuthenticationFailed(message) from None
        except (ua.uaerrors.BadSecurityPolicyRejected, ua.uaerrors.BadSecurityModeRejected,
                ua.uaerrors.BadCertificateInvalid, ua.uaerrors.BadCertificateUntrusted,
                ua.uaerrors.BadSecurityChecksFailed) as exc:  # fmt: skip
            self._fail(
                f"server at {s.endpoint} rejected security {s.security.policy}/{s.security.mode} ({type(exc).__name__}):"
                " check the policy and mode it offers (`plantbus opcua browse`) and that it trusts the client certificate"
            )
            await self._close_client()
            return None
        except _SESSION_ERRORS as exc:
            if isinstance(exc, ua.UaError) and "No matching endpoints" in str(exc):
                # asyncua's way of saying the server offers no endpoint with this policy and mode.
                self._fail(
                    f"server at {s.endpoint} offers no endpoint with security {s.security.policy}/{s.security.mode}:"
                    " pick a policy and mode it offers (the server's endpoint list)"
                )
            else:
                self._fail(f"cannot reach OPC UA server at {s.endpoint} ({exc!r}): check the URL and that the server is on")
            await self._close_client()
            return None
        if self._failing is not None:
            log.info("OPC UA connector %s: connected to %s again", self.name, s.endpoint)
        else:
            log.info("OPC UA connector %s: connected to %s", self.name, s.endpoint)
        self._failing = None
        self.sessions += 1
        consumer = loop.create_task(self._consume(), name=f"plantbus[connector:{self.name}].changes")
        pollers: list[asyncio.Task[None]] = []
        try:
            initial = await self._resolve(client)
            if not self._ensure_declared(dict(initial)):
                await self._publish(initial)
            if s.mode == "subscribe" and await self._subscribe(client):
                self.mode_in_use = "subscribe"
            else:
                self.mode_in_use = "poll"
                pollers = [
                    loop.create_task(self._poll(client, d), name=f"plantbus[connector:{self.name}].poll.{d.device_id}")
                    for d in s.devices
                ]
            self.connected.set()
            reason = await self._lost
        except _SESSION_ERRORS as exc:
            reason = f"request failed: {exc!r}"
        log.warning("OPC UA connector %s: session with %s lost (%s); tags are BAD until it is back", self.name,
                    s.endpoint, reason)  # fmt: skip
        for task in (consumer, *pollers):
            task.cancel()
        await asyncio.gather(consumer, *pollers, return_exceptions=True)
        await self._close_client()
        return reason

    async def _secure(self, client: Client) -> None:
        s = self.settings
        if s.security.policy != "None":
            mode = getattr(ua.MessageSecurityMode, s.security.mode)
            await client.set_security(
                SecurityPolicyBasic256Sha256, str(s.security.certificate), str(s.security.private_key),
                server_certificate=str(s.security.server_certificate) if s.security.server_certificate else None,
                mode=mode,
            )  # fmt: skip
        if s.username is not None:
            client.set_user(s.username)
            if self._password is not None:
                client.set_password(self._password)

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._end_session(f"connection lost: {exc!r}")

    def _end_session(self, reason: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            # The server may be gone: a polite CloseSession must not hold the reconnect up.
            await asyncio.wait_for(client.disconnect(), 2)
        except Exception:  # noqa: BLE001 - whatever the dead transport raises, the client is dropped
            log.debug("OPC UA connector %s: disconnect raised", self.name, exc_info=True)

    # ------------------------------------------------------------------ resolving

    def _log_once(self, t: TagState, key: str, message: str) -> None:
        t.problem = message
        if key not in t.logged:
            t.logged.add(key)
            log.warning("OPC UA connector %s: tag %s (%s): %s", self.name, t.label, t.address, message)

    async def _resolve(self, client: Client) -> list[tuple[TagState, ua.DataValue]]:
        """Find every tag's node and its type; unknown ones stay BAD (logged once, with how to fix it)."""
        self._by_node = {}
        initial = []
        objects = client.nodes.objects
        for t in self._tags:
            t.node = None
            try:
                if t.tag.node_id is not None:
                    node = client.get_node(t.tag.node_id)
                else:
                    path = t.tag.browse_path or ""
                    parts = [p for p in path.split("/") if p]
                    if parts[:1] == ["0:Objects"]:
                        parts = parts[1:]
                    node = await objects.get_child(parts)
                value = await node.read_data_value(raise_on_bad_status=False)
                if value.StatusCode is not None and value.StatusCode.value in (
                    ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadAttributeIdInvalid,
                ):  # fmt: skip
                    raise ua.UaStatusCodeError(value.StatusCode.value)
                access = await node.read_attribute(ua.AttributeIds.UserAccessLevel)
            except (ua.uaerrors.BadNodeIdUnknown, ua.uaerrors.BadNoMatch, ua.uaerrors.BadAttributeIdInvalid,
                    ua.uaerrors.BadBrowseNameInvalid, ua.uaerrors.BadNodeIdInvalid) as exc:  # fmt: skip
                self._log_once(t, "unknown", f"not found on the server ({type(exc).__name__}); check it with "
                               f"`plantbus opcua browse {self.settings.endpoint}`; the tag stays BAD")  # fmt: skip
                continue
            except ua.UaStatusCodeError as exc:
                self._log_once(t, "unknown", f"cannot be read ({exc}); check it with `plantbus opcua browse`")
                continue
            vtype, is_array = await self._variant_type(node, value)
            datatype = sparkplug_type(vtype, is_array) if vtype is not None else None
            if datatype is None:
                self._log_once(t, "type", f"OPC UA type {vtype} has no Sparkplug datatype; the tag stays BAD")
                continue
            if t.declared and t.datatype is not datatype:
                self._log_once(t, "mismatch", f"server type {datatype.name} differs from the declared "
                               f"{t.datatype.name if t.datatype else '?'}; set `datatype: {datatype.name}` on the tag")  # fmt: skip
                continue
            t.vtype, t.is_array, t.node, t.datatype = vtype, is_array, node, datatype
            t.server_writable = bool((access.Value.Value or 0) & _CURRENT_WRITE)
            if t.tag.writable and not t.server_writable:
                self._log_once(t, "readonly", "configured writable but the server does not allow writes to it; "
                               "DCMD writes will be refused")  # fmt: skip
            t.problem = None
            self._by_node.setdefault(node.nodeid, []).append(t)
            initial.append((t, value))
        return initial

    async def _variant_type(self, node: Node, value: ua.DataValue) -> tuple[ua.VariantType | None, bool]:
        variant = value.Value
        if variant is not None and variant.VariantType is not _VT.Null:
            return variant.VariantType, bool(variant.is_array)
        # No value yet: ask the declared DataType (built-in type ids equal the variant type numbers).
        dtype = (await node.read_attribute(ua.AttributeIds.DataType)).Value.Value
        rank = (await node.read_attribute(ua.AttributeIds.ValueRank)).Value.Value
        if isinstance(dtype, ua.NodeId) and dtype.NamespaceIndex == 0 and isinstance(dtype.Identifier, int):
            try:
                return ua.VariantType(dtype.Identifier), bool(rank is not None and rank >= 1)
            except ValueError:
                pass
        return None, False

    # ------------------------------------------------------------------ data

    async def _consume(self) -> None:
        """Drain the changes the subscription delivered and report them, one DDATA per device per batch."""
        while True:
            batch = [await self._changes.get()]
            while not self._changes.empty():
                batch.append(self._changes.get_nowait())
            await self._publish(batch)

    async def _publish(self, changes: Iterable[tuple[TagState, ua.DataValue]]) -> None:
        assert self.edge is not None
        pending: dict[str, tuple[dict[str, Any], dict[str, Quality], list[int]]] = {}

        async def flush(device_id: str) -> None:
            values, qualities, stamps = pending.pop(device_id)
            try:
                await self.edge.update(device_id, values, max(stamps), quality=qualities)  # type: ignore[union-attr]
            except PlantbusError as exc:
                log.warning("OPC UA connector %s: could not report %s: %s", self.name, list(values), exc)

        for t, dv in changes:
            if not t.declared or t.datatype is None:
                continue
            device_id = t.device.device_id
            entry = pending.get(device_id)
            if entry is not None and t.tag.name in entry[0]:
                await flush(device_id)  # a second change of the same tag: keep both, in order
                entry = None
            if entry is None:
                entry = pending[device_id] = ({}, {}, [])
            value, quality = self._convert(t, t.datatype, dv)
            current = self.edge.device(device_id).metrics[t.tag.name].value
            entry[0][t.tag.name] = current if value is None else value
            entry[1][t.tag.name] = quality
            source = dv.SourceTimestamp or dv.ServerTimestamp
            entry[2].append(_ms(source) if source is not None else int(time.time() * 1000))
        for device_id in list(pending):
            await flush(device_id)

    def _convert(self, t: TagState, datatype: DataType, dv: ua.DataValue) -> tuple[Any, Quality]:
        quality = quality_of(dv.StatusCode)
        raw = dv.Value.Value if dv.Value is not None else None
        try:
            value = to_sparkplug(datatype, raw)
        except PayloadError as exc:
            self._log_once(t, "value", f"value {raw!r} does not fit {datatype.name} ({exc}); reported BAD")
            return None, Quality.BAD
        if value is None and quality is Quality.GOOD:
            quality = Quality.BAD  # Good with no value is nothing a host can use
        return value, quality

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        """asyncua subscription callback: queue the change in arrival order for the consumer task."""
        self.changes_received += 1
        for t in self._by_node.get(node.nodeid, ()):
            self._changes.put_nowait((t, data.monitored_item.Value))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        """asyncua subscription callback: a bad subscription status (e.g. BadTimeout, BadShutdown) ends the session."""
        code = status.Status
        if code is not None and not code.is_good():
            self._end_session(f"subscription status {code.name}")

    async def _subscribe(self, client: Client) -> bool:
        """Create the subscription and monitored items; False when the server refuses subscriptions."""
        s = self.settings
        try:
            sub: Subscription = await client.create_subscription(s.publishing_interval_ms, self)
        except (ua.uaerrors.BadServiceUnsupported, ua.uaerrors.BadTooManySubscriptions,
                ua.uaerrors.BadNotSupported, ua.uaerrors.BadNothingToDo) as exc:  # fmt: skip
            if self._failing != "no-subscriptions":
                log.warning("OPC UA connector %s: server refused a subscription (%s); polling instead",
                            self.name, type(exc).__name__)  # fmt: skip
            return False
        # One request per distinct (sampling interval, deadband): monitored items share their parameters.
        groups: dict[tuple[float, Deadband | None], list[TagState]] = {}
        for t in self._tags:
            if t.node is not None:
                groups.setdefault((t.sampling(), await self._deadband_for(t)), []).append(t)
        for (sampling, deadband), tags in groups.items():
            nodes = list({t.node.nodeid: t.node for t in tags}.values())  # type: ignore[union-attr]
            results = await sub._subscribe(  # the public helpers cannot set sampling interval and filter together
                nodes, ua.AttributeIds.Value, _filter(deadband), queuesize=0, sampling_interval=sampling
            )
            retry: list[Node] = []
            for node, result in zip(nodes, results, strict=True):
                if not isinstance(result, ua.StatusCode):
                    continue
                if deadband is not None and result.value in _FILTER_REFUSALS:
                    # The server will not filter this node: report every change rather than lose the tag.
                    for t in self._by_node.get(node.nodeid, ()):
                        self._deadband_fallback(t, deadband, f"the server refused it ({result.name})")
                    retry.append(node)
                    continue
                await self._refused(node, result)
            if retry:
                again = await sub._subscribe(
                    retry, ua.AttributeIds.Value, None, queuesize=0, sampling_interval=sampling
                )
                for node, result in zip(retry, again, strict=True):
                    if isinstance(result, ua.StatusCode):
                        await self._refused(node, result)
        return True

    async def _refused(self, node: Node, result: ua.StatusCode) -> None:
        for t in self._by_node.get(node.nodeid, ()):
            self._log_once(t, "monitor", f"server refused the monitored item ({result.name}); the tag stays BAD")
            await self.edge.set_quality(t.device.device_id, Quality.BAD, [t.tag.name])  # type: ignore[union-attr]

    async def _deadband_for(self, t: TagState) -> Deadband | None:
        """The tag's deadband, or None when it cannot work: a percent deadband needs the node's EURange."""
        t.deadband_note = None
        deadband = t.deadband()
        if deadband is None or deadband.type != "percent" or t.node is None:
            return deadband
        try:
            # Part 8 6.2: a percent deadband is a share of the EURange property of an AnalogItem.
            await t.node.get_child("0:EURange")
        except (ua.uaerrors.BadNoMatch, ua.uaerrors.BadNodeIdUnknown, ua.uaerrors.BadBrowseNameInvalid):
            # Some servers (asyncua's among them) accept such a filter and then report every change anyway.
            self._deadband_fallback(t, deadband, "the node has no EURange property")
            return None
        return deadband

    def _deadband_fallback(self, t: TagState, deadband: Deadband, why: str) -> None:
        fix = (
            "give the tag an absolute deadband (deadband: {type: absolute, value: ...}) in engineering units"
            if deadband.type == "percent"
            else "remove the deadband or check that the node is numeric"
        )
        t.deadband_note = f"{deadband.type} deadband {deadband.value:g} not applied: {why}; every change is reported"
        key = f"deadband:{why}"
        if key not in t.logged:
            t.logged.add(key)
            log.warning(
                "OPC UA connector %s: tag %s (%s): %s — %s", self.name, t.label, t.address, t.deadband_note, fix
            )

    async def _poll(self, client: Client, device: Device) -> None:
        """Poll mode: read the device's nodes every poll interval; a failed read ends the session."""
        tags = [t for t in self._tags if t.device is device and t.node is not None]
        if not tags:
            return
        period = device.poll_interval_ms / 1000
        params = ua.ReadParameters()
        for t in tags:
            rv = ua.ReadValueId()
            rv.NodeId = t.node.nodeid  # type: ignore[union-attr]
            rv.AttributeId = ua.AttributeIds.Value
            params.NodesToRead.append(rv)
        next_at = time.monotonic()
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            try:
                results = await client.uaclient.read(params)
            except _SESSION_ERRORS as exc:
                self._end_session(f"poll failed: {exc!r}")
                return
            self.changes_received += len(results)
            await self._publish(zip(tags, results, strict=True))

    # ------------------------------------------------------------------ writes

    async def _on_write(self, device_id: str | None, metric: str, value: Any) -> None:
        """EdgeNode write handler (DCMD): write the node with its own variant type; raise WriteError on failure."""
        t = next((t for t in self._tags if t.device.device_id == device_id and t.tag.name == metric), None)
        if t is None:
            raise WriteError(f"{device_id}/{metric} is not an OPC UA tag of connector {self.name}")
        if self._client is None or not self.connected.is_set() or t.node is None or t.vtype is None:
            raise WriteError(f"{t.label}: OPC UA server {self.settings.endpoint} is not connected; write again later")
        if not t.server_writable:
            raise WriteError(f"{t.label}: the server does not allow writes to {t.address}")
        try:
            variant = to_opcua(t.vtype, t.is_array, value)
            await t.node.write_attribute(ua.AttributeIds.Value, ua.DataValue(variant))
        except ua.UaStatusCodeError as exc:
            raise WriteError(f"{t.label}: server refused the write of {value!r} ({exc})") from None
        except _SESSION_ERRORS as exc:
            raise WriteError(f"{t.label}: write failed ({exc!r})") from None


def _filter(deadband: Deadband | None) -> ua.DataChangeFilter | None:
    if deadband is None:
        return None
    f = ua.DataChangeFilter()
    f.Trigger = ua.DataChangeTrigger.StatusValue
    f.DeadbandType = ua.DeadbandType.Absolute if deadband.type == "absolute" else ua.DeadbandType.Percent
    f.DeadbandValue = deadband.value
    return f


def create(name: str, settings: OpcUaSettings, context: ConnectorContext) -> OpcUaConnector:
    """ConnectorType.create: build the connector from validated settings."""
    return OpcUaConnector(name, settings, context)
