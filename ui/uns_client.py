"""The console's view of the unified namespace: its own MQTT subscription and an in-memory tag store.

The console never polls: `UnsClient` subscribes to the UNS roots (`uns/#`, the first level of every
`uns.mappings` path, the hub's status topic) and feeds each retained/live JSON message into `TagStore`. Camera
snapshots (JPEG bytes) are published outside the UNS, on `plantbus/cv/snapshots/...`, so these filters do not
receive them; the Cameras page reads the pictures from the hub's snapshot folder.
The store keeps the latest document per topic, a tree index (children per prefix, built once per new
topic) and a version counter; pages redraw at most a few times a second when the version moved, and only
what is on screen (one tree level per expanded node, one page of table rows).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from hub.config import UnsConfig
from hub.mirror import STATUS_LEVEL
from hub.mqtt import BrokerUrl, make_client
from hub.uns_paths import SNAPSHOTS_ROOT

log = logging.getLogger(__name__)


CV_EVENTS_SUFFIX = "/cv/events"
CV_SNAPSHOTS_PREFIX = f"{SNAPSHOTS_ROOT}/"


@dataclass(slots=True)
class Tag:
    """The latest mirror document of one UNS topic."""

    path: str
    value: Any = None
    timestamp: int | None = None
    quality: str = "GOOD"
    datatype: str | None = None
    received_ms: int = 0
    changes: int = 0


@dataclass(slots=True)
class NodeState:
    """A Sparkplug node or device as its `<path>/_status` document describes it."""

    path: str
    online: bool
    timestamp: int | None
    group: str | None
    edge_node: str | None
    device: str | None
    reason: str | None
    bd_seq: int | None


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One child in the namespace tree: a folder (with how many tags below it) or a tag."""

    name: str
    path: str
    tag: Tag | None
    tags_below: int


@dataclass
class TagStore:
    """Latest value per topic, node states, the hub's diagnostics and a tree index; single event loop only."""

    status_topic: str = "plantbus/status"
    tags: dict[str, Tag] = field(default_factory=dict)
    nodes: dict[str, NodeState] = field(default_factory=dict)
    diagnostics: dict[str, Any] | None = None
    diagnostics_ms: int | None = None
    version: int = 0
    messages: int = 0
    malformed: int = 0
    # prefix ("" is the root) -> child name -> number of tags at or below that child
    _children: dict[str, dict[str, int]] = field(default_factory=dict)

    def update(self, topic: str, payload: bytes | str, received_ms: int | None = None) -> None:
        """Take one message from the broker (mirror JSON, a `_status` document or the hub's diagnostics)."""
        self.messages += 1
        now = received_ms if received_ms is not None else int(time.time() * 1000)
        if topic.endswith(CV_EVENTS_SUFFIX):
            return  # camera events are not tags; the Cameras page shows them
        if topic.startswith(CV_SNAPSHOTS_PREFIX):
            return  # only reached when a UNS root is named `plantbus` too: JPEG bytes, not a tag
        if not payload:
            self._forget(topic)  # an empty retained message clears the topic on the broker
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            self.malformed += 1
            return
        if not isinstance(doc, dict):
            self.malformed += 1
            return
        self.version += 1
        if topic == self.status_topic:
            self.diagnostics = doc
            self.diagnostics_ms = now
        elif topic.endswith("/" + STATUS_LEVEL):
            path = topic[: -len(STATUS_LEVEL) - 1]
            self.nodes[path] = NodeState(path, bool(doc.get("online")), doc.get("timestamp"), doc.get("group"),
                                         doc.get("edge_node"), doc.get("device"), doc.get("reason"), doc.get("bdSeq"))
        elif doc.get("historical"):
            pass  # a backfilled value is history, not the live value the console shows
        else:
            self._set_tag(topic, doc, now)

    def _set_tag(self, topic: str, doc: dict[str, Any], now: int) -> None:
        tag = self.tags.get(topic)
        if tag is None:
            tag = self.tags[topic] = Tag(topic)
            self._index(topic, +1)
        value = doc.get("value")
        if tag.received_ms and value != tag.value:
            tag.changes += 1
        tag.value = value
        tag.timestamp = doc.get("timestamp")
        tag.quality = str(doc.get("quality") or "GOOD")
        tag.datatype = doc.get("datatype")
        tag.received_ms = now

    def _forget(self, topic: str) -> None:
        if self.tags.pop(topic, None) is not None:
            self._index(topic, -1)
            self.version += 1
        elif topic.endswith("/" + STATUS_LEVEL) and self.nodes.pop(topic[: -len(STATUS_LEVEL) - 1], None):
            self.version += 1

    def _index(self, topic: str, delta: int) -> None:
        prefix = ""
        for name in topic.split("/"):
            level = self._children.setdefault(prefix, {})
            count = level.get(name, 0) + delta
            if count > 0:
                level[name] = count
            else:
                level.pop(name, None)
            prefix = f"{prefix}/{name}" if prefix else name

    # ------------------------------------------------------------------ queries (what pages draw)

    def children(self, prefix: str = "", limit: int = 200) -> tuple[list[TreeEntry], int]:
        """The first `limit` children of `prefix` (folders first, by name) and how many there are."""
        level = self._children.get(prefix, {})
        names = sorted(level)
        entries = []
        for name in names[:limit]:
            path = f"{prefix}/{name}" if prefix else name
            entries.append(TreeEntry(name, path, self.tags.get(path), level[name]))
        entries.sort(key=lambda e: (e.tag is not None and e.path not in self._children, e.name))
        return entries, len(level)

    def search(self, text: str = "", offset: int = 0, limit: int = 50, under: str = "") -> tuple[list[Tag], int]:
        """Tags whose path contains every word of `text` (case-insensitive), below `under`; one page and the total."""
        words = text.lower().split()
        start = under + "/" if under else ""
        matched = [
            tag for path, tag in self.tags.items()
            if path.startswith(start) and all(w in path.lower() for w in words)
        ]  # fmt: skip
        matched.sort(key=lambda t: t.path)
        return matched[offset: offset + limit], len(matched)

    def node_list(self) -> list[NodeState]:
        """Every known node and device, by path."""
        return [self.nodes[p] for p in sorted(self.nodes)]


def subscription_filters(uns: UnsConfig) -> list[str]:
    """The topic filters that cover the mirror: its prefix, each mapping's fixed root, the status topic."""
    roots = [uns.prefix]
    for mapping in uns.mappings:
        root = mapping.path.split("/", 1)[0]
        if "{" not in root and root not in roots:
            roots.append(root)
    # `<root>/#` also covers every `<path>/_status` below it.
    return [f"{root}/#" for root in roots] + [uns.status_topic]


class UnsClient:
    """Subscribes to the UNS on the broker and feeds the store; reconnects with backoff until cancelled."""

    def __init__(self, broker: BrokerUrl, filters: Sequence[str], store: TagStore, client_id: str) -> None:
        self.broker = broker
        self.filters = list(filters)
        self.store = store
        self.client_id = client_id
        self.connected = False
        self.last_error: str | None = None
        self.connects = 0
        self._connected_event = asyncio.Event()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Until the first subscription is in place (raises TimeoutError)."""
        await asyncio.wait_for(self._connected_event.wait(), timeout)

    async def run(self) -> None:
        """Receive until cancelled; a lost broker is logged once and retried with doubling delays."""
        delay = 0.5
        while True:
            try:
                async with make_client(self.broker, self.client_id) as client:
                    await client.subscribe([(f, 0) for f in self.filters])
                    self.connected = True
                    self.connects += 1
                    self._connected_event.set()
                    if self.last_error is not None:
                        log.info("console: broker %s is back", self.broker)
                    self.last_error = None
                    delay = 0.5
                    update = self.store.update
                    async for message in client.messages:
                        update(str(message.topic), message.payload)  # type: ignore[arg-type]
            except aiomqtt.MqttError as exc:
                if self.last_error is None:
                    log.warning("console: cannot read the UNS from %s (%s); retrying", self.broker, exc)
                self.last_error = str(exc)
            finally:
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def feed(store: TagStore, messages: Iterable[tuple[str, bytes]]) -> None:
    """Put many messages into a store at once (tests and replay)."""
    for topic, payload in messages:
        store.update(topic, payload)
