"""Sparkplug topics as typed values: the only place that builds or splits `spBv1.0/...` strings."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from hub.errors import TopicError

NAMESPACE = "spBv1.0"
ALL_TOPICS = f"{NAMESPACE}/#"
_RESERVED = frozenset("+/#")


class MessageType(str, Enum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"

    @property
    def is_device(self) -> bool:
        return self.value[0] == "D"

    @property
    def is_birth(self) -> bool:
        return self in (MessageType.NBIRTH, MessageType.DBIRTH)

    @property
    def is_death(self) -> bool:
        return self in (MessageType.NDEATH, MessageType.DDEATH)

    @property
    def is_data(self) -> bool:
        return self in (MessageType.NDATA, MessageType.DDATA)

    @property
    def is_command(self) -> bool:
        return self in (MessageType.NCMD, MessageType.DCMD)


def validate_id(kind: str, value: str) -> str:
    """Check a group, edge node, device or host id against the specification's rules."""
    if not isinstance(value, str) or not value:
        raise TopicError(f"Sparkplug {kind} must be a non-empty string, got {value!r}")
    bad = _RESERVED.intersection(value)
    if bad:
        raise TopicError(f"Sparkplug {kind} {value!r} contains reserved character(s) {''.join(sorted(bad))}")
    # MQTT topic names are UTF-8 without U+0000 (MQTT 3.1.1 section 1.5.3); a lone surrogate
    # is a Python str but cannot be encoded, and a NUL makes the broker drop the connection.
    if "\x00" in value:
        raise TopicError(f"Sparkplug {kind} {value!r} contains NUL, which MQTT topics cannot carry")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TopicError(f"Sparkplug {kind} {value!r} is not valid UTF-8") from None
    return value


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """`spBv1.0/<group>/<type>/<edge_node>[/<device>]`, or `spBv1.0/STATE/<host_id>` for a host."""

    message_type: MessageType
    group_id: str | None = None
    edge_node_id: str | None = None
    device_id: str | None = None
    host_id: str | None = None

    def __post_init__(self) -> None:
        mt = self.message_type
        if mt is MessageType.STATE:
            validate_id("host id", self.host_id)  # type: ignore[arg-type]
            if self.group_id or self.edge_node_id or self.device_id:
                raise TopicError("a STATE topic carries only the host id")
            return
        validate_id("group id", self.group_id)  # type: ignore[arg-type]
        validate_id("edge node id", self.edge_node_id)  # type: ignore[arg-type]
        if mt.is_device:
            validate_id("device id", self.device_id)  # type: ignore[arg-type]
        elif self.device_id is not None:
            raise TopicError(f"{mt.value} topics carry no device id")

    @classmethod
    def node(cls, message_type: MessageType, group_id: str, edge_node_id: str) -> SparkplugTopic:
        return cls(MessageType(message_type), group_id, edge_node_id)

    @classmethod
    def device(cls, message_type: MessageType, group_id: str, edge_node_id: str, device_id: str) -> SparkplugTopic:
        return cls(MessageType(message_type), group_id, edge_node_id, device_id)

    @classmethod
    def state(cls, host_id: str) -> SparkplugTopic:
        return cls(MessageType.STATE, host_id=host_id)

    @classmethod
    def parse(cls, topic: str) -> SparkplugTopic:
        """Parse a topic string; raise TopicError with the reason when it is not Sparkplug B."""
        return _parse_cached(topic)

    @property
    def is_device(self) -> bool:
        return self.device_id is not None

    def with_type(self, message_type: MessageType) -> SparkplugTopic:
        """The same node or device under another message type (DDATA -> DBIRTH, ...)."""
        return SparkplugTopic(MessageType(message_type), self.group_id, self.edge_node_id, self.device_id, self.host_id)

    def node_topic(self, message_type: MessageType) -> SparkplugTopic:
        """The edge node's own topic of `message_type`, also when self is a device topic."""
        return SparkplugTopic(MessageType(message_type), self.group_id, self.edge_node_id)

    def __str__(self) -> str:
        return _format_cached(self)


@lru_cache(maxsize=65536)
def _format_cached(topic: SparkplugTopic) -> str:
    if topic.message_type is MessageType.STATE:
        return f"{NAMESPACE}/STATE/{topic.host_id}"
    parts = [NAMESPACE, topic.group_id, topic.message_type.value, topic.edge_node_id]
    if topic.device_id is not None:
        parts.append(topic.device_id)
    return "/".join(parts)  # type: ignore[arg-type]


@lru_cache(maxsize=65536)
def _parse_cached(topic: str) -> SparkplugTopic:
    parts = topic.split("/")
    if parts[0] != NAMESPACE:
        raise TopicError(f"{topic!r} is not in the {NAMESPACE} namespace")
    if len(parts) == 3 and parts[1] == "STATE":
        return SparkplugTopic(MessageType.STATE, host_id=parts[2])
    if len(parts) not in (4, 5):
        raise TopicError(f"{topic!r} has {len(parts)} levels; Sparkplug topics have 4 or 5")
    try:
        mt = MessageType(parts[2])
    except ValueError:
        raise TopicError(f"{topic!r}: unknown message type {parts[2]!r}") from None
    if mt is MessageType.STATE:
        raise TopicError(f"{topic!r}: STATE belongs at spBv1.0/STATE/<host_id>")
    if mt.is_device and len(parts) != 5:
        raise TopicError(f"{topic!r}: {mt.value} needs a device id")
    if not mt.is_device and len(parts) != 4:
        raise TopicError(f"{topic!r}: {mt.value} must not carry a device id")
    return SparkplugTopic(mt, parts[1], parts[3], parts[4] if len(parts) == 5 else None)


def legacy_state_topic(host_id: str) -> str:
    """Sparkplug 2.2's `STATE/<host_id>` topic, for old edge nodes."""
    return f"STATE/{validate_id('host id', host_id)}"
