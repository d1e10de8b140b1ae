"""Cameras: every CV edge node's cameras online/offline with health and counters, and the latest events live.

Camera devices are found in the console's tag store (the UNS mirror of the cv edge nodes: a device whose `kind`
metric is "camera", with its `_status` for online/offline). Events come from a subscription of their own to the
`…/cv/events` topics (`CvEventFeed`), because the mirror's tag store keeps values, not a stream of events. Each
event's snapshot is an `<img>` served by the console from the hub's snapshot folder (`register_snapshot_route`),
which accepts only snapshot references and nothing outside that folder.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from nicegui import ui

from edge_cv.snapshots import SnapshotError, SnapshotStore, is_reference
from plugins.cv_events import EVENTS_SUFFIX, MalformedEvent, parse_event, subscription_filters
from ui.i18n import table_props
from ui.uns_client import TagStore

if TYPE_CHECKING:
    from hub.config import UnsConfig
    from ui.app import Console
    from ui.i18n import Translator

SNAPSHOT_ROUTE = "/cv/snapshots"
KIND_METRIC = "kind"
CAMERA_KIND = "camera"
HEALTH = ("online", "fps", "latency_ms", "frames", "frames_dropped", "reconnects", "last_error", "events",
          "violations", "model_confidence")
EVENT_ROWS = 50
THUMB_WAIT_MS = 120_000  # how long after an event the page keeps looking for its snapshot to arrive


def cv_event_filters(uns: UnsConfig) -> list[str]:
    """The topic filters of the CV event streams (not the snapshots: the console reads those from disk)."""
    return subscription_filters(uns)[0]


@dataclass
class CvEventFeed:
    """The latest CV events from the broker, newest first; fed by a `UnsClient` (single event loop only)."""

    limit: int = 200
    events: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    version: int = 0
    messages: int = 0
    malformed: int = 0
    _ids: set[str] = field(default_factory=set)

    def update(self, topic: str, payload: bytes | str, received_ms: int | None = None) -> None:
        """Take one message of a `…/cv/events` topic (anything else is ignored)."""
        if not topic.endswith(EVENTS_SUFFIX):
            return
        self.messages += 1
        raw = payload.encode() if isinstance(payload, str) else bytes(payload)
        try:
            doc = parse_event(raw)
        except MalformedEvent:
            self.malformed += 1
            return
        if doc["id"] in self._ids:
            return  # delivered twice (QoS 1, or resent by the edge): shown once
        doc["_path"] = topic[: -len(EVENTS_SUFFIX)]
        doc["_received"] = received_ms if received_ms is not None else int(time.time() * 1000)
        self.events.appendleft(doc)
        self._ids.add(doc["id"])
        while len(self.events) > self.limit:
            self._ids.discard(self.events.pop()["id"])
        self.version += 1


def camera_paths(store: TagStore) -> list[str]:
    """UNS paths of the camera devices the mirror shows (their `kind` metric says "camera")."""
    suffix = "/" + KIND_METRIC
    return sorted(path[: -len(suffix)] for path, tag in store.tags.items()
                  if path.endswith(suffix) and tag.value == CAMERA_KIND)


def _number(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def camera_rows(store: TagStore, t: Translator) -> list[dict[str, Any]]:
    """One row per camera: node, state, health and counters; offline cameras first."""
    from ui.app import format_ts

    cameras = camera_paths(store)
    metrics: dict[str, dict[str, Any]] = {path: {} for path in cameras}
    counters: dict[str, list[str]] = {path: [] for path in cameras}
    for path, tag in store.tags.items():
        parent, _, name = path.rpartition("/")
        if parent in metrics:
            metrics[parent][name] = tag.value
            continue
        grand, _, rule = parent.rpartition("/")
        if grand in counters and rule != "cv":
            counters[grand].append(f"{rule}/{name} {_number(tag.value, 2)}")
    rows = []
    for path in cameras:
        status = store.nodes.get(path)
        values = metrics[path]
        online = bool(status.online if status is not None else values.get("online"))
        node = status.edge_node if status is not None and status.edge_node else path.rsplit("/", 2)[-2]
        camera = status.device if status is not None and status.device else path.rsplit("/", 1)[-1]
        conf = values.get("model_confidence")
        rows.append({
            "path": path, "node": node, "camera": camera, "online": online,
            "state": t("overview.online" if online else "overview.offline"),
            "since": format_ts(status.timestamp) if status is not None else "",
            "fps": _number(values.get("fps")), "latency": _number(values.get("latency_ms")),
            "frames": _number(values.get("frames")), "dropped": _number(values.get("frames_dropped")),
            "reconnects": _number(values.get("reconnects")), "events": _number(values.get("events")),
            "violations": _number(values.get("violations")),
            "confidence": _number(conf, 2) if isinstance(conf, (int, float)) else "",
            "last_error": values.get("last_error") or "", "counters": ", ".join(sorted(counters[path])),
        })  # fmt: skip
    rows.sort(key=lambda r: (r["online"], r["node"], r["camera"]))
    return rows


def snapshot_url(reference: Any, root: Path | None) -> str:
    """The console URL of a stored snapshot, or "" when the reference is not one or the file is not there (yet)."""
    if root is None or not is_reference(reference) or not (root / reference).is_file():
        return ""
    return f"{SNAPSHOT_ROUTE}/{quote(reference)}"


def event_rows(feed: CvEventFeed, t: Translator, root: Path | None, limit: int = EVENT_ROWS) -> list[dict[str, Any]]:
    """The newest events as table rows, each with its snapshot URL once the hub has stored the snapshot."""
    from ui.app import format_ts

    rows = []
    recent = time.time() * 1000 - THUMB_WAIT_MS
    for doc in list(feed.events)[:limit]:
        score = doc.get("score")
        rows.append({
            "id": doc["id"], "time": format_ts(doc.get("time")), "camera": doc.get("camera", ""),
            "node": doc.get("edge_node") or "", "rule": doc.get("rule") or "", "kind": doc.get("kind", ""),
            "label": doc.get("label") or "", "zone": doc.get("zone") or "",
            "score": f"{score:.2f}" if isinstance(score, (int, float)) else "",
            "severity": t(f"severity.{doc.get('severity', 'info')}"), "sev": doc.get("severity", "info"),
            "thumb": snapshot_url(doc.get("snapshot"), root),
            "waiting": is_reference(doc.get("snapshot")) and doc["_received"] > recent,
        })  # fmt: skip
    return rows


def snapshot_dir(console: Console) -> Path | None:
    """The hub's snapshot folder: the in-process hub's plugin's, else the one the console was configured with."""
    plugin = getattr(console.hub, "cv_events", None) if console.hub is not None else None
    store = getattr(plugin, "store", None)
    if store is not None:
        return Path(store.root)
    return console.settings.snapshot_dir


def register_snapshot_route(console: Console) -> None:
    """`GET /cv/snapshots/<reference>`: the JPEG, or 404 for anything that is not a stored snapshot."""
    from fastapi import Response
    from fastapi.responses import FileResponse
    from nicegui import app

    @app.get(SNAPSHOT_ROUTE + "/{reference:path}")
    def snapshot(reference: str) -> Response:  # sync: FastAPI runs it in a thread, the disk never blocks the loop
        root = snapshot_dir(console)
        if root is None:
            return Response(status_code=404)
        try:
            path = SnapshotStore(root).path_for(reference)
        except SnapshotError:
            return Response(status_code=404)
        if not path.is_file():
            return Response(status_code=404)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


def build(console: Console, t: Translator) -> None:
    """Draw the cameras page for one visitor."""
    from ui.app import REFRESH_S

    store = console.store
    feed = console.cv_events
    root = snapshot_dir(console)
    seen: dict[str, Any] = {"tags": -1, "events": -1, "waiting": False}
    with ui.column().classes("w-full gap-4"):
        with ui.card().classes("w-full"):
            with ui.row().classes("items-center gap-4"):
                ui.label(t("cameras.title")).classes("text-subtitle1 font-bold")
                summary = ui.label().props("id=cameras-summary")
            cameras = ui.table(
                columns=[
                    {"name": "node", "label": t("col.cv_node"), "field": "node", "align": "left"},
                    {"name": "camera", "label": t("col.camera"), "field": "camera", "align": "left"},
                    {"name": "state", "label": t("col.state"), "field": "state"},
                    {"name": "fps", "label": t("col.fps"), "field": "fps"},
                    {"name": "latency", "label": t("col.latency"), "field": "latency"},
                    {"name": "frames", "label": t("col.frames"), "field": "frames"},
                    {"name": "dropped", "label": t("col.dropped"), "field": "dropped"},
                    {"name": "reconnects", "label": t("col.reconnects"), "field": "reconnects"},
                    {"name": "events", "label": t("col.events"), "field": "events"},
                    {"name": "violations", "label": t("col.violations"), "field": "violations"},
                    {"name": "confidence", "label": t("col.confidence"), "field": "confidence"},
                    {"name": "counters", "label": t("col.counters"), "field": "counters", "align": "left"},
                    {"name": "last_error", "label": t("col.last_error"), "field": "last_error", "align": "left"},
                ],
                rows=[], row_key="path", pagination=25,
            ).props("dense flat bordered").classes("w-full").props("id=cameras-table")
            cameras.props.update(table_props(t), **{":rows-per-page-options": "[10, 25, 50, 100]"})
            cameras.add_slot("body-cell-state", r"""
                <q-td :props="props"><q-badge :color="props.row.online ? 'green-8' : 'red-8'" :label="props.value" /></q-td>
            """)
        with ui.card().classes("w-full"):
            with ui.row().classes("items-center gap-4"):
                ui.label(t("cameras.events")).classes("text-subtitle1 font-bold")
                events_summary = ui.label().props("id=events-summary")
            events = ui.table(
                columns=[
                    {"name": "thumb", "label": t("col.snapshot"), "field": "thumb"},
                    {"name": "time", "label": t("col.time"), "field": "time", "align": "left"},
                    {"name": "camera", "label": t("col.camera"), "field": "camera", "align": "left"},
                    {"name": "rule", "label": t("col.rule"), "field": "rule", "align": "left"},
                    {"name": "kind", "label": t("col.kind"), "field": "kind", "align": "left"},
                    {"name": "label", "label": t("col.label"), "field": "label"},
                    {"name": "zone", "label": t("col.zone"), "field": "zone"},
                    {"name": "score", "label": t("col.score"), "field": "score"},
                    {"name": "severity", "label": t("col.severity"), "field": "severity"},
                ],
                rows=[], row_key="id", pagination=EVENT_ROWS,
            ).props("dense flat bordered").classes("w-full").props("id=events-table")
            events.props.update(table_props(t), **{":rows-per-page-options": "[10, 25, 50]"})
            events.add_slot("body-cell-thumb", r"""
                <q-td :props="props">
                  <a v-if="props.value" :href="props.value" target="_blank">
                    <img :src="props.value" class="cv-thumb" style="height:72px;border-radius:4px" loading="lazy" />
                  </a>
                </q-td>
            """)
            events.add_slot("body-cell-severity", r"""
                <q-td :props="props"><q-badge :color="props.row.sev === 'info' ? 'blue-grey-6' :
                  (props.row.sev === 'low' ? 'amber-8' : 'red-8')" :label="props.value" /></q-td>
            """)

    def refresh() -> None:
        if store.version != seen["tags"]:
            seen["tags"] = store.version
            rows = camera_rows(store, t)
            online = sum(1 for r in rows if r["online"])
            summary.text = t("cameras.summary", online=online, total=len(rows)) if rows else t("cameras.empty")
            if rows != cameras.rows:
                cameras.rows = rows
                cameras.update()
        # Events usually arrive before their snapshot (the edge sends the event first): recent rows without a
        # picture are looked at again until it is there.
        if feed.version != seen["events"] or seen["waiting"]:
            seen["events"] = feed.version
            rows = event_rows(feed, t, root)
            seen["waiting"] = any(r["waiting"] and not r["thumb"] for r in rows)
            events_summary.text = t("cameras.events_count", n=len(feed.events)) if rows else t("cameras.events_empty")
            if rows != events.rows:
                events.rows = rows
                events.update()

    refresh()
    ui.timer(REFRESH_S, refresh)
