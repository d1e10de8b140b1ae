"""The built-in cv_events plugin in a real Hub on a real Mosquitto: CV events become relational rows exactly once,
snapshots land in the hub's folder, events reach the bus, malformed messages are counted and never crash it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from datetime import UTC, datetime

import cv2
import numpy as np
from sqlmodel import select

from _db_support import database, database_url, postgres  # noqa: F401 - fixtures
from edge_cv.publisher import CvPublisher
from edge_cv.snapshots import SnapshotStore, reference_for
from edge_cv.types import CvEvent, RuleResult
from hub import uns_paths
from hub.app import Hub
from hub.db import Database
from hub.events import Event, Severity
from hub.models import Camera, CvEvent as CvEventRow, Line, Zone
from hub.mqtt import BrokerUrl
from hub.plugins import DEFAULT_PLUGINS
from hub.uns_paths import UnsPath
from plugin_support import Recorder, config
from plugins import cv_events
from sparkplug_fakes import Watcher, running, wait_until
from test_cv_publisher import from_thread

NODE = "cv-oatbar"


def now_ms() -> int:
    return int(time.time() * 1000)


def picture(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)


def jpeg(seed: int = 1) -> bytes:
    return cv2.imencode(".jpg", picture(seed))[1].tobytes()


def hub_config(tmp_path, broker_url: str):
    return config(tmp_path, broker_url, plugins={"cv_events": {"diagnostics_interval_s": 0.1}})


def seed_plant(cfg) -> dict[str, int]:
    """Migrate the hub's database and give it the camera `verifier` watching zone `floor` of line `oatbar`."""
    with Database.from_config(cfg) as db:
        db.upgrade()
        with db.session(actor="test") as s:
            line = Line(code="oatbar", name="Oat bar line")
            s.add(line)
            s.flush()
            zone = Zone(code="floor", name="Floor", line_id=line.id)
            packing = Zone(code="packing", name="Packing", line_id=line.id)
            s.add_all([zone, packing])
            s.flush()
            camera = Camera(code="verifier", name="Verifier", zone_id=zone.id, line_id=line.id, stream_url="rtsp://x")
            s.add(camera)
            s.flush()
            return {"line": line.id, "floor": zone.id, "packing": packing.id, "camera": camera.id}


def rows(cfg) -> list[CvEventRow]:
    with Database.from_config(cfg) as db, db.session() as s:
        return list(s.exec(select(CvEventRow).order_by(CvEventRow.id)))


def make_hub(cfg, witness: Recorder) -> Hub:
    return Hub(cfg, plugins=[("cv_events", cv_events.Plugin), ("witness", witness)])


async def started(hub: Hub) -> cv_events.Plugin:
    await hub.host.wait_online()
    plugin = await wait_until(lambda: getattr(hub, "cv_events", None), 5, "the plugin to start")
    await wait_until(lambda: plugin.connected, 5, "the plugin's subscription")
    return plugin


async def raw_publish(broker_url: str, topic: str, payload: bytes) -> None:
    from hub.mqtt import make_client

    async with make_client(BrokerUrl.parse(broker_url), f"tool-{time.monotonic_ns()}") as client:
        await client.publish(topic, payload, qos=1)


def test_cv_events_is_a_default_plugin_and_its_filters_follow_the_uns_mappings():
    assert "cv_events=plugins.cv_events:Plugin" in DEFAULT_PLUGINS
    from hub.config import UnsConfig

    uns = UnsConfig.model_validate({"prefix": "uns", "mappings": [
        {"group": "plant1", "edge_node": "cv-*", "path": "zdorovo/plant1/packaging/{edge_node}/{device}"},
        {"group": "plant1", "path": "zdorovo/plant1/line-{device}"}]})
    events, snapshots = cv_events.subscription_filters(uns)
    assert events == ["zdorovo/plant1/packaging/+/+/cv/events", "zdorovo/plant1/+/cv/events", "uns/+/+/+/cv/events"]
    # The pictures are outside the UNS: the camera's device path below the hub's `plantbus/cv/snapshots`.
    assert snapshots == ["plantbus/cv/snapshots/zdorovo/plant1/packaging/+/+/+",
                         "plantbus/cv/snapshots/zdorovo/plant1/+/+", "plantbus/cv/snapshots/uns/+/+/+/+"]


def test_snapshot_topics_carry_the_camera_device_path_and_the_event_id_back():
    device = UnsPath.parse("zdorovo/plant1/packaging/cv-oatbar/verifier")
    topic = str(uns_paths.snapshot_topic(device, "e1"))
    assert topic == "plantbus/cv/snapshots/zdorovo/plant1/packaging/cv-oatbar/verifier/e1"
    assert uns_paths.parse_snapshot_topic(topic) == (str(device), "e1")
    # A device path ending in `cv` and an event id `events` is still a snapshot, not an event stream.
    assert uns_paths.parse_snapshot_topic("plantbus/cv/snapshots/uns/p/n/cv/events") == ("uns/p/n/cv", "events")
    for outside in ("uns/p/n/cam/cv/snapshots/e1", "plantbus/cv/snapshots/e1", "plantbus/status"):
        assert uns_paths.parse_snapshot_topic(outside) is None


async def test_events_become_one_row_each_with_the_snapshot_in_the_hubs_folder_and_go_onto_the_bus(
    broker, group_id, tmp_path
):
    cfg = hub_config(tmp_path, broker.url)
    ids = seed_plant(cfg)
    witness = Recorder()
    hub = make_hub(cfg, witness)
    device_path = f"uns/{group_id}/{NODE}/verifier"
    seen = CvEvent("verifier", "ppe", "no_hairnet", now_ms(), label="person", zone="packing", score=0.87,
                   box=(10.0, 10.0, 90.0, 110.0), track_id=42, severity=Severity.HIGH, payload={"frames": 5},
                   image=picture())
    counted = CvEvent("verifier", "packed", "crossed", now_ms() + 1, label="bar", score=1.7)  # no zone, no image
    pub = CvPublisher(NODE, broker=broker.url, state_dir=tmp_path / "edge", group=group_id, cameras=["verifier"],
                      blur_faces=False, primary_host_id="plant")
    # What SCADA subscribed to the whole UNS gets: it must be plain JSON, never the snapshot's bytes.
    scada = await Watcher(BrokerUrl.parse(broker.url), "scada").start("uns/#")
    async with running(hub):
        plugin = await started(hub)
        await pub.start()
        try:
            from_thread(pub.publish, "verifier", RuleResult(events=[seen, counted]), "ppe")
            await wait_until(lambda: plugin.counters["stored"] == 2, 10, "both rows")
            assert await pub.wait_sent(5)
        finally:
            await pub.stop()
        edge_ref = reference_for("verifier", seen.id, seen.time_ms)
        await wait_until(lambda: plugin.counters["snapshots_saved"] == 1, 5, "the snapshot copy")
        await scada.stop()
        on_uns = [m for m in scada.messages if m.payload]
        assert {m.topic for m in on_uns} >= {f"{device_path}/cv/events", f"{device_path}/kind"}
        assert all(isinstance(json.loads(m.payload), dict) for m in on_uns)

        # The edge resends (a lost PUBACK): the same messages again are neither forwarded nor stored twice.
        payload = json.dumps({**seen.to_json(), "snapshot": edge_ref, "group": group_id, "edge_node": NODE}).encode()
        for _ in range(2):
            await raw_publish(broker.url, f"{device_path}/cv/events", payload)
        await wait_until(lambda: plugin.counters["duplicates"] == 2, 5, "two duplicates")

        # A camera the database does not know keeps its code in the payload; here the picture comes first (the
        # edge sends events first, but a broker need not keep order across topics).
        stranger = {**seen.to_json(), "id": "stranger1", "camera": "cam-x", "zone": None,
                    "snapshot": reference_for("cam-x", "stranger1", seen.time_ms)}
        await raw_publish(broker.url, f"plantbus/cv/snapshots/uns/{group_id}/{NODE}/cam-x/stranger1", jpeg(2))
        await raw_publish(broker.url, f"uns/{group_id}/{NODE}/cam-x/cv/events", json.dumps(stranger).encode())
        await wait_until(lambda: plugin.counters["stored"] == 3 and plugin.counters["snapshots_saved"] == 2, 5,
                         "the stranger's row and snapshot")
        await asyncio.sleep(0.3)  # time for anything that should not happen

    stored = rows(cfg)
    assert len(stored) == 3
    first, second, third = stored
    assert first.payload["id"] == seen.id and first.kind == "no_hairnet" and first.severity is Severity.HIGH
    assert (first.camera_id, first.zone_id, first.line_id) == (ids["camera"], ids["packing"], ids["line"])
    assert first.label == "person" and first.confidence == 0.87 and first.track_id == "42"
    assert first.occurred_at == datetime.fromtimestamp(seen.time_ms / 1000, UTC)
    assert first.snapshot == edge_ref and first.payload["payload"] == {"frames": 5}
    assert first.payload["edge_node"] == NODE and first.payload["path"] == device_path
    # No zone in the event: the camera's own zone; a score outside 0..1 is kept in the payload only.
    assert (second.kind, second.zone_id, second.confidence, second.snapshot) == ("crossed", ids["floor"], None, None)
    assert second.payload["score"] == 1.7
    assert third.camera_id is None and third.line_id is None and third.payload["camera"] == "cam-x"

    # The hub's copy is byte for byte the edge's, under the same reference.
    hub_store = SnapshotStore(tmp_path / "state" / "cv" / "snapshots")
    assert hub_store.read(edge_ref) == pub.snapshots.read(edge_ref)
    assert hub_store.read(third.snapshot) == jpeg(2)

    forwarded = [e for e in witness.events if e.kind == "cv_detection"]
    assert [e.payload["id"] for e in forwarded] == [seen.id, counted.id, "stranger1"]
    assert isinstance(forwarded[0], Event) and forwarded[0].path == device_path
    assert forwarded[0].attachments == (edge_ref,) and forwarded[0].severity is Severity.HIGH
    assert forwarded[0].source == "edge_cv" and forwarded[0].time == seen.time_ms

    # A later hub (its memory of ids gone) still stores nothing twice: the database knows the id.
    witness2 = Recorder()
    hub2 = make_hub(cfg, witness2)
    async with running(hub2):
        plugin2 = await started(hub2)
        await raw_publish(broker.url, f"{device_path}/cv/events", payload)
        await wait_until(lambda: plugin2.counters["duplicates"] == 1, 5, "the database to refuse the duplicate")
    assert len(rows(cfg)) == 3
    assert plugin2.counters["stored"] == 0


async def test_malformed_event_messages_are_counted_logged_once_and_shown_in_diagnostics(
    broker, group_id, tmp_path, caplog
):
    cfg = hub_config(tmp_path, broker.url)
    seed_plant(cfg)
    hub = make_hub(cfg, Recorder())
    topic = f"uns/{group_id}/{NODE}/verifier/cv/events"
    good = {"id": "ok1", "camera": "verifier", "rule": "r", "kind": "spill", "time": now_ms(), "severity": "low"}
    caplog.set_level(logging.WARNING, logger="plugins.cv_events")
    async with running(hub):
        plugin = await started(hub)
        for payload in (b"not json", b"[1, 2]", json.dumps({**good, "id": ""}).encode(),
                        json.dumps({**good, "time": "yesterday"}).encode(),
                        json.dumps({**good, "severity": "apocalyptic"}).encode(), b"\xff\xfe\x00"):
            await raw_publish(broker.url, topic, payload)
        await raw_publish(broker.url, topic, json.dumps(good).encode())
        await wait_until(lambda: plugin.counters["stored"] == 1, 5, "the good event after the bad ones")
        assert plugin.counters["malformed"] == 6
        derived = "uns/Plantbus/analytics/cv_events/malformed"
        await wait_until(lambda: (s := hub.host.current(derived)) is not None and s.value == 6, 5,
                         "the malformed counter on the UNS")
        assert hub.plugins.status["cv_events"].state == "running"
        assert "not JSON" in plugin.diagnostics()["last_malformed"]  # the latest one: the UTF-16 junk
    warnings = [r for r in caplog.records if r.name == "plugins.cv_events" and "malformed" in r.getMessage()]
    assert len(warnings) == 1 and "not JSON" in warnings[0].getMessage()
    assert [r.severity for r in rows(cfg)] == [Severity.LOW]


async def test_a_hub_whose_configured_database_is_not_migrated_says_so_and_runs_without_the_plugin(
    broker, tmp_path
):
    cfg = config(tmp_path, broker.url, database={"url": f"sqlite:///{tmp_path / 'configured.sqlite'}"},
                 plugins={"cv_events": {"diagnostics_interval_s": 0.1}})
    hub = make_hub(cfg, Recorder())
    async with running(hub):
        await hub.host.wait_online()
        status = hub.plugins.status["cv_events"]
        assert status.state == "failing" and "plantbus db upgrade" in status.last_error


async def test_the_embedded_default_database_is_migrated_at_start(broker, tmp_path):
    cfg = hub_config(tmp_path, broker.url)
    hub = make_hub(cfg, Recorder())
    async with running(hub):
        await hub.host.wait_online()
        await wait_until(lambda: hasattr(hub, "cv_events"), 10, "the plugin to start")
        assert hub.plugins.status["cv_events"].state == "running"
    with Database.from_config(cfg) as db:
        db.require_current_schema()  # raises when the file was not brought to the current revision


def test_storing_is_idempotent_by_event_id_on_sqlite_and_postgresql(database):  # noqa: F811
    plugin = cv_events.Plugin()
    plugin.database = database
    plugin._db = concurrent.futures.ThreadPoolExecutor(1)
    base = {"camera": "verifier", "rule": "r", "kind": "spill", "severity": "medium", "score": 0.5}
    t = 1_767_225_600_123
    events = [Event("cv_detection", "uns/p/n/verifier", t, Severity.MEDIUM, {**base, "id": i, "time": t}, (),
                    "edge_cv") for i in ("a", "b", "a")]
    try:
        assert plugin._db.submit(plugin._store_rows, events).result() == 2  # the repeat within a batch too
        assert plugin._db.submit(plugin._store_rows, events[:1]).result() == 0
    finally:
        plugin._db.shutdown()
    with database.session() as s:
        assert sorted(r.payload["id"] for r in s.exec(select(CvEventRow))) == ["a", "b"]
