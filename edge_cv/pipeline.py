"""One camera's processing: source → motion gate → detector (on the gate's regions) → classifiers → tracker → rules.

Each camera runs in a worker thread of its own (`plantbus[cv:<camera>].pipeline`) next to its source's decoder
thread, so inference never runs in the event loop and a slow camera only slows itself. What the rules decide
goes to a sink (the publisher, or a recorder in tests) as a `PipelineOutput`; the sink is called from the worker
thread and must only hand the data over. An exception in a stage is counted and logged once per failure streak;
a rule that raises is skipped for that frame and the others still run; the camera keeps going either way.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_cv.config import CameraConfig, CvConfig
from edge_cv.detectors.base import build_classifier, build_detector
from edge_cv.motion import MotionGate
from edge_cv.rules import build_rule
from edge_cv.sources import FrameSource, SourceFrame, SourceSettings, SourceState
from edge_cv.tracking import Tracker
from edge_cv.types import CvEvent, Detection, Detector, Frame, Rule, RuleResult, Track, bottom_centre
from edge_cv.zones import CameraGeometry
from hub.errors import ConfigError

log = logging.getLogger(__name__)

STAGES = ("motion", "detect", "classify", "track", "rules")
WINDOW = 256  # frames the fps, latency and stage-time figures are computed over


@dataclass(slots=True)
class PipelineOutput:
    """What one frame produced: new events, and the rule counters that changed (named `<rule>/<counter>`)."""

    node: str
    camera: str
    frame: Frame
    events: list[CvEvent]
    metrics: dict[str, int | float]
    detections: list[Detection]
    tracks: list[Track]
    timings_ms: dict[str, float]
    latency_ms: float  # from the frame's decode to this hand-over
    truth: Any = None  # the synthetic scene's ground truth for the frame, when there is one

    def as_rule_result(self) -> RuleResult:
        """The output as one RuleResult whose metric names already carry their rule's name."""
        return RuleResult(events=list(self.events), metrics=dict(self.metrics))


Sink = Callable[[PipelineOutput], None]


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.fromiter(values, dtype=np.float64, count=len(values)), q))


class _Failures:
    """Counts failures of one stage or rule; logs the first of each streak and the recovery, not every frame."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.failing = False
        self.last_error: str | None = None

    def failed(self, exc: BaseException) -> None:
        self.count += 1
        self.last_error = f"{self.what}: {type(exc).__name__}: {exc}"
        if not self.failing:
            self.failing = True
            log.error("%s failed (counted; the camera goes on): %s", self.what, exc, exc_info=exc)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            log.info("%s works again after %d failure(s)", self.what, self.count)


@dataclass
class CameraParts:
    """The per-camera processing objects, built from the camera's config (models are loaded here)."""

    geometry: CameraGeometry
    detector: Detector | None = None
    classifiers: list[Any] = field(default_factory=list)
    gate: MotionGate | None = None
    tracker: Tracker | None = None
    rules: dict[str, Rule] = field(default_factory=dict)

    @classmethod
    def build(cls, camera: CameraConfig) -> CameraParts:
        """Build detector, classifiers, gate, tracker and rules; ConfigError names the part that failed."""
        geometry = camera.geometry()
        detector = None
        if camera.detector is not None:
            try:
                detector = build_detector(camera.detector)
            except Exception as exc:  # noqa: BLE001 - a model that will not load: say which part, stop this camera
                raise ConfigError(f"detector ({camera.detector.type}): {exc}") from exc
        classifiers = []
        for i, classifier in enumerate(camera.classifiers):
            try:
                classifiers.append(build_classifier(classifier))
            except Exception as exc:  # noqa: BLE001 - see above
                raise ConfigError(f"classifiers[{i}] ({classifier.model.name}): {exc}") from exc
        rules: dict[str, Rule] = {}
        for name, rule_config in camera.rules.items():
            try:
                rules[name] = build_rule(name, rule_config, geometry)
            except ConfigError as exc:
                raise ConfigError(f"rules.{name}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - see above
                raise ConfigError(f"rules.{name} ({rule_config.type}): {type(exc).__name__}: {exc}") from exc
        return cls(
            geometry=geometry,
            detector=detector,
            classifiers=classifiers,
            # Without a detector (a marking-only camera) there is nothing to gate or track.
            gate=MotionGate(camera.motion) if detector is not None else None,
            tracker=Tracker(camera.tracker) if detector is not None else None,
            rules=rules,
        )


class CameraPipeline:
    """A camera's source and processing in a worker thread; `process` runs one frame (also without threads)."""

    def __init__(
        self,
        node: str,
        camera: str,
        parts: CameraParts,
        sink: Sink,
        source: FrameSource | None = None,
    ) -> None:
        self.node = node
        self.camera = camera
        self.parts = parts
        self.sink = sink
        self.source = source
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = {stage: _Failures(f"camera {camera}: {stage}") for stage in ("detect", "classify", "track")}
        self._rule_failures = {name: _Failures(f"camera {camera}: rule {name}") for name in parts.rules}
        self._sink_failures = _Failures(f"camera {camera}: sink")
        self._last_metrics: dict[str, int | float] = {}
        self._geometry_checked = False
        self.config_problem: str | None = None
        # Figures for health: written by the worker thread, read by anyone (single values and deques are safe).
        self.frames = 0
        self.frames_gated = 0
        self.detections = 0
        self.events = 0
        self._done_at: deque[float] = deque(maxlen=WINDOW)
        self._latency: deque[float] = deque(maxlen=WINDOW)
        self._event_latency: deque[float] = deque(maxlen=WINDOW)
        self._stage_ms: dict[str, deque[float]] = {s: deque(maxlen=WINDOW) for s in (*STAGES, "total")}
        self._scores: deque[float] = deque(maxlen=WINDOW)

    @classmethod
    def from_config(
        cls, node: str, camera_id: str, camera: CameraConfig, sink: Sink, cv: CvConfig | None = None
    ) -> CameraPipeline:
        """A pipeline with its source for a configured camera; loads the models (blocking: call in a thread)."""
        parts = CameraParts.build(camera)
        source = FrameSource(SourceSettings.from_config(camera_id, camera, cv.reconnect if cv else None))
        return cls(node, camera_id, parts, sink, source)

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the source's decoder and this camera's worker thread; returns at once."""
        if self.source is None:
            raise RuntimeError(f"camera {self.camera}: no source to run (use process() to feed frames)")
        self._stop.clear()
        self.source.start()
        self._thread = threading.Thread(target=self._run, name=f"plantbus[cv:{self.camera}].pipeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker after the frame it is on, then the source (releasing the capture)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("camera %s: worker still busy after %.0f s (a long inference); leaving it", self.camera,
                            timeout)  # fmt: skip
        if self.source is not None:
            self.source.stop(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        assert self.source is not None
        while not self._stop.is_set():
            item = self.source.get(timeout=0.5)
            if item is None:
                if self.source.state == SourceState.ENDED:
                    self._stop.wait(0.5)  # a file that ended without loop: stay, report "ended" in health
                continue
            self.process(item)

    # -- one frame ---------------------------------------------------------------------------------------------------

    def process(self, item: SourceFrame | Frame) -> PipelineOutput:
        """Run one frame through every stage and hand what it produced to the sink; never raises for a stage."""
        if isinstance(item, Frame):
            item = SourceFrame(item, time.monotonic())
        frame = item.frame
        parts = self.parts
        timings: dict[str, float] = {}
        started = time.perf_counter()
        if not self._geometry_checked:
            self._check_geometry(frame)

        detections: list[Detection] = []
        tracks: list[Track] = []
        if parts.detector is not None and parts.tracker is not None and parts.gate is not None:
            t = time.perf_counter()
            decision = parts.gate.update(frame.image, frame.time_ms, parts.tracker.predict(frame.time_ms))
            timings["motion"] = _ms(t)
            if decision.run:
                t = time.perf_counter()
                detections = self._guard("detect", lambda: parts.detector.detect(frame.image, decision.rois), [])
                if parts.geometry.masks:
                    detections = [d for d in detections if not parts.geometry.is_masked(bottom_centre(d.box))]
                timings["detect"] = _ms(t)
                if detections and parts.classifiers:
                    t = time.perf_counter()
                    for classifier in parts.classifiers:
                        detections = self._guard("classify", lambda c=classifier: c.classify(frame.image, detections),
                                                 detections)  # fmt: skip
                    timings["classify"] = _ms(t)
            else:
                self.frames_gated += 1
            t = time.perf_counter()
            tracks = self._guard("track", lambda: parts.tracker.update(detections, frame.time_ms), parts.tracker.tracks)
            timings["track"] = _ms(t)

        t = time.perf_counter()
        events: list[CvEvent] = []
        changed: dict[str, int | float] = {}
        for name, rule in parts.rules.items():
            failures = self._rule_failures[name]
            try:
                result = rule.process(frame, detections, tracks)
            except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the camera or the other rules
                failures.failed(exc)
                continue
            failures.succeeded()
            for event in result.events:
                # A rule that attached no picture gets the whole frame as its snapshot.
                events.append(event if event.image is not None else dataclasses.replace(event, image=frame.image))
            for key, value in result.metrics.items():
                metric = f"{name}/{key}"
                if self._last_metrics.get(metric) != value:
                    self._last_metrics[metric] = value
                    changed[metric] = value
        timings["rules"] = _ms(t)
        timings["total"] = _ms(started)

        self.frames += 1
        self.detections += len(detections)
        self.events += len(events)
        self._scores.extend(d.score for d in detections)
        for stage, value in timings.items():
            self._stage_ms[stage].append(value)
        output = PipelineOutput(self.node, self.camera, frame, events, changed, detections, tracks, timings,
                                (time.monotonic() - item.captured) * 1000.0, item.truth)  # fmt: skip
        if events or changed:
            try:
                self.sink(output)
            except Exception as exc:  # noqa: BLE001 - a failing sink is counted; the camera goes on
                self._sink_failures.failed(exc)
            else:
                self._sink_failures.succeeded()
        done = time.monotonic()
        self._latency.append(output.latency_ms)
        if events:
            self._event_latency.append(output.latency_ms)
        self._done_at.append(done)
        return output

    def _guard(self, stage: str, fn: Callable[[], Any], fallback: Any) -> Any:
        failures = self._failures[stage]
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - counted and logged once per streak; the frame goes on without it
            failures.failed(exc)
            return fallback
        failures.succeeded()
        return value

    def _check_geometry(self, frame: Frame) -> None:
        self._geometry_checked = True
        try:
            self.parts.geometry.check_inside_frame(frame.size)
        except ConfigError as exc:
            # The frame size is known only now; the rules still run, the console shows the problem.
            self.config_problem = f"camera {self.camera}: {exc}"
            log.error("%s", self.config_problem)

    # -- health ----------------------------------------------------------------------------------------------------

    @property
    def errors(self) -> int:
        """Exceptions counted in stages, rules and the sink."""
        return (
            sum(f.count for f in self._failures.values())
            + sum(f.count for f in self._rule_failures.values())
            + self._sink_failures.count
        )

    def stats(self) -> dict[str, Any]:
        """Health figures: state, fps, latency p50/p95, counts, errors, per-stage times (JSON-friendly)."""
        now = time.monotonic()
        done = [t for t in self._done_at if now - t <= 10.0]
        fps = (len(done) - 1) / (done[-1] - done[0]) if len(done) >= 2 and done[-1] > done[0] else 0.0
        latency = list(self._latency)
        event_latency = list(self._event_latency)
        source = self.source.stats() if self.source is not None else None
        last_errors = [f.last_error for f in (*self._failures.values(), *self._rule_failures.values(),
                                              self._sink_failures) if f.failing]  # fmt: skip
        state = str(source.state) if source is not None else ("running" if self.frames else "idle")
        last_error = (source.last_error if source is not None and source.state != SourceState.ONLINE else None) \
            or (last_errors[0] if last_errors else None) or self.config_problem  # fmt: skip
        scores = list(self._scores)
        return {
            "state": state,
            "online": source is not None and source.state == SourceState.ONLINE,
            "fps": round(fps, 2),
            "latency_ms": _rounded(_percentile(latency, 50)),
            "latency_ms_p95": _rounded(_percentile(latency, 95)),
            "event_latency_ms": _rounded(_percentile(event_latency, 50)),
            "event_latency_ms_p95": _rounded(_percentile(event_latency, 95)),
            "frames": self.frames,
            "frames_gated": self.frames_gated,
            "frames_dropped": source.frames_dropped if source else 0,
            "frames_skipped": source.frames_skipped if source else 0,
            "input_fps": round(source.input_fps, 2) if source else None,
            "reconnects": source.reconnects if source else 0,
            "detections": self.detections,
            "events": self.events,
            "errors": self.errors,
            "rule_errors": {name: f.count for name, f in self._rule_failures.items() if f.count},
            "last_error": last_error,
            "model_confidence": _rounded(float(np.mean(scores)), 4) if scores else None,
            "stage_ms": {s: _rounded(_percentile(list(v), 50)) for s, v in self._stage_ms.items() if v},
        }


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
