"""Camera sources: each camera decodes in a thread of its own and hands over only its newest frame.

A slow or dead camera must never slow another (a known Frigate failure, #1729), so every source owns its decoder
thread, its capture and its backoff; the pipeline takes frames with `FrameSource.get`, which never waits on another
camera. Frames arrive at the camera's detection rate: decoded frames between two detection times are skipped, and
a frame the pipeline did not take before the next one arrived is replaced, never queued (counted as dropped).

Network streams and USB cameras go through OpenCV's FFmpeg/V4L2 back ends; a read that returns nothing for
`stall_timeout_s` marks the camera offline and it is reopened with jittered doubling backoff. Files and synthetic
scenes are played at their own frame rate (or as fast as the pipeline takes them, for benchmarks), and loop if asked.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from edge_cv.config import CameraConfig, ReconnectConfig, SourceSpec, synthetic_scene_fields
from edge_cv.types import Frame
from hub.errors import PlantbusError

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


class SourceError(PlantbusError):
    """A camera source cannot be opened or read; the message says which and what to check."""


class SourceState(enum.StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    ENDED = "ended"  # a file or scene that reached its end and does not loop
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """A frame as the source hands it over: `captured` is time.monotonic() at decode, for latency figures;
    `truth` is the synthetic scene's ground truth for this frame (None for real cameras)."""

    frame: Frame
    captured: float
    truth: Any = None


@dataclass(frozen=True, slots=True)
class SourceStats:
    state: SourceState
    last_error: str | None
    frames_in: int  # decoded
    frames_delivered: int  # handed to the pipeline
    frames_skipped: int  # decoded between detection times (the detection fps is lower than the camera's)
    frames_dropped: int  # delivered to the slot but replaced before the pipeline took it
    reconnects: int
    input_fps: float  # decoded frames per second, recent
    seconds_since_frame: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "last_error": self.last_error,
            "frames_in": self.frames_in,
            "frames_delivered": self.frames_delivered,
            "frames_skipped": self.frames_skipped,
            "frames_dropped": self.frames_dropped,
            "reconnects": self.reconnects,
            "input_fps": round(self.input_fps, 2),
            "seconds_since_frame": None if self.seconds_since_frame is None else round(self.seconds_since_frame, 2),
        }


@dataclass(slots=True)
class _Decoded:
    image: np.ndarray
    media_ms: float | None  # position in a file or scene; None for live sources
    truth: Any = None
    scene_time_ms: int | None = None  # a synthetic scene's own clock (its ground truth is in that time)


class _EndOfMedia(Exception):
    """A file or scene has no more frames."""


class _Reader(Protocol):
    native_fps: float | None

    def read(self) -> _Decoded: ...  # raises _EndOfMedia, or SourceError when the stream failed

    def close(self) -> None: ...


class _CaptureReader:
    """An opened cv2.VideoCapture (FFmpeg for files and URLs, V4L2 for USB)."""

    def __init__(self, capture: cv2.VideoCapture, description: str, *, is_file: bool) -> None:
        self._capture = capture
        self._description = description
        self._is_file = is_file
        fps = capture.get(cv2.CAP_PROP_FPS)
        # FFmpeg reports 0, NaN, or absurd rates (90000 from an RTP clock) when it does not know the frame rate.
        self.native_fps = float(fps) if fps and math.isfinite(fps) and 0 < fps <= 240 else None

    def read(self) -> _Decoded:
        ok, image = self._capture.read()
        if not ok or image is None:
            if self._is_file:
                raise _EndOfMedia
            raise SourceError(f"{self._description}: the stream ended or no frame arrived in time")
        media_ms = self._capture.get(cv2.CAP_PROP_POS_MSEC) if self._is_file else None
        return _Decoded(image, media_ms)

    def close(self) -> None:
        self._capture.release()


class _SceneReader:
    """A synthetic scene from edge_cv.scenes, rendered on the fly."""

    def __init__(self, frames: Iterator[Any], fps: float, start_ms: int) -> None:
        self._frames = frames
        self.native_fps = fps
        self._start_ms = start_ms

    def read(self) -> _Decoded:
        try:
            scene_frame = next(self._frames)
        except StopIteration:
            raise _EndOfMedia from None
        time_ms = int(scene_frame.time_ms)
        return _Decoded(scene_frame.image, float(time_ms - self._start_ms), scene_frame.truth, time_ms)

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()


def _with_password(url: str, password_env: str | None) -> str:
    if not password_env:
        return url
    password = os.environ.get(password_env)
    if password is None:
        raise SourceError(f"environment variable {password_env} (the camera's password_env) is not set")
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _probe_tcp(url: str, timeout_s: float, description: str) -> None:
    """Connect once before FFmpeg does, so a refused or unresolvable address gives a precise message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    try:
        with socket.create_connection((host, port), timeout=min(timeout_s, 5.0)):
            pass
    except socket.gaierror:
        raise SourceError(f"{description}: host {host!r} does not resolve; check the address") from None
    except ConnectionRefusedError:
        raise SourceError(
            f"{description}: connection refused by {host}:{port}; check the port and that the camera is on"
        ) from None
    except TimeoutError:
        raise SourceError(f"{description}: {host}:{port} did not answer within {min(timeout_s, 5.0):g} s") from None
    except OSError as exc:
        raise SourceError(f"{description}: cannot connect to {host}:{port}: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """How one camera's source is opened and paced (taken from CameraConfig and the cv reconnect section)."""

    camera: str
    spec: SourceSpec
    fps: float
    width: int | None = None
    stall_timeout_s: float = 10.0
    open_timeout_s: float = 10.0
    loop: bool = False
    realtime: bool = True
    password_env: str | None = None
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0

    @classmethod
    def from_config(cls, camera: str, config: CameraConfig, reconnect: ReconnectConfig | None = None) -> SourceSettings:
        """Settings of a configured camera."""
        reconnect = reconnect or ReconnectConfig()
        return cls(
            camera=camera,
            spec=config.spec,
            fps=config.fps,
            width=config.width,
            stall_timeout_s=config.stall_timeout_s,
            open_timeout_s=config.open_timeout_s,
            loop=config.loop,
            realtime=config.realtime,
            password_env=config.password_env,
            backoff_initial_s=reconnect.initial_s,
            backoff_max_s=reconnect.max_s,
        )

    @property
    def description(self) -> str:
        return f"camera {self.camera} ({self.spec.redacted()})"


def open_reader(settings: SourceSettings, *, scene_seed_offset: int = 0) -> _Reader:
    """Open the source once; raise SourceError with what to check when it cannot be opened."""
    spec, description = settings.spec, settings.description
    if spec.kind == "synthetic":
        from edge_cv.scenes import SceneSpec, generate

        scene = SceneSpec.model_validate(synthetic_scene_fields(spec, settings.fps))
        if scene_seed_offset:
            # Each loop of a scene is a new seed (the same packs and marking codes twice would read as duplicates)
            # and starts where the last one ended, so the scene's clock keeps going forward.
            length_ms = round(scene.frame_count * 1000.0 / scene.fps)
            start_ms = scene.start_ms + scene_seed_offset * length_ms
            scene = scene.model_copy(update={"seed": scene.seed + scene_seed_offset, "start_ms": start_ms})
        return _SceneReader(iter(generate(scene)), float(scene.fps), scene.start_ms)
    if spec.kind == "file":
        if not os.path.isfile(spec.target):
            raise SourceError(f"{description}: file {spec.target} does not exist")
        capture = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{description}: FFmpeg cannot read {spec.target} as video; check the file")
        return _CaptureReader(capture, description, is_file=True)
    if spec.kind == "usb":
        index = int(spec.target)
        if os.name == "posix" and not os.path.exists(f"/dev/video{index}"):
            raise SourceError(f"{description}: no USB camera at /dev/video{index}; check the cable or the index")
        capture = cv2.VideoCapture(index, cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{description}: /dev/video{index} exists but does not open (busy or not a camera)")
        return _CaptureReader(capture, description, is_file=False)
    url = _with_password(spec.target, settings.password_env)
    _probe_tcp(url, settings.open_timeout_s, description)
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(settings.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(settings.stall_timeout_s * 1000),
    ]  # fmt: skip
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not capture.isOpened():
        capture.release()
        raise SourceError(
            f"{description}: connected, but FFmpeg found no video stream there; check the path and the "
            "stream type (RTSP, or MJPEG/HLS over HTTP) and the credentials"
        )
    return _CaptureReader(capture, description, is_file=False)


class Backoff:
    """Jittered doubling delays: initial, 2×initial, … up to max, each scaled by a random factor in [0.5, 1]."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling."""
        ceiling = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self.attempt = 0


class FrameSource:
    """One camera's frames, decoded in a thread of its own; `get` returns the newest frame not yet taken."""

    def __init__(
        self,
        settings: SourceSettings,
        *,
        opener: Callable[..., _Reader] = open_reader,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._opener = opener
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, rng)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._slot: SourceFrame | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._state = SourceState.STOPPED
        self._last_error: str | None = None
        self._frames_in = 0
        self._delivered = 0
        self._skipped = 0
        self._dropped = 0
        self._reconnects = 0
        self._last_frame_at: float | None = None
        self._recent: list[float] = []  # monotonic decode times of the last frames, for input_fps
        self._abandoned = 0  # decoder threads given up on because a read never returned
        self._last_time_ms = 0
        self._lost = False  # went offline after having delivered frames; the next frame counts a reconnect

    # -- control ---------------------------------------------------------------------------------------------------

    @property
    def camera(self) -> str:
        return self.settings.camera

    def start(self) -> None:
        """Start decoding in the background; returns at once."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._state = SourceState.CONNECTING
        self._spawn()

    def _spawn(self) -> None:
        self._generation += 1
        self._thread = threading.Thread(
            target=self._run, args=(self._generation,), name=f"plantbus[cv:{self.camera}].decode", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop decoding and release the capture; waits up to `timeout` for the decoder thread."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: decoder did not stop within %.0f s (a read is blocked); abandoning it",
                            self.settings.description, timeout)  # fmt: skip
        self._state = SourceState.STOPPED

    def __enter__(self) -> FrameSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- consumer side ---------------------------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> SourceFrame | None:
        """The newest frame not yet taken, waiting up to `timeout` s; None if none came (or the source stopped)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self._stop.is_set() or self._state == SourceState.ENDED:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._watchdog()
                    return None
                self._cond.wait(remaining if remaining is None else min(remaining, 1.0))
            item, self._slot = self._slot, None
            self._cond.notify_all()  # a decoder waiting for the slot to empty (realtime=False) goes on
            return item

    def _watchdog(self) -> None:
        # FFmpeg honours its read timeout, but a driver or a demuxer may still block a read forever. A decoder
        # stuck far past the stall timeout is abandoned (it exits when its read returns) and a fresh one started.
        if self._state != SourceState.ONLINE or self._last_frame_at is None:
            return
        silent = time.monotonic() - self._last_frame_at
        if silent > 3 * self.settings.stall_timeout_s + self.settings.open_timeout_s:
            self._abandoned += 1
            self._fail(f"no frame for {silent:.0f} s and the decoder is stuck; starting a new one")
            self._last_frame_at = time.monotonic()
            self._spawn()

    # -- health ----------------------------------------------------------------------------------------------------

    @property
    def state(self) -> SourceState:
        """Connecting, online, offline, ended or stopped; online turns offline once frames stop for the stall time."""
        state = self._state
        if state == SourceState.ONLINE and self._last_frame_at is not None:
            if time.monotonic() - self._last_frame_at > self.settings.stall_timeout_s:
                return SourceState.OFFLINE
        return state

    def stats(self) -> SourceStats:
        """Counters and state for health metrics."""
        now = time.monotonic()
        recent = [t for t in self._recent if now - t <= 5.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else 0.0
        return SourceStats(
            state=self.state,
            last_error=self._last_error,
            frames_in=self._frames_in,
            frames_delivered=self._delivered,
            frames_skipped=self._skipped,
            frames_dropped=self._dropped,
            reconnects=self._reconnects,
            input_fps=fps,
            seconds_since_frame=None if self._last_frame_at is None else now - self._last_frame_at,
        )

    # -- decoder thread --------------------------------------------------------------------------------------------

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _fail(self, message: str) -> None:
        # Logged once when a failure streak starts and once on recovery (in _run), never once per attempt.
        if self._state != SourceState.OFFLINE or self._last_error is None:
            log.warning("%s", message if self.camera in message else f"{self.settings.description} offline: {message}")
        self._last_error = message
        self._state = SourceState.OFFLINE
        if self._frames_in:
            self._lost = True

    def _run(self, generation: int) -> None:
        settings = self.settings
        loops = 0
        while self._current(generation):
            if self._state != SourceState.OFFLINE:
                self._state = SourceState.CONNECTING
            try:
                reader = self._opener(settings, scene_seed_offset=loops)
            except SourceError as exc:
                self._fail(str(exc))
                self._stop.wait(self._backoff.next_delay())
                continue
            except Exception as exc:  # noqa: BLE001 - a broken back end must not kill the camera's thread
                self._fail(f"opening failed: {type(exc).__name__}: {exc}")
                self._stop.wait(self._backoff.next_delay())
                continue
            try:
                outcome = self._read_loop(reader, generation)
            finally:
                reader.close()
            if not self._current(generation):
                break
            if outcome == "ended":
                if settings.loop:
                    loops += 1
                    continue
                self._state = SourceState.ENDED
                log.info("%s reached the end of its video", settings.description)
                with self._cond:
                    self._cond.notify_all()
                return
            self._stop.wait(self._backoff.next_delay())
        if generation == self._generation and self._state != SourceState.ENDED:
            self._state = SourceState.STOPPED

    def _read_loop(self, reader: _Reader, generation: int) -> str:
        """Read until a failure ("failed") or the end of a file or scene ("ended")."""
        settings = self.settings
        interval = 1.0 / settings.fps
        paced = settings.realtime and not settings.spec.live
        opened_at = time.monotonic()
        # Files played faster than real time get times spaced as in the file, continuing after the previous loop.
        wall_origin_ms = max(time.time() * 1000.0, self._last_time_ms + 1.0)
        next_due: float | None = None  # in media ms (files, scenes) or monotonic s (live)
        got_one = False
        while self._current(generation):
            try:
                decoded = reader.read()
            except _EndOfMedia:
                return "ended"
            except SourceError as exc:
                self._fail(str(exc))
                return "failed"
            except Exception as exc:  # noqa: BLE001 - see _run
                self._fail(f"reading failed: {type(exc).__name__}: {exc}")
                return "failed"
            now = time.monotonic()
            if not got_one:
                got_one = True
                if self._state == SourceState.OFFLINE and self._last_error is not None:
                    log.info("%s online again", settings.description)
                if self._lost:
                    # Online again after a failure: that is a reconnect (a file starting its next loop is not).
                    self._reconnects += 1
                    self._lost = False
                self._state = SourceState.ONLINE
                self._backoff.reset()
            if not self._current(generation):
                break
            self._frames_in += 1
            self._last_frame_at = now
            self._recent.append(now)
            if len(self._recent) > 64:
                del self._recent[:32]

            if decoded.media_ms is None:
                # Live: judge the detection rate by arrival time.
                position = now
                step = interval
            else:
                position = decoded.media_ms
                step = interval * 1000.0
                if paced:
                    # Play files and scenes at their own speed, as a camera would deliver them.
                    wait = opened_at + position / 1000.0 - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        break
                    now = time.monotonic()  # the frame "arrives" now, after its wait: latency counts from here
            if next_due is not None and position < next_due - step * 0.01:
                self._skipped += 1
                continue
            # Keep the detection clock in step; after a long gap start afresh rather than burst.
            next_due = position + step if next_due is None or position - next_due > step else next_due + step
            if decoded.media_ms is None or paced:
                time_ms = int(time.time() * 1000)  # a camera's (or a played file's) frames happen now
            elif decoded.scene_time_ms is not None:
                time_ms = decoded.scene_time_ms  # as fast as processed: the scene's clock, which its truth uses
            else:
                time_ms = int(wall_origin_ms + decoded.media_ms)
            self._last_time_ms = time_ms
            self._deliver(decoded, time_ms, now)
            if not settings.realtime and not settings.spec.live:
                # As fast as processed: wait for the pipeline to take this frame instead of dropping it.
                with self._cond:
                    while self._slot is not None and self._current(generation):
                        self._cond.wait(0.5)
        return "failed"

    def _deliver(self, decoded: _Decoded, time_ms: int, captured: float) -> None:
        image = decoded.image
        width = self.settings.width
        if width is not None and image.shape[1] != width:
            height = max(1, round(image.shape[0] * width / image.shape[1]))
            interpolation = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_LINEAR
            image = cv2.resize(image, (width, height), interpolation=interpolation)
        with self._cond:
            if self._slot is not None:
                self._dropped += 1
            self._slot = SourceFrame(Frame(self.camera, self._delivered, time_ms, image), captured, decoded.truth)
            self._delivered += 1
            self._cond.notify_all()
