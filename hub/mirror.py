"""The plain-JSON unified-namespace mirror: every Sparkplug metric as a retained JSON message on its UNS path.

Topics and payloads (all UTF-8 JSON):

* `<metric path>` (e.g. `uns/<group>/<edge_node>/<device>/<metric>`, metric `/` levels kept, node
  metrics without the device level, or whatever `uns.mappings` say), retained:
  `{"value": 21.5, "timestamp": 1700000000000, "quality": "GOOD", "datatype": "Double"}`.
  `quality` is GOOD, STALE (node/device died, or the hub lost the broker; the last value is kept and
  `timestamp` is the time it went stale) or BAD/STALE when the edge said so with Sparkplug's
  `Quality` property (0 = BAD, 500 = STALE).
* Historical values (`is_historical`) are published on the same topic **not retained**, with
  `"historical": true`: live subscribers see them, but they never replace the retained live value.
* `<node or device path>/_status`, retained: `{"online": true, "timestamp": ..., "bdSeq": 3,
  "group": ..., "edge_node": ..., "device": null, "reason": "birth"}`. `reason` is birth, death,
  node_rebirth, host_disconnected or host_stopped (the last two: the hub cannot see the node, so it
  reports it as not online).

Publishing goes through the host's own MQTT connection (no second client) and never waits inside the
host's receive loop: while the connection keeps up, the samples of one Sparkplug message are handed to
the connection as one block of PUBLISH packets (`PrimaryHost.publish_many_nowait`); otherwise they are
queued in order and a publisher task drains the queue once the connection is back or has caught up.
Nothing is dropped by the mirror; the queue length plus the connection's unwritten backlog is its lag,
reported in diagnostics with the highest queue length seen. (At QoS 0 the broker itself may still drop
messages for a subscriber that cannot keep up: that is the broker's max_queued settings.)
Messages already handed to the client when the connection drops are lost with it, but the host then
republishes every metric as STALE and, after the rebirths, as GOOD, so the retained state converges.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import time
from collections import deque
from typing import Any

from hub.config import UnsConfig
from hub.samples import NodeStatus, Sample
from hub.sparkplug.host import PrimaryHost
from hub.sparkplug.payload import FLOAT_TYPES, INT_RANGES, STRING_TYPES, DataType, to_json_value
from hub.uns_paths import UnsPath

log = logging.getLogger(__name__)

STATUS_LEVEL = "_status"
_PLAIN_TYPES = frozenset(INT_RANGES) | STRING_TYPES | {DataType.Boolean}
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def metric_json(sample: Sample) -> dict[str, Any]:
    """The JSON document the mirror publishes for one sample."""
    dt = sample.datatype
    value = sample.value
    if value is None or dt in _PLAIN_TYPES:
        pass
    elif dt in FLOAT_TYPES:
        if not math.isfinite(value):
            value = str(value)
    else:
        value = to_json_value(dt, value)
    body: dict[str, Any] = {
        "value": value,
        "timestamp": sample.timestamp,
        "quality": sample.quality.value,
        "datatype": dt.name,
    }
    if sample.is_historical:
        body["historical"] = True
    return body


def status_json(status: NodeStatus) -> dict[str, Any]:
    """The JSON document the mirror publishes on `<path>/_status`."""
    return {
        "online": status.online,
        "timestamp": status.timestamp,
        "bdSeq": status.bd_seq,
        "group": status.group,
        "edge_node": status.edge_node,
        "device": status.device,
        "reason": status.reason,
    }


class UnsMirror:
    """Publishes the host's samples and node states as retained JSON on UNS topics."""

    def __init__(self, host: PrimaryHost, config: UnsConfig, *, high_water: int = 20_000) -> None:
        self.host = host
        self.qos = config.qos
        self.retain = config.retain
        self.high_water = high_water
        self._pending: deque[tuple[str, bytes, bool]] = deque()
        self._wakeup = asyncio.Event()
        self._status_topics: dict[str, str] = {}
        self.published = 0
        self.queued = 0
        self.max_lag = 0
        self.encode_errors = 0
        self.rejected = 0
        host.add_listener(self.on_samples)
        host.add_status_listener(self.on_status)

    # ------------------------------------------------------------------ listeners (called by the host)

    def on_samples(self, samples: list[Sample]) -> None:
        """Host listener: publish (or queue) one JSON message per sample."""
        retain = self.retain
        batch = []
        for sample in samples:
            try:
                payload = _encode(metric_json(sample)).encode()
            except (TypeError, ValueError) as exc:
                self.encode_errors += 1
                payload = _encode({"value": None, "timestamp": sample.timestamp, "quality": "BAD",
                                   "datatype": sample.datatype.name, "error": str(exc)}).encode()
            batch.append((sample.path, payload, retain and not sample.is_historical))
        self._send(batch)

    def on_status(self, status: NodeStatus) -> None:
        """Host status listener: publish `<path>/_status`."""
        topic = self._status_topics.get(status.path)
        if topic is None:
            topic = str(UnsPath.parse(status.path).child(STATUS_LEVEL))
            self._status_topics[status.path] = topic
        self._send([(topic, _encode(status_json(status)).encode(), self.retain)])

    def _send(self, batch: list[tuple[str, bytes, bool]]) -> None:
        host = self.host
        # Straight to the connection while nothing is queued, so the order of messages is kept.
        if not self._pending and host.online and host.outgoing_backlog() < self.high_water:
            sent = self._publish(batch)
            if sent == len(batch):
                return
            batch = batch[sent:]
        self._pending.extend(batch)
        self.queued += len(batch)
        lag = len(self._pending)
        if lag > self.max_lag:
            self.max_lag = lag
        self._wakeup.set()

    def _publish(self, batch: list[tuple[str, bytes, bool]]) -> int:
        """Hand a batch to the host's connection; returns how many it took (rejected topics count as taken)."""
        try:
            sent = self.host.publish_many_nowait(batch, self.qos)
            self.published += sent
            return sent
        except ValueError:
            pass
        # Some topic in the batch cannot be carried: find it, send the rest.
        taken = 0
        for item in batch:
            try:
                if not self.host.publish_many_nowait([item], self.qos):
                    break
                self.published += 1
            except ValueError as exc:
                self._reject(item[0], exc)
            taken += 1
        return taken

    # ------------------------------------------------------------------ publisher task

    async def run(self) -> None:
        """Drain the queue whenever the host is online and its connection keeps up; until cancelled."""
        host = self.host
        pending = self._pending
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while pending:
                if not host.online:
                    await host.wait_online()
                    continue
                if host.outgoing_backlog() >= self.high_water:
                    await asyncio.sleep(0.005)
                    continue
                chunk = list(itertools.islice(pending, 500))
                taken = self._publish(chunk)
                for _ in range(taken):
                    pending.popleft()
                # Fewer taken while the host still says online: the connection just died and the
                # host has not noticed yet. Keep the messages and look again shortly.
                await asyncio.sleep(0.01 if taken < len(chunk) else 0)

    def _reject(self, topic: str, exc: Exception) -> None:
        self.rejected += 1
        if self.rejected == 1 or self.rejected % 1000 == 0:
            log.error("UNS mirror cannot publish on %r (%s); %d rejected so far — check uns.mappings and metric names",
                      topic, exc, self.rejected)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued has been written to the socket; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._pending or self.host.outgoing_backlog():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def lag(self) -> int:
        """Messages not yet written to the broker connection."""
        return len(self._pending) + self.host.outgoing_backlog()

    def diagnostics(self) -> dict[str, Any]:
        """Counters of the mirror, JSON-friendly."""
        return {
            "published": self.published,
            "queued": self.queued,
            "pending": len(self._pending),
            "lag": self.lag(),
            "max_lag": self.max_lag,
            "encode_errors": self.encode_errors,
            "rejected": self.rejected,
        }
