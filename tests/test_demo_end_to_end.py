"""`make demo` followed end to end: PLC simulator -> connector -> Mosquitto -> host -> UNS mirror -> historian -> console.

Runs the demo exactly as a user does (`python -m hub.demo`, in a scratch folder), then checks each hop the way an
engineer would: the ISA-95 topics on the broker, the historian's file, the console in a real Chromium, and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hub.historian.sql import SqlHistorian
from hub.mqtt import BrokerUrl, make_client
from hub.samples import Quality

pytestmark = pytest.mark.slow
OATBAR = "zdorovo/plant1/packaging/oatbar/line/runtime_s"  # OPC UA -> oatbar-plc
SALAD = "zdorovo/plant1/packaging/salad/line/runtime_s"  # Modbus -> salad-plc
PACKED = "zdorovo/plant1/packaging/oatbar/verifier/packed/count"  # camera -> edge_cv -> cv-oatbar


@pytest.fixture
def demo(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # NiceGUI's test mode stays off
    env["PYTHONUNBUFFERED"] = "1"
    log_path = tmp_path / "demo.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "hub.demo"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the demo did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        text = log_path.read_text()
        broker = re.search(r"broker\s+(mqtt://127\.0\.0\.1:\d+)", text).group(1)  # type: ignore[union-attr]
        console = re.search(r"console\s+(http://127\.0\.0\.1:\d+)", text).group(1)  # type: ignore[union-attr]
        yield proc, broker, console, tmp_path, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


async def _values(broker: str, topics: list[str], want: int, timeout: float = 45.0) -> dict[str, list[dict]]:
    """Collect `want` live (non-retained) JSON messages per topic."""
    seen: dict[str, list[dict]] = {t: [] for t in topics}
    async with make_client(BrokerUrl.parse(broker), "e2e-watch") as client:
        for topic in topics:
            await client.subscribe(topic, qos=0)
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                doc = json.loads(message.payload)
                # Births may carry null before a connector's first read; values that flow are what counts.
                if not message.retain and doc["value"] is not None:
                    seen[str(message.topic)].append(doc)
                if all(len(v) >= want for v in seen.values()):
                    return seen
    return seen


async def test_demo_carries_plc_values_to_the_uns_the_historian_and_the_console(demo):
    proc, broker, console, cwd, log_path = demo
    # 1. PLC simulator -> OPC UA / Modbus connectors -> Sparkplug -> host -> UNS mirror, live and GOOD.
    seen = await _values(broker, [OATBAR, SALAD], want=2)
    for topic, docs in seen.items():
        assert len(docs) >= 2, f"no live values on {topic}: {log_path.read_text()[-2000:]}"
        assert all(d["quality"] == "GOOD" for d in docs)
        assert docs[-1]["value"] > docs[0]["value"], f"{topic} does not advance: {docs}"
    assert seen[OATBAR][0]["datatype"] == "UInt32"
    # 1b. camera (synthetic video) -> edge_cv pipeline -> Sparkplug cv-oatbar -> host -> UNS: packs are counted.
    packed = (await _values(broker, [PACKED], want=3, timeout=60))[PACKED]  # the birth says 0, then packs
    assert packed and packed[-1]["value"] > 0 and packed[-1]["quality"] == "GOOD", log_path.read_text()[-2000:]

    # 2. -> historian: the same values are in the SQL history file the demo keeps.
    history = SqlHistorian(f"sqlite:///{cwd / 'var/demo/hub/history.sqlite'}")
    await history.open()
    try:
        now = int(time.time() * 1000)

        async def stored() -> dict:
            return await history.query_raw([OATBAR, SALAD], now - 600_000, now + 60_000)

        async with asyncio.timeout(30):
            while True:
                points = await stored()
                if all(len(points.get(p, [])) >= 2 for p in (OATBAR, SALAD)):
                    break
                await asyncio.sleep(0.5)
        assert all(p.quality is Quality.GOOD for p in points[OATBAR])
    finally:
        await history.close()

    # 3. -> console: the operator finds the tag in a real browser.
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("chromium / chromium-driver missing: scripts/setup.sh test installs them")
    else:
        from selenium import webdriver

        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--no-proxy-server",
                     "--window-size=1400,900", f"--user-data-dir={tempfile.mkdtemp(dir=cwd)}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))
        try:
            driver.get(console + "/uns")
            deadline = time.monotonic() + 30
            while "runtime_s" not in driver.find_element("tag name", "body").text:
                assert time.monotonic() < deadline, "the console never listed the plant's tags"
                await asyncio.sleep(0.3)
            driver.find_element("css selector", "input#tag-search").send_keys("oatbar/line/runtime_s")
            deadline = time.monotonic() + 15
            while OATBAR not in driver.find_element("tag name", "body").text:
                assert time.monotonic() < deadline, "search did not find the oat-bar runtime tag"
                await asyncio.sleep(0.3)
        finally:
            driver.quit()

    # 4. Ctrl-C stops everything it started, cleanly.
    proc.send_signal(signal.SIGINT)
    assert proc.wait(40) == 0
    text = log_path.read_text()
    assert "demo: stopping" in text and "Traceback" not in text, text[-3000:]
