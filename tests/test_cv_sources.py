"""Camera sources against real streams: an MJPEG-over-HTTP camera (a subprocess, killed and restarted on its port)
read by OpenCV's FFmpeg back end, video files, synthetic scenes; reconnect, stall, drop and error behaviour."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_cv.config import parse_source
from edge_cv.sources import Backoff, FrameSource, SourceError, SourceSettings, SourceState, open_reader
from hub.broker import free_port
from _cv_support import MjpegCamera, wait_until, write_video

FAST = {"backoff_initial_s": 0.2, "backoff_max_s": 1.0}


def settings(camera: str, source: str, **kw: object) -> SourceSettings:
    return SourceSettings(camera, parse_source(source), **{"fps": 10.0, **FAST, **kw})  # type: ignore[arg-type]


class Consumer:
    """Takes frames from a source in a thread of its own, as a pipeline does, and notes when each arrived."""

    def __init__(self, source: FrameSource, work_s: float = 0.0) -> None:
        self.source = source
        self.work_s = work_s
        self.arrivals: list[float] = []
        self.frames: list[object] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.source.get(timeout=0.2)
            if item is not None:
                self.arrivals.append(time.monotonic())
                self.frames.append(item)
                if self.work_s:
                    time.sleep(self.work_s)

    def __enter__(self) -> Consumer:
        self.source.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.source.stop()

    def rate_between(self, start: float, end: float) -> float:
        return sum(1 for t in self.arrivals if start <= t < end) / (end - start)

    def longest_gap_between(self, start: float, end: float) -> float:
        times = [start, *(t for t in self.arrivals if start <= t < end), end]
        return max(b - a for a, b in zip(times, times[1:]))


@pytest.fixture
def camera() -> Iterator[MjpegCamera]:
    cam = MjpegCamera(free_port(), fps=25.0)
    cam.start()
    yield cam
    cam.kill()


def test_a_killed_stream_goes_offline_and_reconnects_without_disturbing_a_file_camera(
    camera: MjpegCamera, tmp_path: Path
) -> None:
    video = write_video(tmp_path / "line.avi", frames=100, fps=25.0)
    stream = FrameSource(settings("stream", camera.url, stall_timeout_s=2.0))
    local = FrameSource(settings("local", f"file:{video}", loop=True))
    with Consumer(stream) as remote_frames, Consumer(local) as local_frames:
        assert wait_until(lambda: len(remote_frames.arrivals) >= 10, 10), stream.stats()
        assert stream.state == SourceState.ONLINE

        killed = time.monotonic()
        camera.kill()
        assert wait_until(lambda: stream.state == SourceState.OFFLINE, 3), stream.stats()
        offline_after = time.monotonic() - killed
        assert "stream ended or no frame arrived" in (stream.stats().last_error or "")
        time.sleep(2.0)  # down long enough for several failed reconnect attempts (connection refused)
        assert "connection refused" in (stream.stats().last_error or "")
        frames_while_down = len(remote_frames.arrivals)

        returned = time.monotonic()
        camera.start()
        assert wait_until(lambda: len(remote_frames.arrivals) > frames_while_down, 10), stream.stats()
        reconnect_s = time.monotonic() - returned
        stats = stream.stats()
        assert stats.state == SourceState.ONLINE
        assert stats.reconnects == 1
        time.sleep(0.5)
        end = time.monotonic()

    # The stream was back within the backoff ceiling (1 s) plus FFmpeg's open, not after a long sleep.
    assert reconnect_s < 2.5, reconnect_s
    assert offline_after < 1.0, offline_after
    # The file camera kept its 10 frames/s, before, during and after the outage, with no hiccup.
    start = local_frames.arrivals[0]
    assert 8.5 <= local_frames.rate_between(start, end) <= 11.0
    assert 8.5 <= local_frames.rate_between(killed, returned) <= 11.5
    assert local_frames.longest_gap_between(killed, end) < 0.3
    assert local.stats().reconnects == 0 and local.stats().last_error is None
    meanwhile = local_frames.rate_between(killed, returned)
    print(f"\nstream offline {offline_after * 1000:.0f} ms after the kill; frames again {reconnect_s * 1000:.0f} ms "
          f"after the server returned; file camera {meanwhile:.1f} frames/s meanwhile")


def test_a_stream_that_hangs_is_marked_offline_after_the_stall_timeout() -> None:
    camera = MjpegCamera(free_port(), fps=25.0, stall_after=15)
    camera.start()
    try:
        source = FrameSource(settings("hung", camera.url, stall_timeout_s=1.0))
        with Consumer(source) as frames:
            assert wait_until(lambda: len(frames.arrivals) >= 3, 10)
            assert wait_until(lambda: source.state == SourceState.OFFLINE, 4), source.stats()
            silent = time.monotonic() - frames.arrivals[-1]
            assert 0.8 <= silent <= 3.5, silent
            # The hung connection is given up and the camera is opened again: the server answers with new frames.
            assert wait_until(lambda: source.stats().reconnects >= 1, 8), source.stats()
    finally:
        camera.kill()


def test_a_slow_pipeline_gets_the_newest_frame_and_older_ones_are_dropped(camera: MjpegCamera) -> None:
    source = FrameSource(settings("busy", camera.url, fps=25.0))
    with Consumer(source, work_s=0.3) as frames:
        assert wait_until(lambda: len(frames.frames) >= 5, 10)
    stats = source.stats()
    assert stats.frames_dropped >= 10, stats
    # Each frame handed over was fresh: decoded at most one frame interval before it was taken, never queued.
    ages = [arrival - item.captured for arrival, item in zip(frames.arrivals, frames.frames)]  # type: ignore
    assert max(ages[1:]) < 0.1, ages


def test_the_detection_rate_subsamples_a_file_by_its_timestamps(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", frames=50, fps=25.0)
    # realtime=False: as fast as taken, so the test does not wait 2 s, and nothing may be dropped.
    source = FrameSource(settings("f", f"file:{video}", fps=10.0, realtime=False))
    with Consumer(source) as frames:
        assert wait_until(lambda: source.state == SourceState.ENDED, 10)
    stats = source.stats()
    assert (stats.frames_in, stats.frames_delivered, stats.frames_skipped, stats.frames_dropped) == (50, 20, 30, 0)
    indices = [item.frame.index for item in frames.frames]  # type: ignore[attr-defined]
    assert indices == list(range(20))
    times = [item.frame.time_ms for item in frames.frames]  # type: ignore[attr-defined]
    # Frames exist every 40 ms: the one nearest each 100 ms step is taken, so steps are 80 or 120 ms, 100 on average.
    steps = [b - a for a, b in zip(times, times[1:])]
    assert all(79 <= s <= 121 for s in steps), steps
    assert 98 <= sum(steps) / len(steps) <= 102


def test_a_file_ends_or_loops(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", frames=20, fps=20.0)
    once = FrameSource(settings("once", f"file:{video}", fps=20.0, realtime=False))
    with Consumer(once) as frames:
        assert wait_until(lambda: once.state == SourceState.ENDED, 10)
        assert once.get(timeout=0.1) is None  # an ended source returns at once, it does not block the pipeline
    assert len(frames.frames) == 20

    looping = FrameSource(settings("loop", f"file:{video}", fps=20.0, realtime=False, loop=True))
    with Consumer(looping) as frames:
        assert wait_until(lambda: len(frames.frames) >= 50, 10)
        assert looping.state == SourceState.ONLINE
    stats = looping.stats()
    assert stats.reconnects == 0 and stats.last_error is None  # starting over is not a failure
    times = [item.frame.time_ms for item in frames.frames]  # type: ignore[attr-defined]
    assert times == sorted(times)  # time keeps going forward across the loop


def test_a_synthetic_scene_plays_in_real_time_with_its_ground_truth() -> None:
    source = FrameSource(settings("sim", "synthetic:conveyor?seed=2&width=640&height=360", fps=10.0, width=320))
    with Consumer(source) as frames:
        time.sleep(1.5)
    n = len(frames.frames)
    assert 12 <= n <= 17, n
    first = frames.frames[0]
    assert first.frame.image.shape == (180, 320, 3)  # type: ignore[attr-defined]
    assert first.truth is not None and hasattr(first.truth, "products")  # type: ignore[attr-defined]


def test_a_refused_address_gives_a_clear_error_and_keeps_retrying() -> None:
    port = free_port()
    source = FrameSource(settings("nobody", f"http://127.0.0.1:{port}/stream.mjpg"))
    with Consumer(source):
        assert wait_until(lambda: source.stats().last_error is not None, 3)
        time.sleep(1.0)
    stats = source.stats()
    assert stats.state == SourceState.STOPPED
    assert stats.last_error == (
        f"camera nobody (http://127.0.0.1:{port}/stream.mjpg): connection refused by 127.0.0.1:{port}; "
        "check the port and that the camera is on"
    )


def test_open_errors_say_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file .*missing.mp4 does not exist"):
        open_reader(settings("a", f"file:{tmp_path / 'missing.mp4'}"))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(SourceError, match="FFmpeg cannot read .* as video"):
        open_reader(settings("b", f"file:{text}"))
    with pytest.raises(SourceError, match="no USB camera at /dev/video63"):
        open_reader(settings("c", "usb:63"))
    with pytest.raises(SourceError, match="PLANTBUS_TEST_NO_SUCH_VAR .* is not set"):
        open_reader(settings("d", "rtsp://admin@127.0.0.1:1/s", password_env="PLANTBUS_TEST_NO_SUCH_VAR"))


def test_an_http_server_that_is_not_a_camera_is_told_apart(tmp_path: Path) -> None:
    import http.server

    class Page(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

    (tmp_path / "index.html").write_text("<html>not a camera</html>")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Page(*a, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(SourceError, match="connected, but FFmpeg found no video stream there"):
            open_reader(settings("web", f"http://127.0.0.1:{server.server_address[1]}/index.html", open_timeout_s=3))
    finally:
        server.shutdown()
        server.server_close()


def test_backoff_doubles_with_jitter_up_to_its_ceiling() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(7)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings)), delays
    assert len(set(delays)) == len(delays)  # jittered: two cameras failing together do not retry in lockstep
    backoff.reset()
    assert backoff.next_delay() <= 0.5
