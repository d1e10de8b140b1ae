"""The operator console in a real headless Chromium: pages load, values change live, Russian works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hub.broker import LocalMosquitto, free_port

_MISSING = not (shutil.which("chromium") and shutil.which("chromedriver") and shutil.which("mosquitto_pub"))
if _MISSING and os.environ.get("CI"):
    # In CI the set-up script installs them: a skip there would hide a broken install step.
    raise RuntimeError("chromium, chromium-driver or mosquitto-clients missing: scripts/setup.sh test should install them")
pytestmark = pytest.mark.skipif(
    _MISSING, reason="needs Debian chromium, chromium-driver and mosquitto-clients (scripts/setup.sh test)"
)
webdriver = pytest.importorskip("selenium.webdriver")

ROOT = Path(__file__).resolve().parents[1]
TAG = "uns/plant1/salad-plc/sleever/sleeves_scrapped"
NODE = "uns/plant1/salad-plc"


def publish(broker: LocalMosquitto, topic: str, doc: dict) -> None:
    """A retained JSON message, as the hub's UNS mirror publishes it."""
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-r", "-t", topic,
                    "-m", json.dumps(doc)], check=True, timeout=10)


def metric(value: float, quality: str = "GOOD") -> dict:
    return {"value": value, "timestamp": int(time.time() * 1000), "quality": quality, "datatype": "Int32"}


def wait_for(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never through a proxy
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def console(broker: LocalMosquitto, tmp_path: Path) -> Iterator[str]:
    """The console as `python -m ui.app` in a subprocess on a free port; yields its base URL."""
    port = free_port()
    log = open(tmp_path / "console.log", "w")
    # NiceGUI switches to its own test mode when it sees pytest's variable; this is a real server.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    proc = subprocess.Popen([sys.executable, "-m", "ui.app", "--broker", broker.url, "--port", str(port)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is None and http_ok(base + "/uns"), 30, "the console to answer")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(dir=tmp_path)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900",
                 "--no-proxy-server", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def test_console_pages_show_uns_values_live_in_chromium(broker: LocalMosquitto, console: str, browser) -> None:
    publish(broker, TAG, metric(3))
    publish(broker, "uns/plant1/oatbar-plc/checkweigher/rejects", metric(11, "STALE"))
    publish(broker, NODE + "/_status", {"online": True, "timestamp": int(time.time() * 1000), "bdSeq": 1,
                                         "group": "plant1", "edge_node": "salad-plc", "device": None, "reason": "birth"})
    publish(broker, "uns/plant1/oatbar-plc/_status", {"online": False, "timestamp": int(time.time() * 1000),
                                                     "bdSeq": 2, "group": "plant1", "edge_node": "oatbar-plc",
                                                     "device": None, "reason": "death"})
    publish(broker, "plantbus/status", {"timestamp": int(time.time() * 1000), "host": {
        "host_id": "plantbus", "messages_per_s": 12.5, "metrics_per_s": 40.0, "nodes_online": 1},
        "plugins": {"historian": {"state": "failing", "last_error": "database is locked"}}})

    browser.get(console + "/uns")
    wait_for(lambda: "sleeves_scrapped" in page_text(browser), what="the tag in the table")
    browser.find_element("css selector", "input#tag-search").send_keys("sleeves")
    wait_for(lambda: "rejects" not in page_text(browser), what="search to filter the table")
    browser.find_element("xpath", "//td[contains(., 'sleeves_scrapped')]").click()
    wait_for(lambda: browser.find_elements("id", "detail-value"), what="tag details")
    assert browser.find_element("id", "detail-value").text == "3"

    publish(broker, TAG, metric(7))
    wait_for(lambda: browser.find_element("id", "detail-value").text == "7", what="the live value 7")
    browser.save_screenshot("/tmp/console_uns.png")

    browser.get(console + "/")
    wait_for(lambda: "salad-plc" in page_text(browser) and "oatbar-plc" in page_text(browser), what="nodes")
    text = page_text(browser)
    assert "1 of 2 online" in text
    assert "database is locked" in text
    assert "12.5 msg/s" in text
    browser.save_screenshot("/tmp/console_overview.png")

    browser.get(console + "/?lang=ru")
    wait_for(lambda: "Обзор завода" in page_text(browser), what="the Russian page")
    assert "в сети 1 из 2" in page_text(browser)
    browser.save_screenshot("/tmp/console_overview_ru.png")
