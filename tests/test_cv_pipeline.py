"""Camera pipelines on synthetic scenes: events and counters into a recording sink, failures isolated per stage,
rule and camera, and the runner that runs several cameras in one process and stops them cleanly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from edge_cv.config import CameraConfig, CvConfig
from edge_cv.pipeline import CameraParts, CameraPipeline
from edge_cv.runner import CvRunner, check_camera
from edge_cv.scenes import SceneSpec, generate
from edge_cv.types import CvEvent, Detection, Frame, RuleResult, Track
from hub.broker import free_port
from _cv_support import RecordingSink, wait_until

# The synthetic conveyor at 640x360: the belt between y 64 and 295, products moving left to right.
CONVEYOR = {
    "source": "synthetic:conveyor?seed=11&width=640&height=360&duration_s=12&product_rate=40",
    "fps": 10,
    "realtime": False,
    "detector": {"type": "blob", "min_area": 1500},  # a fifth of the smallest pack at 640 px: no fragments
    "lines": {"centre": {"points": [[320, 64], [320, 295]], "in_direction": "right"}},
    "rules": {"packed": {"type": "counting", "line": "centre", "labels": ["product"], "emit_events": True}},
}


def camera_config(**changes: Any) -> CameraConfig:
    return CameraConfig.model_validate({**CONVEYOR, **changes})


def scene_frames(seed: int = 11, seconds: float = 12.0) -> list[Frame]:
    spec = SceneSpec(kind="conveyor", seed=seed, width=640, height=360, fps=10, duration_s=seconds, product_rate=40)
    return [f.to_frame("verifier") for f in generate(spec)]


def test_a_synthetic_conveyor_camera_counts_products_into_the_sink() -> None:
    sink = RecordingSink()
    pipeline = CameraPipeline.from_config("cv-oatbar", "verifier", camera_config(), sink)
    pipeline.start()
    try:
        assert wait_until(lambda: pipeline.source.state == "ended", 60), pipeline.stats()  # type: ignore[union-attr]
    finally:
        pipeline.stop()
    stats = pipeline.stats()
    assert stats["frames"] == 120 and stats["errors"] == 0
    events = sink.events
    assert events, "no product crossed the line"
    assert all(e.rule == "packed" and e.camera == "verifier" and e.kind for e in events)
    # Every event travels with a picture for its snapshot (the frame, when the rule attached none).
    assert all(isinstance(e.image, np.ndarray) and e.image.shape == (360, 640, 3) for e in events)
    counted = [o.metrics["packed/count"] for o in sink.outputs if "packed/count" in o.metrics]
    assert counted[-1] == len(events)
    # Only changed counters are handed over: each output carries a new count.
    assert counted == sorted(set(counted))
    truth = max(o.truth.crossed_total for o in sink.outputs if o.truth is not None)
    assert abs(counted[-1] - truth) <= max(2, truth // 5), (counted[-1], truth)
    assert stats["latency_ms"] is not None and stats["latency_ms_p95"] >= stats["latency_ms"]
    assert set(stats["stage_ms"]) >= {"motion", "detect", "track", "rules", "total"}


class Boom:
    """A rule that raises on every frame from `after` on, and counts the frames it saw."""

    def __init__(self, name: str, after: int = 0) -> None:
        self.name = name
        self.after = after
        self.seen = 0

    def process(self, frame: Frame, detections: list[Detection], tracks: list[Track]) -> RuleResult:
        self.seen += 1
        if self.seen > self.after:
            raise ZeroDivisionError("a bug in a plant's own rule")
        return RuleResult(metrics={"seen": self.seen})


def test_a_raising_rule_is_counted_and_logged_once_and_the_camera_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    parts = CameraParts.build(camera_config())
    boom = Boom("boom", after=5)
    parts.rules = {"boom": boom, **parts.rules}  # first, so it runs before the counting rule on each frame
    sink = RecordingSink()
    pipeline = CameraPipeline("cv-oatbar", "verifier", parts, sink)
    frames = scene_frames()
    with caplog.at_level(logging.ERROR, logger="edge_cv.pipeline"):
        for frame in frames:
            pipeline.process(frame)
    stats = pipeline.stats()
    assert stats["frames"] == len(frames)
    assert stats["rule_errors"] == {"boom": len(frames) - 5}
    assert stats["errors"] == len(frames) - 5
    assert "rule boom: ZeroDivisionError: a bug in a plant's own rule" in stats["last_error"]
    logged = [r for r in caplog.records if "rule boom failed" in r.getMessage()]
    assert len(logged) == 1
    # The counting rule after it still ran on every frame and counted.
    assert sink.events and all(e.rule == "packed" for e in sink.events)
    assert [o.metrics.get("boom/seen") for o in sink.outputs if "boom/seen" in o.metrics] == [1, 2, 3, 4, 5]


class FlakyDetector:
    """Wraps a real detector and raises on every third frame."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.labels = inner.labels
        self.calls = 0

    def detect(self, image: np.ndarray, rois: Any = None) -> list[Detection]:
        self.calls += 1
        if self.calls % 3 == 0:
            raise RuntimeError("onnxruntime: out of memory")
        return self.inner.detect(image, rois)


def test_a_failing_detector_costs_only_its_frames() -> None:
    parts = CameraParts.build(camera_config())
    flaky = FlakyDetector(parts.detector)
    parts.detector = flaky
    pipeline = CameraPipeline("cv-oatbar", "verifier", parts, RecordingSink())
    frames = scene_frames()
    for frame in frames:
        pipeline.process(frame)
    stats = pipeline.stats()
    assert stats["frames"] == len(frames)
    assert stats["errors"] == flaky.calls // 3 > 0
    assert stats["detections"] > 0


def test_a_sink_that_raises_does_not_stop_the_camera() -> None:
    calls = []

    def broken_sink(output: Any) -> None:
        calls.append(output)
        raise ConnectionError("publisher gone")

    pipeline = CameraPipeline("cv-oatbar", "verifier", CameraParts.build(camera_config()), broken_sink)
    frames = scene_frames()
    for frame in frames:
        pipeline.process(frame)
    assert pipeline.stats()["frames"] == len(frames)
    assert pipeline.errors == len(calls) > 0


def test_events_keep_a_picture_the_rule_attached() -> None:
    crop = np.zeros((8, 8, 3), np.uint8)

    class Crops:
        name = "crops"

        def process(self, frame: Frame, detections: list[Detection], tracks: list[Track]) -> RuleResult:
            return RuleResult(events=[CvEvent(frame.camera, self.name, "seen", frame.time_ms, image=crop),
                                      CvEvent(frame.camera, self.name, "bare", frame.time_ms)])  # fmt: skip

    parts = CameraParts.build(camera_config(detector=None, rules={}))
    parts.rules = {"crops": Crops()}
    sink = RecordingSink()
    frame = scene_frames(seconds=1.0)[0]
    CameraPipeline("cv-oatbar", "verifier", parts, sink).process(frame)
    seen, bare = sink.events
    assert seen.image is crop
    assert bare.image is frame.image


class RecordingNodeSink:
    """A NodeSink that keeps what the runner gives it (results and health), as CvPublisher would receive them."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.results: list[tuple[str, RuleResult]] = []
        self.health: dict[str, dict[str, Any]] = {}
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def publish(self, camera_id: str, result: RuleResult, rule: str | None = None) -> None:
        self.results.append((camera_id, result))

    def update_health(self, camera_id: str, stats: Mapping[str, Any]) -> None:
        self.health[camera_id] = dict(stats)


async def test_the_runner_keeps_a_good_camera_at_its_rate_beside_a_dead_one() -> None:
    dead_port = free_port()
    cv = CvConfig.model_validate({
        "reconnect": {"initial_s": 0.2, "max_s": 1.0},
        "nodes": {
            "cv-oatbar": {"cameras": {
                "verifier": {**CONVEYOR, "realtime": True, "fps": 8,
                             "source": "synthetic:conveyor?seed=4&width=640&height=360&duration_s=600"},
                "dead": {"source": f"http://127.0.0.1:{dead_port}/stream.mjpg"},
            }},
            "cv-salad": {"cameras": {"verifier": {"source": "synthetic:conveyor?seed=5&width=640&height=360",
                                                  "fps": 5, "enabled": False}}},
        },
    })  # fmt: skip
    sinks: dict[str, RecordingNodeSink] = {}

    def factory(node: str, config: CvConfig) -> RecordingNodeSink:
        sinks[node] = RecordingNodeSink(node)
        return sinks[node]

    runner = CvRunner(cv, factory, health_interval_s=0.2)
    assert runner.nodes == ["cv-oatbar"]  # cv-salad's only camera is disabled
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(runner.started.wait(), 30)
    await asyncio.sleep(3.0)
    sink = sinks["cv-oatbar"]
    good, dead = sink.health["verifier"], sink.health["dead"]
    assert good["online"] is True and 6.5 <= good["fps"] <= 9.0, good
    # Latency runs from the moment a frame arrives (after the scene's real-time pacing), not from its rendering:
    # well under the 125 ms between frames.
    assert good["latency_ms"] < 60, good
    assert dead["online"] is False and "connection refused" in dead["last_error"], dead
    assert sink.results and all(camera == "verifier" for camera, _ in sink.results)
    pipelines = [r.pipeline for r in runner.cameras]

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.stopped
    assert all(p is not None and not p.running and p.source.state == "stopped" for p in pipelines)
    assert sink.health["verifier"]["online"] is False  # the last report after stopping


async def test_a_camera_that_cannot_be_built_is_reported_and_the_others_run() -> None:
    cv = CvConfig.model_validate({"nodes": {"cv-oatbar": {"cameras": {
        "verifier": {**CONVEYOR, "realtime": True},
        "floor": {**CONVEYOR, "realtime": True},
    }}}})  # fmt: skip
    sinks: dict[str, RecordingNodeSink] = {}

    def factory(node: str, config: CvConfig) -> RecordingNodeSink:
        sinks[node] = RecordingNodeSink(node)
        return sinks[node]

    runner = CvRunner(cv, factory, health_interval_s=0.2)
    original = CameraPipeline.from_config

    def failing(node: str, camera_id: str, *args: Any, **kw: Any) -> CameraPipeline:
        if camera_id == "floor":
            from hub.errors import ConfigError

            raise ConfigError("detector (yolo): model file vanished")
        return original(node, camera_id, *args, **kw)

    CameraPipeline.from_config = failing  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(runner.run())
        await asyncio.wait_for(runner.started.wait(), 30)
    finally:
        CameraPipeline.from_config = original  # type: ignore[method-assign]
    await asyncio.sleep(1.0)
    health = sinks["cv-oatbar"].health
    assert health["floor"] == {"state": "failed", "online": False,
                               "last_error": "camera floor cannot start: detector (yolo): model file vanished"}
    assert health["verifier"]["online"] is True and health["verifier"]["frames"] > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_check_reads_one_frame_and_reports_each_camera() -> None:
    cv = CvConfig.model_validate({"nodes": {"cv-oatbar": {"cameras": {
        "verifier": CONVEYOR,
        "gone": {"source": f"rtsp://127.0.0.1:{free_port()}/live"},
        "far": {**CONVEYOR, "lines": {"centre": {"points": [[320, 64], [320, 900]]}}},
    }}}})  # fmt: skip
    results = {cam: check_camera(node, cam, config, cv) for node, cam, config in cv.cameras()}
    assert results["verifier"].ok and "640x360" in results["verifier"].message
    assert not results["gone"].ok and "connection refused" in results["gone"].message
    assert not results["far"].ok and "lines.centre: point [320.0, 900.0] lies outside the 640x360 frame" in results[
        "far"
    ].message


def test_processing_rate_of_a_synthetic_counting_camera() -> None:
    """Not a target, a figure: frames/s and latency of the blob + tracker + counting pipeline at 640x360."""
    pipeline = CameraPipeline("cv-oatbar", "verifier", CameraParts.build(camera_config()), RecordingSink())
    frames = scene_frames()
    started = time.perf_counter()
    for frame in frames:
        pipeline.process(frame)
    fps = len(frames) / (time.perf_counter() - started)
    stats = pipeline.stats()
    print(f"\nsynthetic conveyor 640x360, blob+tracker+counting: {fps:.0f} frames/s on one thread, "
          f"latency p50 {stats['latency_ms']} ms p95 {stats['latency_ms_p95']} ms, stages {stats['stage_ms']}")
    assert fps > 10


def test_plantbus_cv_run_publishes_events_and_sends_ndeath_on_sigterm(broker: Any, tmp_path: Any) -> None:
    import shutil
    import signal
    import subprocess
    import sys

    import yaml

    if shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto_sub not installed (apt-get install mosquitto-clients)")
    config = {
        "state_dir": str(tmp_path / "state"),
        "cv": {"nodes": {"cv-oatbar": {"cameras": {"verifier": {**CONVEYOR, "realtime": True, "loop": True}}}},
               "snapshots": {"dir": str(tmp_path / "snapshots")}},
    }  # fmt: skip
    file = tmp_path / "plantbus.yaml"
    file.write_text(yaml.safe_dump(config))

    def listen(topic: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-t", topic, "-C", "1", "-W", "60", "-v"],
                                stdout=subprocess.PIPE)  # fmt: skip

    events = listen("uns/plant1/cv-oatbar/verifier/cv/events")
    death = listen("spBv1.0/plant1/NDEATH/cv-oatbar")
    time.sleep(0.3)  # both subscriptions in place before the node starts
    cameras = subprocess.Popen([sys.executable, "-m", "hub.cli", "cv", "run", "-c", str(file), "--broker", broker.url],
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        out = events.communicate(timeout=60)[0].decode()
        assert '"rule":"packed"' in out and '"camera":"verifier"' in out, out
        assert death.poll() is None  # still alive: no NDEATH yet
        cameras.send_signal(signal.SIGTERM)
        _, log = cameras.communicate(timeout=30)
        assert cameras.returncode == 0, log
        # A clean stop: exit status 0, and the node's NDEATH (with its bdSeq) reached the broker.
        assert death.communicate(timeout=10)[0].startswith(b"spBv1.0/plant1/NDEATH/cv-oatbar ")
    finally:
        procs: list[subprocess.Popen[Any]] = [cameras, events, death]
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_plantbus_cv_check_prints_each_camera_and_fails_on_a_bad_one(tmp_path: Any) -> None:
    import yaml
    from click.testing import CliRunner

    from hub.cli import main

    port = free_port()
    file = tmp_path / "plantbus.yaml"
    file.write_text(yaml.safe_dump({"cv": {"nodes": {"cv-oatbar": {"cameras": {
        "verifier": CONVEYOR,
        "door": {"source": f"rtsp://127.0.0.1:{port}/live", "open_timeout_s": 2},
    }}}}}))  # fmt: skip
    result = CliRunner().invoke(main, ["cv", "check", "-c", str(file)])
    assert result.exit_code == 2, result.output
    lines = sorted(result.output.splitlines())
    assert lines[0] == (f"error cv-oatbar/door: camera door (rtsp://127.0.0.1:{port}/live): connection refused by "
                        f"127.0.0.1:{port}; check the port and that the camera is on")  # fmt: skip
    assert lines[1].startswith("ok    cv-oatbar/verifier: camera verifier (synthetic:conveyor): first frame in ")

    empty = tmp_path / "empty.yaml"
    empty.write_text("broker: {url: 'mqtt://127.0.0.1:1883'}\n")
    result = CliRunner().invoke(main, ["cv", "check", "-c", str(empty)])
    assert result.exit_code == 2 and "has no cameras; add a `cv:` section" in result.output
