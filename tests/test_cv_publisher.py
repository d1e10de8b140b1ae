"""The CV publisher on a real Mosquitto: camera devices and metrics, events on the UNS, snapshots, durability.

Plus the snapshot store it writes to (retention, references that cannot escape the folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import aiomqtt
import cv2
import numpy as np
import pytest

from _edge_support import Subscriber, persistent_broker
from edge_cv.publisher import CvPublisher
from edge_cv.snapshots import SnapshotError, SnapshotStore, reference_for, safe_name
from edge_cv.types import CvEvent, RuleResult
from hub.app import Hub
from hub.broker import LocalMosquitto
from hub.config import UnsConfig
from hub.events import Severity
from hub.mqtt import BrokerUrl
from hub.uns_paths import UnsMapper
from plugin_support import config
from sparkplug_fakes import Watcher, running, wait_until

NODE = "cv-oatbar"
DAY_S = 86_400


def now_ms() -> int:
    return int(time.time() * 1000)


def from_thread(fn, *args) -> None:
    """Call `fn` from another thread, as a camera worker does, and wait for the call to return."""
    worker = threading.Thread(target=fn, args=args)
    worker.start()
    worker.join(5)


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def haar_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Faces OpenCV's stock frontal-face cascade finds: an independent witness for the blurring."""
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return [tuple(int(v) for v in f) for f in cascade.detectMultiScale(grey, 1.1, 5, minSize=(40, 40))]


def sharpness(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    grey = cv2.cvtColor(image[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


class Inbox(Subscriber):
    """Keeps (topic, payload, qos, retain) of every message; see `Subscriber` for reconnects and `persistent`."""

    def __init__(self, broker: LocalMosquitto, *filters: str, persistent: bool = False) -> None:
        super().__init__(broker, *filters, persistent=persistent)
        self.messages: list[tuple[str, bytes, int, bool]] = []

    def _record(self, m: aiomqtt.Message) -> None:
        self.messages.append((m.topic.value, bytes(m.payload), m.qos, m.retain))

    def on(self, suffix: str) -> list[tuple[str, bytes, int, bool]]:
        return [m for m in self.messages if m[0].endswith(suffix)]

    def events(self) -> list[dict]:
        return [json.loads(m[1]) for m in self.on("/cv/events")]


@contextlib.asynccontextmanager
async def publisher(broker: LocalMosquitto, state_dir: Path, group: str, **kw):
    pub = CvPublisher(NODE, broker=broker.url, state_dir=state_dir, group=group, metrics_interval_s=0.05,
                      backoff_min_s=0.05, backoff_max_s=0.3, **kw)
    await pub.start()
    try:
        yield pub
    finally:
        await pub.stop(flush_timeout=2)


# ---------------------------------------------------------------------------- the snapshot store


def test_snapshot_references_name_camera_day_and_id_and_never_lead_outside_the_folder(tmp_path):
    store = SnapshotStore(tmp_path / "snaps")
    when = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    ref = store.save("verifier", "abc123", when, b"\xff\xd8jpeg")
    assert ref == "verifier/2026-01-01/abc123.jpg"
    assert store.path_for(ref) == (tmp_path / "snaps" / ref).resolve()
    assert store.read(ref) == b"\xff\xd8jpeg"

    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "2026-01-01").mkdir()
    (outside / "2026-01-01" / "x.jpg").write_bytes(b"\xff\xd8secret")
    (tmp_path / "snaps" / "linked").symlink_to(outside)
    for bad in ("../secret/2026-01-01/x.jpg", "verifier/2026-01-01/../../../secret/2026-01-01/x.jpg",
                "/etc/passwd", "verifier/2026-01-01/abc123.png", "verifier/../2026-01-01/abc123.jpg",
                "verifier/20260101/abc123.jpg", "linked/2026-01-01/x.jpg", "verifier/2026-01-01/..jpg", ""):
        with pytest.raises(SnapshotError):
            store.path_for(bad)
    with pytest.raises(SnapshotError, match="not a JPEG"):
        store.save_reference("verifier/2026-01-01/other.jpg", b"GIF89a")
    with pytest.raises(SnapshotError):
        store.save_reference("../escape/2026-01-01/x.jpg", b"\xff\xd8")
    assert not (tmp_path / "escape").exists()

    # Ids that are not file names become safe ones, and two different ids never share a file.
    odd = ["a/b", "a_b", "..", "x y", "ümlaut", "a" * 300]
    names = [safe_name(i) for i in odd]
    assert len(set(names)) == len(odd) and names[1] == "a_b"
    for name in names:
        assert "/" not in name and ".." not in name and len(name) <= 128
        store.path_for(reference_for("cam", name, when))


def test_snapshot_retention_drops_old_days_then_the_oldest_files_until_the_folder_fits(tmp_path):
    store = SnapshotStore(tmp_path / "snaps", retention_days=7, max_mb=10_000 / 1024 / 1024)  # a 10,000-byte budget
    now = time.time()
    refs = []
    for i, age_days in enumerate([30, 8, 3, 2, 1, 0.5]):
        t = now - age_days * DAY_S
        ref = store.save("cam", f"e{i}", int(t * 1000), b"\xff\xd8" + bytes(2998))  # 3,000 bytes each
        os.utime(store.path_for(ref), (t, t))
        refs.append(ref)
    report = store.enforce_retention(now)
    # The 30- and 8-day-old ones are past retention; of the other four (12,000 bytes) the oldest goes.
    kept = [r for r in refs if store.path_for(r).exists()]
    assert kept == refs[3:]
    assert (report.deleted_files, report.kept_files, report.kept_bytes) == (3, 3, 9000)
    assert not (tmp_path / "snaps" / "cam" / refs[0].split("/")[1]).exists()  # empty day folders go too

    # Once the total is known, a save that exceeds the budget runs retention at once.
    newest = store.save("cam", "e9", now_ms(), b"\xff\xd8" + bytes(2998))
    assert store.path_for(newest).exists() and not store.path_for(refs[3]).exists()
    assert store.usage() == (3, 9000)


# ---------------------------------------------------------------------------- on the broker


async def test_each_camera_is_a_device_with_health_and_rule_metrics_that_dies_with_its_source(
    broker, group_id, tmp_path
):
    hub = Hub(config(tmp_path, broker.url), plugins=[])
    host = hub.host
    path = f"uns/{group_id}/{NODE}/verifier"
    async with running(hub), publisher(broker, tmp_path / "edge", group_id, cameras=["verifier"],
                                       primary_host_id="plant") as pub:
        await host.wait_online()
        await wait_until(lambda: host.current(f"{path}/kind"), 10, "the camera's DBIRTH")
        assert host.current(f"{path}/kind").value == "camera"
        for name in ("online", "fps", "latency_ms", "frames", "frames_dropped", "reconnects", "last_error",
                     "events", "violations", "model_confidence"):
            assert host.current(f"{path}/{name}") is not None, name

        # From camera worker threads, as the runner calls it.
        from_thread(pub.update_health, "verifier", {"online": True, "fps": np.float32(9.5), "latency_ms": 41.2,
                                                    "frames": 120, "frames_dropped": 2, "model_confidence": 0.83})
        from_thread(pub.publish, "verifier", RuleResult(metrics={"count_in": 3, "count_out": 1}), "packed")
        await wait_until(lambda: (s := host.current(f"{path}/packed/count_in")) and s.value == 3, 5, "a rule counter")
        assert host.current(f"{path}/packed/count_out").value == 1
        assert host.current(f"{path}/fps").value == 9.5 and host.current(f"{path}/frames").value == 120
        assert host.current(f"{path}/model_confidence").value == pytest.approx(0.83)
        assert host.node_online(group_id, NODE, "verifier")

        from_thread(pub.publish, "verifier", RuleResult(metrics={"count_in": 4, "count_out": 1}), "packed")
        await wait_until(lambda: host.current(f"{path}/packed/count_in").value == 4, 5, "the counter to move")

        from_thread(pub.update_health, "verifier", {"online": False, "last_error": "stream stalled for 10 s",
                                                    "reconnects": 1})
        await wait_until(lambda: not host.node_online(group_id, NODE, "verifier"), 5, "DDEATH of the camera")
        # The error went out before the death, so it is what the hub keeps (now stale) for the console.
        assert host.current(f"{path}/last_error").value == "stream stalled for 10 s"
        assert host.node_online(group_id, NODE)  # the other cameras' node lives on

        from_thread(pub.update_health, "verifier", {"online": True, "last_error": None})
        await wait_until(lambda: host.node_online(group_id, NODE, "verifier"), 5, "DBIRTH after recovery")
        assert host.current(f"{path}/online").value is True and host.current(f"{path}/last_error").value == ""
        assert host.current(f"{path}/reconnects").value == 1 and host.current(f"{path}/packed/count_in").value == 4

        # A metric name that clashes with a declared one (names are compared ignoring case) is refused alone.
        from_thread(pub.publish, "verifier", RuleResult(metrics={"FPS": 1.0, "packed/count_in": 6}))
        await wait_until(lambda: host.current(f"{path}/packed/count_in").value == 6, 5, "the good metric")
        assert host.current(f"{path}/fps").value == 9.5 and host.current(f"{path}/FPS") is None


async def test_events_arrive_as_json_on_the_mirrors_camera_path_with_a_face_blurred_jpeg_outside_the_uns(
    broker, group_id, tmp_path
):
    uns = {"mappings": [{"group": group_id, "path": "zdorovo/plant1/{edge_node}/{device}"}]}
    hub = Hub(config(tmp_path, broker.url, uns=uns), plugins=[])
    # One subscriber as SCADA sees the plant (the mapped ISA-95 root), one on the hub's snapshot topics.
    watcher = await Watcher(BrokerUrl.parse(broker.url), "watch").start("zdorovo/#", "plantbus/cv/snapshots/#")
    image = astronaut_bgr()
    faces = haar_faces(image)
    assert faces, "the cascade must see the astronaut's face in the original, or the check below proves nothing"
    when = now_ms()
    event = CvEvent("verifier", "ppe", "no_mask", when, label="person", zone="floor", score=0.91,
                    box=(120.0, 30.0, 330.0, 512.0), track_id=7, severity=Severity.MEDIUM,
                    payload={"attribute": "mask"}, image=image)
    async with running(hub), publisher(broker, tmp_path / "edge", group_id, cameras=["verifier"],
                                       uns=UnsConfig.model_validate(uns), primary_host_id="plant") as pub:
        status = await watcher.wait_for("zdorovo/plant1/cv-oatbar/verifier/_status", timeout=10)
        device_path = status.topic.rpartition("/")[0]  # where the hub's mirror put the camera
        from_thread(pub.publish, "verifier", RuleResult(events=[event]), "ppe")
        message = await watcher.wait_for(f"{device_path}/cv/events")
        snap = await watcher.wait_for(f"plantbus/cv/snapshots/{device_path}/{event.id}")
        assert pub.events_topic("verifier") == f"{device_path}/cv/events"
        await wait_until(lambda: (s := hub.host.current(f"{device_path}/violations")) and s.value == 1, 5,
                         "the violation counter")
        assert hub.host.current(f"{device_path}/events").value == 1
        assert hub.host.current(f"{device_path}/model_confidence").value == pytest.approx(0.91)

    await watcher.stop()
    reference = f"verifier/{time.strftime('%Y-%m-%d', time.gmtime(when / 1000))}/{event.id}.jpg"
    assert message.qos == 1 and not message.retain and snap.qos == 1 and not snap.retain
    # The event did not wait for the face search: its picture follows it.
    assert watcher.messages.index(message) < watcher.messages.index(snap)
    assert message.json() == {
        "id": event.id, "camera": "verifier", "rule": "ppe", "kind": "no_mask", "label": "person", "zone": "floor",
        "score": 0.91, "box": [120.0, 30.0, 330.0, 512.0], "track_id": 7, "severity": "medium", "time": when,
        "snapshot": reference, "payload": {"attribute": "mask"}, "group": group_id, "edge_node": NODE,
    }
    # The bytes on the broker are the file the edge kept, a JPEG of the whole frame with the face blurred.
    assert snap.payload == pub.snapshots.read(reference)
    jpeg = cv2.imdecode(np.frombuffer(snap.payload, np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == image.shape
    assert haar_faces(jpeg) == []
    face = max(faces, key=lambda f: f[2] * f[3])
    assert sharpness(jpeg, face) < sharpness(image, face) / 5
    rocket = (380, 400, 100, 100)  # away from the face: only JPEG's own loss
    assert sharpness(jpeg, rocket) > sharpness(image, rocket) / 2
    # The ISA-95 tree carried plain JSON only: the picture never appeared under it.
    under_root = [m for m in watcher.messages if m.topic.startswith("zdorovo/")]
    assert message in under_root
    assert all(json.loads(m.payload) is not None for m in under_root if m.payload)


async def test_events_produced_while_the_broker_is_down_are_delivered_when_it_is_back(group_id, tmp_path):
    with persistent_broker(tmp_path) as broker:
        mapper = UnsMapper(UnsConfig())
        topic = str(mapper.device_path(group_id, NODE, "verifier").child("cv", "events"))
        async with Inbox(broker, f"uns/{group_id}/+/+/cv/#", f"plantbus/cv/snapshots/uns/{group_id}/+/+/+",
                         persistent=True) as inbox:
            async with publisher(broker, tmp_path / "edge", group_id, cameras=["verifier"], blur_faces=False) as pub:
                first = CvEvent("verifier", "sanitation", "spill", now_ms(), image=astronaut_bgr()[:64, :64])
                from_thread(pub.publish, "verifier", RuleResult(events=[first]), "floor")
                await wait_until(lambda: inbox.events(), 5, "the first event")

                # Outage while the publisher runs: events wait in its outbox and go once the broker is back.
                broker.stop()
                outage = [CvEvent("verifier", "counting", "crossed", now_ms() + i, label="bar", payload={"n": i})
                          for i in range(3)]
                for e in outage:
                    from_thread(pub.publish, "verifier", RuleResult(events=[e]), "packed")
                await wait_until(lambda: pub.events_published == 4 and pub.diagnostics()["queued"] == 3, 5,
                                 "the outage's events in the outbox")
                broker.start()
                await wait_until(lambda: len(inbox.events()) == 4, 15, "the outage's events after the restart")
                assert pub.diagnostics()["queued"] == 0

                # Outage across a restart of the edge process itself: the outbox is on disk.
                broker.stop()
                late = CvEvent("verifier", "sanitation", "spill", now_ms() + 10, image=astronaut_bgr()[:64, :64])
                from_thread(pub.publish, "verifier", RuleResult(events=[late]), "floor")
                await wait_until(lambda: pub.diagnostics()["queued"] == 2, 5, "the late event and its snapshot")
            broker.start()
            async with publisher(broker, tmp_path / "edge", group_id, cameras=["verifier"], blur_faces=False) as again:
                await wait_until(lambda: len(inbox.events()) == 5, 15, "the event left by the stopped process")
                assert await again.wait_sent(5)

        ids = [e["id"] for e in inbox.events()]
        assert ids == [first.id] + [e.id for e in outage] + [late.id]  # each once, in order
        assert {m[0] for m in inbox.on("/cv/events")} == {topic}
        snapshots = [m for m in inbox.messages if m[0].startswith("plantbus/cv/snapshots/")]
        assert [m[0] for m in snapshots] == [f"plantbus/cv/snapshots/{topic.removesuffix('/cv/events')}/{e.id}"
                                             for e in (first, late)]
        assert [m for m in inbox.messages if m[0].startswith("uns/")] == inbox.on("/cv/events")  # JSON only there
        assert all(m[1].startswith(b"\xff\xd8") for m in snapshots)
        assert inbox.events()[-1]["snapshot"] == reference_for("verifier", late.id, late.time_ms)
