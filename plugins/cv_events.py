"""Built-in plugin: camera events from the broker into the relational store, the hub's snapshot folder and the bus.

The CV edge processes (edge_cv/publisher.py) publish each event as JSON on `<camera device path>/cv/events` and its
snapshot JPEG on `plantbus/cv/snapshots/<camera device path>/<event id>`, where the device path is the one the UNS
mirror gives that camera (`uns.prefix` or `uns.mappings`). The pictures live outside the unified namespace, next to
the hub's `plantbus/status`, because the UNS carries plain JSON only: SCADA (Ignition, Node-RED) subscribing to
`uns/#` or an ISA-95 root never receives JPEG bytes. This plugin

* subscribes to exactly those topics (QoS 1, a persistent broker session, so events published while the hub is
  down wait on the broker), through a subscription of its own: the primary host's connection only takes
  Sparkplug topics;
* keeps each snapshot under the reference the event names, in `<state_dir>/cv/snapshots` (or
  `plugins.cv_events.snapshot_dir`), with retention by age and size; the console serves them from there;
* forwards each event once onto the hub's bus as `Event(kind="cv_detection", path=<camera device path>,
  payload=<the event JSON>, attachments=(<snapshot reference>,), source="edge_cv")`, so alerting and other
  plugins get it;
* stores it as a `CvEvent` row (hub/models.py) from its own `on_events`, so the bus's durable queue stands between
  the broker and the database: a database outage delays rows, it does not lose them. The event id (kept in the
  row's payload as `id`) makes the insert idempotent: an event delivered twice, by the broker, by an edge that
  resent it after a lost acknowledgement, or after a hub restart, is one row.

Malformed event messages are counted, logged once (with the first reason), and published with the other counters
as derived values of device `cv_events` (`received`, `stored`, `duplicates`, `malformed`, `snapshots_saved`), next
to `hub.cv_events.diagnostics()`. The embedded default database (`<state_dir>/plantbus.sqlite`) is migrated at
start; a configured database (PostgreSQL) must be current (`plantbus db upgrade`), otherwise the plugin fails at
start and says so.

```yaml
plugins:
  cv_events:
    snapshot_dir: /var/lib/plantbus/cv/snapshots   # default: <state_dir>/cv/snapshots
    retention_days: 30
    max_mb: 4096
```
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from hub.events import Event, Severity
from hub.plugins import hookimpl
from hub.uns_paths import SNAPSHOTS_ROOT, parse_snapshot_topic

if TYPE_CHECKING:
    import aiomqtt

    from edge_cv.snapshots import SnapshotStore
    from hub.app import Hub
    from hub.config import PlantbusConfig, UnsConfig
    from hub.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

NAME = "cv_events"
EVENT_KIND = "cv_detection"
SOURCE = "edge_cv"
EVENTS_SUFFIX = "/cv/events"
# Outside the UNS (plain JSON only), next to the hub's `plantbus/status`; the edge publisher builds its topics from it.
_SEVERITIES = {s.name.lower(): s for s in Severity}


class Settings(BaseModel):
    """`plugins.cv_events` in the hub's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    snapshot_dir: Path | None = Field(
        None, description="where the hub keeps snapshots; default <state_dir>/cv/snapshots"
    )
    retention_days: float = Field(30.0, gt=0, description="snapshots older than this are deleted")
    max_mb: float = Field(4096.0, gt=0, description="the oldest snapshots go first when the folder exceeds this")
    retention_interval_s: float = Field(600.0, gt=0, description="how often retention runs")
    persistent_session: bool = Field(
        True, description="keep a broker session, so QoS 1 events published while the hub is down are delivered later"
    )
    dedupe_window: int = Field(20_000, ge=100, description="event ids remembered to forward each event once")
    pending_snapshots: int = Field(200, ge=1, description="snapshots held while their event has not arrived")
    diagnostics_interval_s: float = Field(5.0, gt=0, description="how often changed counters are published")


def snapshot_dir_for(config: PlantbusConfig) -> Path:
    """The hub's snapshot folder for a configuration (the console reads it too)."""
    section = config.plugins.get(NAME) or {}
    configured = section.get("snapshot_dir") if isinstance(section, dict) else None
    return Path(configured) if configured else config.state_dir / "cv" / "snapshots"


def subscription_filters(uns: UnsConfig) -> tuple[list[str], list[str]]:
    """MQTT filters for the CV event and snapshot topics under every UNS device-path template (events, snapshots)."""
    templates = [m.path for m in uns.mappings] + [uns.prefix + "/{group}/{edge_node}/{device}"]
    events: list[str] = []
    snapshots: list[str] = []
    for template in templates:
        # A level with a placeholder matches any one level; filters are spelt here because UnsPath refuses '+'.
        base = "/".join("+" if "{" in level else level for level in template.split("/"))
        for out, topic_filter in ((events, base + EVENTS_SUFFIX), (snapshots, f"{SNAPSHOTS_ROOT}/{base}/+")):
            if topic_filter not in out:
                out.append(topic_filter)
    return events, snapshots


class MalformedEvent(ValueError):
    """An event message that cannot be used; the text says why."""


def parse_event(payload: bytes) -> dict[str, Any]:
    """The event document of one `…/cv/events` message, checked; MalformedEvent says what is wrong."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MalformedEvent(f"a JSON {type(doc).__name__}, not an object")
    for key in ("id", "camera", "kind"):
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            raise MalformedEvent(f"{key!r} must be a non-empty string, got {value!r}")
    when = doc.get("time")
    if isinstance(when, bool) or not isinstance(when, int) or when <= 0:
        raise MalformedEvent(f"'time' must be milliseconds since the epoch, got {when!r}")
    severity = doc.get("severity", "info")
    if severity not in _SEVERITIES:
        raise MalformedEvent(f"'severity' must be one of {', '.join(_SEVERITIES)}, got {severity!r}")
    score = doc.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise MalformedEvent(f"'score' must be a number or null, got {score!r}")
    if not isinstance(doc.get("payload", {}), dict):
        raise MalformedEvent("'payload' must be an object")
    return doc


class Plugin:
    """The cv_events plugin of one hub (state per hub: a class entry point is instantiated per hub)."""

    def __init__(self) -> None:
        self.hub: Hub | None = None
        self.settings: Settings | None = None
        self.store: SnapshotStore | None = None
        self.database: Database | None = None
        self._db: concurrent.futures.ThreadPoolExecutor | None = None
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        # Snapshots that came before their event, and events whose snapshot has not come yet: (device path, id).
        self._held: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
        self._expected: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()
        self.connected = False
        self.counters = {"received": 0, "forwarded": 0, "stored": 0, "duplicates": 0, "malformed": 0,
                         "snapshots_saved": 0, "snapshots_rejected": 0, "snapshots_dropped": 0}
        self.last_malformed: str | None = None
        self.last_error: str | None = None
        self._malformed_logged = False
        self._published: dict[str, int] = {}

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def register_settings(self, register: Callable[[str, type], None]) -> None:
        register(NAME, Settings)

    @hookimpl
    async def hub_startup(self, hub: Hub) -> None:
        from edge_cv.snapshots import SnapshotStore
        from hub.db import Database

        settings: Settings = hub.plugin_settings(NAME)  # type: ignore[assignment]
        self.hub, self.settings = hub, settings
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="plantbus-cv-events-db")
        self.database = Database.from_config(hub.config)
        if hub.config.database.url is None:
            # The embedded default (an SQLite file in state_dir) is ours alone: bring it to the current schema,
            # so a plant on one machine needs no set-up step.
            await self._in_db(self.database.upgrade)
        # A schema this Plantbus does not know would fail every insert: refuse at start, saying what to run.
        await self._in_db(self.database.require_current_schema)
        self.store = SnapshotStore(settings.snapshot_dir or hub.state_dir / "cv" / "snapshots",
                                   retention_days=settings.retention_days, max_mb=settings.max_mb)
        hub.cv_events = self  # type: ignore[attr-defined]
        hub.start_task(NAME, self._subscribe_loop(), "subscribe")
        hub.start_task(NAME, self._retention_loop(), "retention")
        hub.start_task(NAME, self._diagnostics_loop(), "diagnostics")

    @hookimpl
    async def on_events(self, events: list[Event]) -> None:
        mine = [e for e in events if e.kind == EVENT_KIND and e.source == SOURCE]
        if mine and self.database is not None:
            await self._in_db(self._store_rows, mine)

    @hookimpl
    async def hub_shutdown(self, hub: Hub) -> None:
        if self._db is not None:
            if self.database is not None:
                await self._in_db(self.database.close)
            self._db.shutdown(wait=True)
            self._db = None

    # ------------------------------------------------------------------ the broker side

    async def _subscribe_loop(self) -> None:
        import aiomqtt

        from hub.mqtt import make_client

        hub, settings = self.hub, self.settings
        assert hub is not None and settings is not None
        events, snapshots = subscription_filters(hub.config.uns)
        # After the host is online the bus has its consumers: nothing received is handed to a bus without them.
        await hub.host.wait_online()
        client_id = f"plantbus-{hub.config.host.host_id}-cv-events"
        delay = 0.5
        failing_since: float | None = None
        while True:
            try:
                async with make_client(hub.broker, client_id, clean_session=not settings.persistent_session) as client:
                    await client.subscribe([(f, 1) for f in events + snapshots])
                    self.connected = True
                    delay = 0.5
                    if failing_since is not None:
                        log.info("cv_events: broker %s is back after %.1f s", hub.broker,
                                 time.monotonic() - failing_since)
                        failing_since = None
                    await self._receive(client)
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("cv_events: no subscription to the broker %s (%s); retrying", hub.broker, exc)
            finally:
                self.connected = False
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 30.0)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            raw = message.payload
            payload = bytes(raw) if isinstance(raw, (bytes, bytearray)) else str(raw or "").encode()
            try:
                # The snapshot root first: a camera device path may itself end in `cv` and an event id be `events`.
                snapshot = parse_snapshot_topic(topic)
                if snapshot is not None:
                    await self.handle_snapshot(*snapshot, payload)
                elif topic.endswith(EVENTS_SUFFIX):
                    await self.handle_event(topic[: -len(EVENTS_SUFFIX)], payload)
            except Exception:  # noqa: BLE001 - one message must never end the subscription
                log.exception("cv_events: failed to handle a message on %s", topic)

    async def handle_event(self, device_path: str, payload: bytes) -> None:
        """One `<device path>/cv/events` message: check it, save its held snapshot, forward it once to the bus."""
        from edge_cv.snapshots import is_reference, safe_name

        assert self.hub is not None and self.settings is not None
        self.counters["received"] += 1
        try:
            doc = parse_event(payload)
        except MalformedEvent as exc:
            self._malformed(device_path, str(exc))
            return
        event_id = doc["id"]
        if event_id in self._seen:
            self.counters["duplicates"] += 1
            return
        self._seen[event_id] = None
        while len(self._seen) > self.settings.dedupe_window:
            self._seen.popitem(last=False)
        reference = doc.get("snapshot")
        key = (device_path, safe_name(event_id))
        if not (is_reference(reference) and reference.rpartition("/")[2] == f"{key[1]}.jpg"):
            # A reference this event cannot own: not used to name a file here.
            reference = None
        if reference is not None:
            held = self._held.pop(key, None)
            if held is not None:
                await self._save_snapshot(reference, held)
            else:
                self._remember(self._expected, key, reference)
        attachments = (reference,) if reference else ()
        event = Event(EVENT_KIND, device_path, doc["time"], _SEVERITIES[doc.get("severity", "info")], doc,
                      attachments, SOURCE)
        self.hub.emit_events([event])
        self.counters["forwarded"] += 1

    async def handle_snapshot(self, device_path: str, event_id: str, payload: bytes) -> None:
        """One `plantbus/cv/snapshots/<device path>/<id>` message: store it under its event's reference, or hold it."""
        key = (device_path, event_id)
        reference = self._expected.pop(key, None)
        if reference is not None:
            await self._save_snapshot(reference, payload)
            return
        if not payload.startswith(b"\xff\xd8"):
            self.counters["snapshots_rejected"] += 1
            return
        if self._remember(self._held, key, payload):
            self.counters["snapshots_dropped"] += 1

    def _remember(self, table: collections.OrderedDict[Any, Any], key: Any, value: Any) -> bool:
        """Put into a bounded table; True when the oldest entry had to go."""
        assert self.settings is not None
        table[key] = value
        limit = self.settings.pending_snapshots if table is self._held else self.settings.dedupe_window
        if len(table) > limit:
            table.popitem(last=False)
            return True
        return False

    async def _save_snapshot(self, reference: str, data: bytes) -> None:
        from edge_cv.snapshots import SnapshotError

        assert self.store is not None
        try:
            await asyncio.to_thread(self.store.save_reference, reference, data)
        except SnapshotError as exc:
            self.counters["snapshots_rejected"] += 1
            log.warning("cv_events: snapshot %s not kept: %s", reference, exc)
            return
        self.counters["snapshots_saved"] += 1

    def _malformed(self, device_path: str, why: str) -> None:
        self.counters["malformed"] += 1
        self.last_malformed = f"{device_path}{EVENTS_SUFFIX}: {why}"
        if not self._malformed_logged:
            # Once: a misbehaving edge would otherwise fill the log; the counter keeps the tally.
            self._malformed_logged = True
            log.warning("cv_events: ignoring a malformed event on %s (%s); further ones are only counted "
                        "(diagnostics: cv_events/malformed)", device_path + EVENTS_SUFFIX, why)

    # ------------------------------------------------------------------ the database side (one thread)

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._db is not None
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    def _store_rows(self, events: list[Event]) -> int:
        """Insert the events not stored yet; returns how many rows were added (blocking)."""
        from sqlmodel import select

        from hub.models import Camera, CvEvent, Zone

        assert self.database is not None
        added = 0
        with self.database.session(actor=NAME) as session:
            cameras: dict[str, Camera | None] = {}
            zones: dict[str, int | None] = {}
            batch: set[str] = set()
            for event in events:
                doc = event.payload
                event_id = doc["id"]
                occurred = datetime.fromtimestamp(event.time / 1000, UTC)
                # occurred_at is indexed: the id check only reads the rows of that instant.
                exists = session.exec(
                    select(CvEvent.id).where(CvEvent.occurred_at == occurred,
                                             CvEvent.payload["id"].as_string() == event_id)  # type: ignore[index]
                ).first()
                if exists is not None or event_id in batch:
                    self.counters["duplicates"] += 1
                    continue
                batch.add(event_id)
                code = doc["camera"]
                if code not in cameras:
                    cameras[code] = session.exec(select(Camera).where(Camera.code == code)).first()
                camera = cameras[code]
                zone_code = doc.get("zone")
                zone_id = camera.zone_id if camera is not None else None
                if isinstance(zone_code, str) and zone_code:
                    if zone_code not in zones:
                        zones[zone_code] = session.exec(select(Zone.id).where(Zone.code == zone_code)).first()
                    zone_id = zones[zone_code] or zone_id
                score = doc.get("score")
                track = doc.get("track_id")
                label = doc.get("label")
                session.add(CvEvent(
                    occurred_at=occurred,
                    camera_id=camera.id if camera is not None else None,
                    zone_id=zone_id,
                    line_id=camera.line_id if camera is not None else None,
                    kind=doc["kind"][:64],
                    severity=event.severity,
                    label=str(label)[:128] if label is not None else None,
                    confidence=float(score) if score is not None and 0 <= score <= 1 else None,
                    track_id=str(track)[:64] if track is not None else None,
                    payload={**doc, "path": event.path},  # the camera code stays here when no Camera row matches
                    snapshot=event.attachments[0] if event.attachments else None,
                ))
                added += 1
        self.counters["stored"] += added
        return added

    # ------------------------------------------------------------------ background work

    async def _retention_loop(self) -> None:
        assert self.store is not None and self.settings is not None
        while True:
            try:
                await asyncio.to_thread(self.store.enforce_retention)
            except OSError as exc:
                log.warning("cv_events: snapshot retention failed: %s", exc)
            await asyncio.sleep(self.settings.retention_interval_s)

    async def _diagnostics_loop(self) -> None:
        from hub.errors import PlantbusError

        assert self.hub is not None and self.settings is not None
        while True:
            await asyncio.sleep(self.settings.diagnostics_interval_s)
            if self.counters == self._published:
                continue  # a hub that sees no camera traffic starts no derived-values node for it
            values = {k: self.counters[k] for k in ("received", "stored", "duplicates", "malformed", "snapshots_saved")}
            try:
                await self.hub.publish_derived(NAME, values)
            except PlantbusError as exc:
                log.warning("cv_events: counters not published: %s", exc)
                continue
            self._published = dict(self.counters)

    def diagnostics(self) -> dict[str, Any]:
        """Counters, the last malformed message and the subscription state, JSON-friendly."""
        return {
            **self.counters,
            "connected": self.connected,
            "held_snapshots": len(self._held),
            "last_malformed": self.last_malformed,
            "last_error": self.last_error,
            "snapshot_dir": str(self.store.root) if self.store is not None else None,
        }
