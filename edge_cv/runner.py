"""Runs the cameras of one cv edge node (or of all of them) in one process: `plantbus cv run`.

Each camera is a `CameraPipeline` with its own decoder and worker threads; the event loop only starts and stops
them, moves their health to the node's sink every `health_interval_s`, and hosts the sink (the Sparkplug
publisher, edge_cv/publisher.py). A camera whose models or rules cannot be built is reported offline with the
reason and the others run. SIGINT/SIGTERM cancel `run()`: the cameras stop (captures released), then each sink
stops (the publisher sends what it holds, then NDEATH).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from edge_cv.config import CameraConfig, CvConfig
from edge_cv.pipeline import CameraPipeline, PipelineOutput
from edge_cv.types import RuleResult
from hub.errors import ConfigError, PlantbusError

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 60.0


class NodeSink(Protocol):
    """Where one cv node's results and camera health go; CvPublisher is one, tests use a recorder."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def publish(self, camera_id: str, result: RuleResult, rule: str | None = None) -> None: ...

    def update_health(self, camera_id: str, stats: Mapping[str, Any]) -> None: ...


SinkFactory = Callable[[str, CvConfig], NodeSink]


@dataclass
class CameraRun:
    """A configured camera in this process: its pipeline, or why it could not be built."""

    node: str
    camera: str
    config: CameraConfig
    pipeline: CameraPipeline | None = None
    problem: str | None = None

    def stats(self) -> dict[str, Any]:
        if self.pipeline is None:
            return {"state": "failed", "online": False, "last_error": self.problem}
        return self.pipeline.stats()


def select_nodes(cv: CvConfig, node: str | None) -> list[str]:
    """The node ids to run: `node`, or every node with an enabled camera; ConfigError if there is none."""
    if node is not None:
        if node not in cv.nodes:
            known = ", ".join(sorted(cv.nodes)) or "none"
            raise ConfigError(f"cv.nodes has no node {node!r} (nodes: {known}); check --node")
        nodes = [node]
    else:
        nodes = list(cv.nodes)
    nodes = [n for n in nodes if any(c.enabled for c in cv.nodes[n].cameras.values())]
    if not nodes:
        raise ConfigError("no enabled camera to run: add cameras under cv.nodes.<node>.cameras or enable one")
    return nodes


def _forward(sink: NodeSink, camera: str) -> Callable[[PipelineOutput], None]:
    def hand_over(output: PipelineOutput) -> None:
        # Metric names already carry their rule (`packed/count`), so no rule name is passed.
        sink.publish(camera, output.as_rule_result())

    return hand_over


class CvRunner:
    """The cameras of the selected nodes, each node with its sink."""

    def __init__(
        self,
        cv: CvConfig,
        sink_factory: SinkFactory,
        node: str | None = None,
        *,
        health_interval_s: float | None = None,
    ) -> None:
        self.cv = cv
        self.nodes = select_nodes(cv, node)
        self.sink_factory = sink_factory
        self.health_interval_s = health_interval_s or cv.health_interval_s
        self.sinks: dict[str, NodeSink] = {}
        self.cameras: list[CameraRun] = [
            CameraRun(node_id, camera_id, camera)
            for node_id, camera_id, camera in cv.cameras()
            if node_id in self.nodes
        ]
        self.started = asyncio.Event()

    async def run(self) -> None:
        """Build, start and supervise the cameras until cancelled; then stop everything in order."""
        for node_id in self.nodes:
            self.sinks[node_id] = self.sink_factory(node_id, self.cv)
        # Loading models takes a while and blocks: in threads, all cameras at once.
        await asyncio.gather(*(asyncio.to_thread(self._build, run) for run in self.cameras))
        started_sinks: list[NodeSink] = []
        try:
            for node_id, sink in self.sinks.items():
                await sink.start()
                started_sinks.append(sink)
            for run in self.cameras:
                if run.pipeline is not None:
                    run.pipeline.start()
            names = ", ".join(f"{r.node}/{r.camera}" for r in self.cameras)
            log.info("cv: running %d camera(s): %s", len(self.cameras), names)
            self.started.set()
            await self._supervise()
        finally:
            # Shielded: on Ctrl-C the cameras must still be released and the publishers send their NDEATH.
            await asyncio.shield(self._shutdown(started_sinks))

    def _build(self, run: CameraRun) -> None:
        sink = self.sinks[run.node]
        try:
            run.pipeline = CameraPipeline.from_config(run.node, run.camera, run.config, _forward(sink, run.camera),
                                                      self.cv)  # fmt: skip
        except PlantbusError as exc:
            run.problem = f"camera {run.camera} cannot start: {exc}"
            log.error("cv: %s", run.problem)
        except Exception as exc:  # noqa: BLE001 - one camera's broken setup must not stop the others
            run.problem = f"camera {run.camera} cannot start: {type(exc).__name__}: {exc}"
            log.exception("cv: %s", run.problem)

    async def _supervise(self) -> None:
        last_summary = time.monotonic()
        while True:
            self.report_health()
            if time.monotonic() - last_summary >= SUMMARY_INTERVAL_S:
                last_summary = time.monotonic()
                self.log_summary()
            await asyncio.sleep(self.health_interval_s)

    def report_health(self) -> None:
        """Hand every camera's current health to its node's sink."""
        for run in self.cameras:
            sink = self.sinks.get(run.node)
            if sink is not None:
                sink.update_health(run.camera, run.stats())

    def log_summary(self) -> None:
        """One log line per camera: state, fps, latency, events, errors."""
        for run in self.cameras:
            s = run.stats()
            log.info("cv %s/%s: %s, %.1f frames/s, latency p50 %s ms, %s events, %s errors%s", run.node, run.camera,
                     s.get("state"), s.get("fps") or 0.0, s.get("latency_ms"), s.get("events", 0), s.get("errors", 0),
                     f", last error: {s['last_error']}" if s.get("last_error") else "")  # fmt: skip

    async def _shutdown(self, sinks: list[NodeSink]) -> None:
        pipelines = [r.pipeline for r in self.cameras if r.pipeline is not None]
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in pipelines))
        with contextlib.suppress(Exception):
            self.report_health()  # the last figures: every camera now stopped, i.e. offline
        # Together: each publisher may wait a few seconds for the broker to take what it still holds.
        results = await asyncio.gather(*(sink.stop() for sink in sinks), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("cv: stopping a node's publisher failed: %s", result)

    def stats(self) -> dict[str, dict[str, Any]]:
        """node/camera → health figures."""
        return {f"{r.node}/{r.camera}": r.stats() for r in self.cameras}


def publisher_factory(config: Any, broker_override: str | None = None) -> SinkFactory:
    """Sinks that are Sparkplug edge nodes on the configured broker (`config` is a PlantbusConfig)."""
    from edge_cv.publisher import CvPublisher
    from hub.mqtt import BrokerUrl

    broker = BrokerUrl.parse(broker_override) if broker_override else config.broker.resolve()

    def make(node_id: str, cv: CvConfig) -> NodeSink:
        return CvPublisher.from_config(node_id, cv, broker=broker, state_dir=config.state_dir, uns=config.uns,
                                       primary_host_id=config.host.host_id)  # fmt: skip

    return make


@dataclass(frozen=True, slots=True)
class CheckResult:
    node: str
    camera: str
    ok: bool
    message: str


def check_camera(node: str, camera_id: str, camera: CameraConfig, cv: CvConfig) -> CheckResult:
    """Open the camera's source once and read a frame, and build its detector and rules (blocking)."""
    from edge_cv.pipeline import CameraParts
    from edge_cv.sources import SourceError, SourceSettings, open_reader

    settings = SourceSettings.from_config(camera_id, camera, cv.reconnect)
    try:
        parts = CameraParts.build(camera)
    except PlantbusError as exc:
        return CheckResult(node, camera_id, False, str(exc))
    started = time.monotonic()
    try:
        reader = open_reader(settings)
    except SourceError as exc:
        return CheckResult(node, camera_id, False, str(exc))
    try:
        decoded = reader.read()
    except Exception as exc:  # noqa: BLE001 - _EndOfMedia, SourceError, back-end errors: all mean "no frame"
        reason = str(exc) or "the video is empty"
        return CheckResult(node, camera_id, False, f"{settings.description}: opened, but no frame came: {reason}")
    finally:
        reader.close()
    height, width = decoded.image.shape[:2]
    if camera.width is not None:
        height, width = max(1, round(height * camera.width / width)), camera.width
    try:
        parts.geometry.check_inside_frame((width, height))
    except ConfigError as exc:
        return CheckResult(node, camera_id, False, f"{settings.description}: {exc}")
    fps = f", {reader.native_fps:g} frames/s" if reader.native_fps else ""
    detector = type(parts.detector).__name__ if parts.detector is not None else "no detector"
    return CheckResult(
        node, camera_id, True,
        f"{settings.description}: first frame in {time.monotonic() - started:.2f} s, {width}x{height}{fps}; "
        f"{detector}, {len(parts.rules)} rule(s)",
    )  # fmt: skip
