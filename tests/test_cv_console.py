"""The console's Cameras page in a real headless Chromium: a CV edge node's camera and a new event appear live,
with the event's snapshot served from the hub's folder, and nothing outside that folder is served."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from hub.broker import LocalMosquitto
from test_console_browser import _MISSING, browser, page_text, running_console, wait_for  # noqa: F401 - browser: fixture

pytestmark = pytest.mark.skipif(
    _MISSING, reason="needs Debian chromium, chromium-driver and mosquitto-clients (scripts/setup.sh test)"
)

ROOT = Path(__file__).resolve().parents[1]
GROUP = "plant1"
NODE = "cv-oatbar"


class Plant:
    """A hub (with the cv_events plugin) and a CV publisher, running on an event loop in a thread of their own,
    while the test drives the browser synchronously."""

    def __init__(self, config_file: Path, state: Path) -> None:
        self.config_file = config_file
        self.state = state
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.hub: Any = None
        self.pub: Any = None
        self._hub_task: asyncio.Task[None] | None = None

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        from edge_cv.publisher import CvPublisher
        from hub.app import Hub
        from hub.config import load_config
        from hub.db import Database
        from plugins import cv_events

        cfg = load_config(self.config_file)
        with Database.from_config(cfg) as db:
            db.upgrade()
        self.hub = Hub(cfg, plugins=[("cv_events", cv_events.Plugin)])
        self._hub_task = asyncio.get_running_loop().create_task(self.hub.run())
        await self.hub.host.wait_online()
        self.pub = CvPublisher(NODE, broker=cfg.broker.url, state_dir=self.state / "edge", group=GROUP,
                               cameras=["verifier"], primary_host_id=cfg.host.host_id, metrics_interval_s=0.1)
        await self.pub.start()

    def stop(self) -> None:
        async def _stop() -> None:
            await self.pub.stop()
            assert self._hub_task is not None
            self._hub_task.cancel()
            await asyncio.gather(self._hub_task, return_exceptions=True)

        self.run(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def plant_config(broker: LocalMosquitto, tmp_path: Path) -> Path:
    path = tmp_path / "plantbus.yaml"
    path.write_text(yaml.safe_dump({
        "broker": {"url": broker.url}, "state_dir": str(tmp_path / "state"),
        "host": {"host_id": "plant", "diagnostics_interval_s": 0.5},
    }))
    return path


@pytest.fixture
def plant(plant_config: Path, tmp_path: Path) -> Iterator[Plant]:
    running = Plant(plant_config, tmp_path / "state")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def console(broker: LocalMosquitto, plant_config: Path, tmp_path: Path) -> Iterator[str]:
    """`python -m ui.app` with the hub's configuration (so it knows the snapshot folder); yields its base URL."""
    with running_console(broker, tmp_path, "-c", str(plant_config), page="/cameras") as base:
        yield base


def status_of(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def snapshot_loaded(driver) -> bool:
    """Whether a thumbnail in the events table shows a decoded picture."""
    return bool(driver.execute_script(
        "return [...document.querySelectorAll('img.cv-thumb')].some(i => i.complete && i.naturalWidth > 0)"))


def test_cameras_page_shows_the_camera_and_a_new_event_with_its_snapshot_live(plant: Plant, console: str,
                                                                            browser) -> None:
    from edge_cv.types import CvEvent, RuleResult
    from hub.events import Severity

    pub = plant.pub
    pub.update_health("verifier", {"online": True, "fps": 9.5, "latency_ms": 38.0, "frames": 250})
    pub.publish("verifier", RuleResult(metrics={"count_in": 17}), "packed")

    browser.get(console + "/cameras")
    wait_for(lambda: "verifier" in page_text(browser) and "9.5" in page_text(browser), 20, "the camera row")
    text = page_text(browser)
    assert "1 of 1 cameras online" in text and "packed/count_in 17" in text and NODE in text
    assert "No events since the console started" in text

    image = np.zeros((240, 320, 3), np.uint8)
    image[60:180, 80:240] = (40, 160, 220)
    event = CvEvent("verifier", "quality", "defect", int(time.time() * 1000), label="bar", score=0.93,
                    severity=Severity.MEDIUM, image=image)
    pub.publish("verifier", RuleResult(events=[event]), "quality")  # called from this (non-loop) thread
    wait_for(lambda: "defect" in page_text(browser), 15, "the new event row, without reloading the page")
    wait_for(lambda: snapshot_loaded(browser), 15, "the snapshot thumbnail to load")
    src = browser.find_element("css selector", "img.cv-thumb").get_attribute("src")
    assert src.endswith(f"/cv/snapshots/verifier/{time.strftime('%Y-%m-%d', time.gmtime(event.time_ms / 1000))}/"
                        f"{event.id}.jpg")
    text = page_text(browser)
    assert "medium" in text and "0.93" in text and "1 since the console started" in text
    browser.save_screenshot("/tmp/console_cameras.png")

    # Going offline shows at once, with the reason.
    pub.update_health("verifier", {"online": False, "last_error": "RTSP stream stalled"})
    wait_for(lambda: "0 of 1 cameras online" in page_text(browser), 15, "the camera to show offline")
    assert "RTSP stream stalled" in page_text(browser)

    browser.get(console + "/cameras?lang=ru")
    wait_for(lambda: "Последние события" in page_text(browser), 15, "the Russian page")
    assert "в сети 0 из 1 камер" in page_text(browser) and "Камеры" in page_text(browser)

    assert status_of(src) == 200
    for bad in ("/cv/snapshots/..%2F..%2Fplantbus.yaml", "/cv/snapshots/%2Fetc%2Fpasswd",
                "/cv/snapshots/verifier/2026-01-01/..%2F..%2F..%2Fplantbus.sqlite",
                "/cv/snapshots/verifier/2026-01-01/nosuch.jpg"):
        assert status_of(console + bad) == 404, bad
