"""The CV edge process on the broker: a Sparkplug edge node with one device per camera, and events as UNS JSON.

`CvPublisher` owns

* one `EdgeNode` (hub/sparkplug/edge.py): group from the configuration, node id e.g. `cv-oatbar`, one device per
  camera. Each camera device carries `kind` = "camera" (how the console tells cameras from other devices), its
  health (`online`, `fps`, `latency_ms`, `frames`, `frames_dropped`, `reconnects`, `last_error`,
  `model_confidence`), its event counters (`events`, and `violations`: events above INFO severity), and every
  rule counter as `<rule>/<counter>`, declared when first seen (a new DBIRTH describes it). The device is dead
  (DDEATH) while its source is offline and born again, with its current values, when the source is back.
  Metrics are report-by-exception and sent at most every `metrics_interval_s`, so a 25 frame/s camera does not
  produce 25 DDATA a second. The node itself reports `events_queued`, `events_sent` and `snapshots_stored`.
* the events: each `CvEvent` becomes JSON (`CvEvent.to_json()` plus `group` and `edge_node`) on
  `<camera device path>/cv/events`, where the device path is what the hub's UNS mirror uses for that camera
  (`UnsMapper.device_path`, so `uns.mappings` apply the same way); QoS 1, not retained. An event with an image
  gets a snapshot: faces blurred (edge_cv/faces.py), JPEG-encoded, stored in the `SnapshotStore` and published
  as bytes on `plantbus/cv/snapshots/<camera device path>/<event id>`, so a hub on another machine keeps a copy
  under the same reference the event's `snapshot` field names. The bytes stay outside the unified namespace (next
  to the hub's `plantbus/status`): the UNS carries plain JSON only, for SCADA subscribing to `uns/#` or an ISA-95
  root. The reference is known before the picture is made, so the
  event goes out at once and its picture follows (the face search takes seconds per frame on a small CPU);
  consumers must accept either order (plugins/cv_events.py and the console do).
* a durable outbox for those messages (hub/sparkplug/outbox.py, one row per MQTT message: topic + bytes): every
  event is written there first and deleted once the broker acknowledged it (PUBACK), so events produced while
  the broker is down, or while this process restarts, are sent when it is back, in order. Delivery is at least
  once; the hub stores an event once by its id.

Threads: `publish()` and `update_health()` are called from camera worker threads; they only hand the data to the
event loop (`loop.call_soon_threadsafe`). Face blurring and JPEG encoding run in worker threads, the outbox (an
SQLite file) in a thread of its own; nothing blocking runs on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiomqtt
import numpy as np

from edge_cv.snapshots import SnapshotError, SnapshotStore, reference_for, safe_name
from edge_cv.types import Box, CvEvent, RuleResult
from hub.derived import infer_datatype
from hub.config import UnsConfig
from hub.errors import PlantbusError
from hub.events import Severity
from hub.mqtt import BrokerUrl, make_client
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.outbox import Outbox
from hub.sparkplug.payload import DataType
from hub.sparkplug.topic import validate_id
from hub.uns_paths import UnsMapper, UnsPath, snapshot_topic

if TYPE_CHECKING:
    from edge_cv.faces import FaceBlurrer

log = logging.getLogger(__name__)

T = TypeVar("T")

CV_LEVEL = "cv"
EVENTS_LEVEL = "events"
KIND_METRIC = "kind"
CAMERA_KIND = "camera"

# The health metrics every camera device has, with the value its DBIRTH carries before the first report.
HEALTH_METRICS: dict[str, tuple[DataType, Any]] = {
    "online": (DataType.Boolean, False),
    "fps": (DataType.Double, 0.0),
    "latency_ms": (DataType.Double, None),
    "frames": (DataType.Int64, 0),
    "frames_dropped": (DataType.Int64, 0),
    "reconnects": (DataType.Int64, 0),
    "last_error": (DataType.String, ""),
    "events": (DataType.Int64, 0),
    "violations": (DataType.Int64, 0),
    "model_confidence": (DataType.Double, None),
}
HEALTH_KEYS = frozenset(HEALTH_METRICS) - {"events", "violations"}
NODE_METRICS: dict[str, tuple[DataType, Any]] = {
    "events_queued": (DataType.Int64, 0),
    "events_sent": (DataType.Int64, 0),
    "snapshots_stored": (DataType.Int64, 0),
}


def events_path(mapper: UnsMapper, group: str, edge_node: str, camera: str) -> UnsPath:
    """The UNS path a camera's events are published on: `<camera device path>/cv/events`."""
    return mapper.device_path(group, edge_node, camera).child(CV_LEVEL, EVENTS_LEVEL)


def snapshot_path(mapper: UnsMapper, group: str, edge_node: str, camera: str, event_id: str) -> UnsPath:
    """Where a snapshot's JPEG bytes go, outside the UNS: `plantbus/cv/snapshots/<camera device path>/<event id>`."""
    return snapshot_topic(mapper.device_path(group, edge_node, camera), safe_name(event_id))


def encode_snapshot(
    image: np.ndarray,
    *,
    quality: int = 85,
    blur: bool = True,
    person_boxes: Sequence[Box] = (),
    blurrer: FaceBlurrer | None = None,
) -> bytes:
    """A BGR image as JPEG bytes, faces (and the heads of `person_boxes`) blurred first; blocking."""
    import cv2

    if blur:
        from edge_cv.faces import blur_faces

        image = blur_faces(image, person_boxes, blurrer)
    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise SnapshotError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return buf.tobytes()


def _plain(value: Any) -> Any:
    """numpy scalars to Python numbers (the Sparkplug encoder takes Python types)."""
    return value.item() if isinstance(value, np.generic) else value


def _datatype_of(value: Any) -> DataType:
    if not isinstance(value, (bool, int, float, str)):
        raise PlantbusError(f"a CV metric must be a bool, int, float or str, got {type(value).__name__} {value!r}")
    return infer_datatype(value)


class _Camera:
    """What the publisher keeps per camera: its topics, counters and the values waiting for the next flush."""

    def __init__(self, camera_id: str, events_topic: str) -> None:
        self.id = camera_id
        self.events_topic = events_topic
        self.events = 0
        self.violations = 0
        self.online: bool | None = None  # None until the first health report
        self.pending: dict[str, Any] = {}
        self.confidence_from_health = False


class CvPublisher:
    """One CV edge process's Sparkplug edge node, event stream and snapshot store (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        *,
        broker: BrokerUrl | str,
        state_dir: Path,
        group: str = "plant1",
        uns: UnsConfig | None = None,
        cameras: tuple[str, ...] | list[str] = (),
        snapshot_dir: Path | None = None,
        retention_days: float = 7.0,
        max_mb: float = 2048.0,
        jpeg_quality: int = 85,
        blur_faces: bool = True,
        primary_host_id: str | None = None,
        metrics_interval_s: float = 0.5,
        outbox_max_messages: int = 20_000,
        client_id: str | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retention_interval_s: float = 600.0,
        max_pending_snapshots: int = 32,
    ) -> None:
        self.broker = BrokerUrl.parse(broker) if isinstance(broker, str) else broker
        self.group = validate_id("group id", group)
        self.node_id = validate_id("edge node id", node_id)
        self.state_dir = Path(state_dir)
        self.mapper = UnsMapper(uns or UnsConfig())
        self.jpeg_quality = jpeg_quality
        self.blur = blur_faces
        self.metrics_interval_s = metrics_interval_s
        self.retention_interval_s = retention_interval_s
        self.client_id = client_id or f"plantbus-cv-{group}-{node_id}-events"
        self._backoff = (backoff_min_s, backoff_max_s)
        self.node = EdgeNode(self.broker, group, node_id, state_dir=self.state_dir, primary_host_id=primary_host_id,
                             backoff_min_s=backoff_min_s, backoff_max_s=backoff_max_s)
        for name, (datatype, value) in NODE_METRICS.items():
            self.node.add_node_metric(name, datatype, value)
        self.snapshots = SnapshotStore(snapshot_dir or self.state_dir / "cv" / "snapshots",
                                       retention_days=retention_days, max_mb=max_mb)
        # sqlite3 connections belong to the thread that made them: the outbox lives in one thread of its own.
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"plantbus-cv-{node_id}-outbox")
        outbox_path = self.state_dir / "cv" / group / node_id / "events.sqlite3"
        self._outbox: Outbox = self._db.submit(Outbox, outbox_path, outbox_max_messages).result()
        # Snapshots (face search, JPEG) in one thread too: the face cascades are not documented thread-safe, and
        # one long-lived blurrer avoids parsing them again for every event.
        self._cpu = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"plantbus-cv-{node_id}-snapshots")
        self._blurrer: FaceBlurrer | None = None
        self._snapshot_tasks: set[asyncio.Task[None]] = set()
        self.max_pending_snapshots = max_pending_snapshots
        self._cameras: dict[str, _Camera] = {}
        self._refused: set[str] = set()
        for camera_id in cameras:
            self.add_camera(camera_id)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[tuple[Any, ...]] | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._accepting = False
        self._busy = 0
        self._outbox_size = len(self._outbox)
        self.connected = False
        self.events_published = 0  # events handed to the outbox
        self.messages_sent = 0  # MQTT messages (events and snapshots) the broker acknowledged
        self.events_sent = 0
        self.snapshot_errors = 0
        self.snapshots_skipped = 0
        self.dropped_calls = 0  # publish()/update_health() after stop()
        self.last_error: str | None = None
        self._failing_since: float | None = None

    @classmethod
    def from_config(cls, node_id: str, cv: Any, *, broker: BrokerUrl | str, state_dir: Path,
                    uns: UnsConfig | None = None, primary_host_id: str | None = None) -> CvPublisher:
        """A publisher for node `node_id` of a validated `cv:` section (edge_cv.config.CvConfig)."""
        snap = cv.snapshots
        cameras = [camera_id for node, camera_id, _ in cv.cameras(node_id) if node == node_id]
        return cls(node_id, broker=broker, state_dir=state_dir, group=cv.group, uns=uns, cameras=cameras,
                   snapshot_dir=snap.dir, retention_days=snap.retention_days, max_mb=snap.max_mb,
                   jpeg_quality=snap.jpeg_quality, primary_host_id=primary_host_id)

    # ------------------------------------------------------------------ definitions

    def add_camera(self, camera_id: str) -> None:
        """Declare a camera as a device of the node (before start(), or from the event loop's thread)."""
        validate_id("device id", camera_id)
        if camera_id in self._cameras:
            return
        device = self.node.add_device(camera_id, online=True)
        device.add_metric(KIND_METRIC, DataType.String, CAMERA_KIND)
        for name, (datatype, value) in HEALTH_METRICS.items():
            device.add_metric(name, datatype, value)
        topic = str(events_path(self.mapper, self.group, self.node_id, camera_id))
        self._cameras[camera_id] = _Camera(camera_id, topic)

    @property
    def cameras(self) -> list[str]:
        """The declared camera ids."""
        return list(self._cameras)

    def events_topic(self, camera_id: str) -> str:
        """Where the events of `camera_id` are published."""
        return self._cameras[camera_id].events_topic

    # ------------------------------------------------------------------ called from camera threads

    def publish(self, camera_id: str, result: RuleResult, rule: str | None = None) -> None:
        """Hand one rule result over (thread-safe). `rule` names the rule: its metrics become `<rule>/<counter>`;
        without it the metric names are used as given."""
        self._hand_over(("result", camera_id, result, rule))

    def update_health(self, camera_id: str, stats: Mapping[str, Any]) -> None:
        """Hand a camera's health over (thread-safe): any of online, fps, latency_ms, frames, frames_dropped,
        reconnects, last_error, model_confidence; `online` false makes the device dead until it is true again."""
        self._hand_over(("health", camera_id, dict(stats)))

    def _hand_over(self, item: tuple[Any, ...]) -> None:
        loop, inbox = self._loop, self._inbox
        if loop is None or inbox is None or not self._accepting:
            self.dropped_calls += 1
            if self.dropped_calls == 1:
                log.warning("CV publisher %s/%s is not running; results handed to it are dropped (start() it first)",
                            self.group, self.node_id)
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, inbox, item)
        except RuntimeError:  # the loop is closed: the process is ending
            self.dropped_calls += 1

    def _enqueue(self, inbox: asyncio.Queue[tuple[Any, ...]], item: tuple[Any, ...]) -> None:
        self._busy += 1  # until the worker is done with it, so wait_sent() counts it while it is encoded
        inbox.put_nowait(item)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the edge node, the event worker, the sender and the periodic metric and retention tasks."""
        if self._tasks:
            raise PlantbusError(f"CV publisher {self.group}/{self.node_id} is already running")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._inbox = asyncio.Queue()
        self._wake = asyncio.Event()
        self._wake.set()  # whatever an earlier run left in the outbox goes first
        self._accepting = True
        name = f"plantbus[cv:{self.group}/{self.node_id}]"
        self.node.start()
        self._tasks = [
            loop.create_task(self._work(), name=f"{name}.events"),
            loop.create_task(self._send_loop(), name=f"{name}.send"),
            loop.create_task(self._flush_loop(), name=f"{name}.metrics"),
            loop.create_task(self._retention_loop(), name=f"{name}.retention"),
        ]

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Stop taking results, turn what was handed over into outbox rows, send for up to `flush_timeout` s,
        then NDEATH and close. What was not sent stays in the outbox for the next start."""
        if not self._tasks:
            self.node.close()  # its SQLite file belongs to this thread
            await asyncio.to_thread(self._close)
            return
        self._accepting = False
        worker, sender, flusher, retention = self._tasks
        assert self._inbox is not None
        await self._inbox.join()
        await asyncio.gather(*self._snapshot_tasks, return_exceptions=True)
        # Every result handed over before stop() is in the outbox now, its snapshot too.
        for task in (worker, flusher, retention):
            task.cancel()
        await asyncio.gather(worker, flusher, retention, return_exceptions=True)
        await self._flush_metrics()
        await self.wait_sent(flush_timeout)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await self.node.stop()
        self._tasks = []
        self.node.close()  # its SQLite file belongs to this thread
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        """Close the outbox in its thread and end the worker threads (blocking)."""
        outbox = self._outbox
        try:
            self._db.submit(outbox.close).result()
        except RuntimeError:
            return  # already shut down
        self._db.shutdown(wait=True)
        self._cpu.shutdown(wait=True)

    async def __aenter__(self) -> CvPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_sent(self, timeout: float = 10.0) -> bool:
        """Wait until the outbox is empty (the broker acknowledged every event); False on timeout."""
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0)  # hand-overs already scheduled on this loop count as handed over
        while self._outbox_size or self._busy:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # ------------------------------------------------------------------ the event loop side

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def _in_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    def _snapshot_bytes(self, event: CvEvent) -> bytes:
        """The event's picture as a face-blurred JPEG (on the snapshot thread)."""
        assert event.image is not None
        blurrer = None
        if self.blur:
            if self._blurrer is None:
                from edge_cv.faces import FaceBlurrer

                self._blurrer = FaceBlurrer()
            blurrer = self._blurrer
        # The event's own object, when it is a person, has its head hidden even if no face is found in it.
        people = [event.box] if event.box is not None and event.label == "person" else []
        return encode_snapshot(event.image, quality=self.jpeg_quality, blur=self.blur, person_boxes=people,
                               blurrer=blurrer)

    def _camera(self, camera_id: str) -> _Camera:
        camera = self._cameras.get(camera_id)
        if camera is None:
            # A camera the runner did not declare: declare it now rather than lose its results.
            self.add_camera(camera_id)
            camera = self._cameras[camera_id]
        return camera

    async def _work(self) -> None:
        assert self._inbox is not None
        inbox = self._inbox
        while True:
            item = await inbox.get()
            try:
                if item[0] == "result":
                    await self._on_result(item[1], item[2], item[3])
                else:
                    await self._on_health(item[1], item[2])
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad result must not stop the camera's stream
                log.exception("CV publisher %s/%s could not handle a %s of camera %r",
                              self.group, self.node_id, item[0], item[1])
            finally:
                self._busy -= 1
                inbox.task_done()

    async def _on_result(self, camera_id: str, result: RuleResult, rule: str | None) -> None:
        camera = self._camera(camera_id)
        for name, value in result.metrics.items():
            camera.pending[f"{rule}/{name}" if rule else name] = _plain(value)
        scores = [float(e.score) for e in result.events if e.score is not None]
        if scores and not camera.confidence_from_health:
            camera.pending["model_confidence"] = sum(scores) / len(scores)
        for event in result.events:
            camera.events += 1
            if event.severity > Severity.INFO:
                camera.violations += 1
            await self._record_event(camera, event)
        if result.events:
            camera.pending["events"] = camera.events
            camera.pending["violations"] = camera.violations

    async def _record_event(self, camera: _Camera, event: CvEvent) -> None:
        reference = event.snapshot
        picture = event.image is not None
        if picture and len(self._snapshot_tasks) >= self.max_pending_snapshots:
            # Face search is the slow part (seconds per frame on a small CPU): under a burst, later events go
            # without a picture rather than holding frames in memory without bound.
            picture = False
            self.snapshots_skipped += 1
            if self.snapshots_skipped == 1 or self.snapshots_skipped % 100 == 0:
                log.warning("CV publisher %s/%s: %d snapshots waiting to be made; event %s of camera %r goes "
                            "without one (%d skipped so far)", self.group, self.node_id, len(self._snapshot_tasks),
                            event.id, camera.id, self.snapshots_skipped)
        if picture:
            # The reference is known before the picture is made, so the event does not wait for the face search.
            reference = reference_for(camera.id, event.id, event.time_ms)
        doc = dataclasses.replace(event, image=None, snapshot=reference).to_json()
        doc["group"] = self.group
        doc["edge_node"] = self.node_id
        await self._append([(camera.events_topic, json.dumps(doc, separators=(",", ":"), default=str).encode())])
        self.events_published += 1
        if picture and reference is not None:
            self._busy += 1
            task = asyncio.get_running_loop().create_task(
                self._snapshot(camera, event, reference), name=f"plantbus[cv:{self.group}/{self.node_id}].snapshot"
            )
            self._snapshot_tasks.add(task)
            task.add_done_callback(self._snapshot_tasks.discard)

    async def _snapshot(self, camera: _Camera, event: CvEvent, reference: str) -> None:
        """Blur, encode and store the event's picture, then queue its bytes for the broker."""
        try:
            try:
                jpeg = await self._in_cpu(self._snapshot_bytes, event)
                await self._in_cpu(self.snapshots.save_reference, reference, jpeg)
            except Exception as exc:  # noqa: BLE001 - whatever broke the picture, the stream goes on
                self.snapshot_errors += 1
                log.warning("CV publisher %s/%s: no snapshot for event %s of camera %r: %s",
                            self.group, self.node_id, event.id, camera.id, exc)
                return
            topic = str(snapshot_path(self.mapper, self.group, self.node_id, camera.id, event.id))
            await self._append([(topic, jpeg)])
        finally:
            self._busy -= 1

    async def _append(self, rows: list[tuple[str | None, bytes]]) -> None:
        dropped = await self._in_db(self._outbox.append_many, rows)
        if dropped:
            log.warning("CV publisher %s/%s: the event outbox is full (%d messages); dropped the %d oldest",
                        self.group, self.node_id, self._outbox.max_messages, dropped)
        self._outbox_size = len(self._outbox)
        assert self._wake is not None
        self._wake.set()

    async def _on_health(self, camera_id: str, stats: dict[str, Any]) -> None:
        camera = self._camera(camera_id)
        values = {}
        for key, value in stats.items():
            if key not in HEALTH_KEYS:
                continue  # a figure the publisher has no metric for
            value = _plain(value)
            if key == "last_error":
                value = "" if value is None else str(value)
            elif key in ("fps", "latency_ms", "model_confidence") and value is not None:
                value = float(value)
                if key == "model_confidence":
                    camera.confidence_from_health = True
            elif key == "online":
                value = bool(value)
            elif value is not None:
                value = int(value)
            values[key] = value
        camera.pending.update(values)
        online = values.get("online")
        if online is None or online == camera.online:
            return
        camera.online = online
        # Values first: going offline they reach the host before the DDEATH; coming back the DBIRTH carries them.
        try:
            await self._flush_camera(camera)
        except PlantbusError as exc:
            log.warning("CV publisher %s/%s: metrics of camera %r not sent: %s", self.group, self.node_id, camera.id,
                        exc)
        await self.node.set_device_online(camera.id, online)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_interval_s)
            await self._flush_metrics()

    async def _flush_metrics(self) -> None:
        for camera in list(self._cameras.values()):
            try:
                await self._flush_camera(camera)
            except PlantbusError as exc:
                log.warning("CV publisher %s/%s: metrics of camera %r not sent: %s",
                            self.group, self.node_id, camera.id, exc)
        await self.node.update(None, {"events_queued": self._outbox_size, "events_sent": self.events_sent,
                                      "snapshots_stored": self.snapshots.saved})

    async def _flush_camera(self, camera: _Camera) -> None:
        if not camera.pending:
            return
        values, camera.pending = camera.pending, {}
        device = self.node.device(camera.id)
        declared = device.metrics
        out: dict[str, Any] = {}
        for name, value in values.items():
            metric = declared.get(name)
            if metric is None:
                if value is None:
                    continue  # nothing to tell the type from yet
                try:
                    metric = device.add_metric(name, _datatype_of(value), value)
                except PlantbusError as exc:
                    self._refuse_metric(camera, name, exc)
                    continue
            elif metric.datatype is DataType.Int64 and isinstance(value, float):
                value = int(round(value)) if math.isfinite(value) else None
            out[name] = value
        await self.node.update(camera.id, out)

    def _refuse_metric(self, camera: _Camera, name: str, exc: Exception) -> None:
        if name not in self._refused:
            # Once per name: a rule that reports a bad counter does so on every frame.
            self._refused.add(name)
            log.warning("CV publisher %s/%s: camera %r metric %r cannot be published: %s",
                        self.group, self.node_id, camera.id, name, exc)

    # ------------------------------------------------------------------ sending the outbox

    async def _send_loop(self) -> None:
        attempt = 0
        while True:
            try:
                async with make_client(self.broker, self.client_id) as client:
                    self.connected = True
                    attempt = 0
                    if self._failing_since is not None:
                        log.info("CV publisher %s/%s: broker %s is back after %.1f s; sending %d queued message(s)",
                                 self.group, self.node_id, self.broker, time.monotonic() - self._failing_since,
                                 self._outbox_size)
                        self._failing_since = None
                    await self._drain(client)
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                if self._failing_since is None:
                    # Logged when the trouble starts, not on every retry.
                    self._failing_since = time.monotonic()
                    log.warning("CV publisher %s/%s cannot reach the broker %s (%s); events wait in the outbox",
                                self.group, self.node_id, self.broker, exc)
            except PlantbusError as exc:  # the outbox file: a full disk must not end the sender for good
                self.last_error = str(exc)
                log.error("CV publisher %s/%s: %s; retrying", self.group, self.node_id, exc)
            finally:
                self.connected = False
            low, high = self._backoff
            cap = min(high, low * 2**attempt)
            attempt += 1
            await asyncio.sleep(random.uniform(cap / 2, cap))

    async def _drain(self, client: aiomqtt.Client) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            wake.clear()
            rows = await self._in_db(self._outbox.read_after, 0, 100)
            if not rows:
                await wake.wait()
                continue
            # Handed to the connection in order; each QoS 1 publish returns on its PUBACK.
            await asyncio.gather(*(client.publish(topic or "", payload, qos=1, retain=False, timeout=30)
                                   for _, topic, payload in rows))
            await self._in_db(self._outbox.delete, [row_id for row_id, _, _ in rows])
            self._outbox_size = len(self._outbox)
            self.messages_sent += len(rows)
            self.events_sent += sum(1 for _, topic, _ in rows if topic and topic.endswith("/" + EVENTS_LEVEL))

    async def _retention_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.snapshots.enforce_retention)
            except OSError as exc:
                log.warning("CV publisher %s/%s: snapshot retention failed: %s", self.group, self.node_id, exc)
            await asyncio.sleep(self.retention_interval_s)

    # ------------------------------------------------------------------ diagnostics

    def diagnostics(self) -> dict[str, Any]:
        """Counters of the publisher, JSON-friendly."""
        return {
            "group": self.group,
            "edge_node": self.node_id,
            "online": self.node.online,
            "events_connected": self.connected,
            "cameras": {c.id: {"online": c.online, "events": c.events, "violations": c.violations}
                        for c in self._cameras.values()},
            "events_published": self.events_published,
            "events_sent": self.events_sent,
            "messages_sent": self.messages_sent,
            "queued": self._outbox_size,
            "outbox_dropped": self._outbox.dropped,
            "snapshot_errors": self.snapshot_errors,
            "snapshots_skipped": self.snapshots_skipped,
            "snapshots_pending": len(self._snapshot_tasks),
            "snapshots": self.snapshots.diagnostics(),
            "dropped_calls": self.dropped_calls,
            "last_error": self.last_error,
        }
