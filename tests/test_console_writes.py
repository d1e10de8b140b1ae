"""The console's write path and trend in a real headless Chromium, against a real hub and a real edge node."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.broker import LocalMosquitto, free_port
from hub.mqtt import BrokerUrl
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.payload import DataType
from test_console_browser import ROOT, browser, http_ok, page_text, pytestmark, wait_for  # noqa: F401 - fixture, skip mark

HOST_ID = "console-host"
GROUP, NODE, DEVICE, METRIC = "plant1", "salad-plc", "sleever", "speed_setpoint"
TAG = f"uns/{GROUP}/{NODE}/{DEVICE}/{METRIC}"


def start_console(broker: LocalMosquitto, tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str, Any]:
    """`python -m hub.cli console -c <yaml> <flags>` on a free port; returns the process, base URL and log file."""
    config = tmp_path / "plantbus.yaml"
    config.write_text(
        f"broker:\n  url: {broker.url}\n"
        f"host:\n  host_id: {HOST_ID}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "uns:\n  prefix: uns\n"
    )
    port = free_port()
    log = open(tmp_path / "console.log", "w")
    # NiceGUI switches to its own test mode when it sees pytest's variable; this is a real server.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "console", "-c", str(config), *flags,
                             "--port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is None and http_ok(base + "/uns"), 30, "the console to answer")
    except AssertionError:
        stop(proc, log)
        raise AssertionError((tmp_path / "console.log").read_text()[-3000:]) from None
    return proc, base, log


def stop(proc: subprocess.Popen[bytes], log: Any) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()


@pytest.fixture
def hub_console(broker: LocalMosquitto, tmp_path: Path) -> Iterator[str]:
    """The console with an in-process hub and --allow-writes; yields its base URL."""
    proc, base, log = start_console(broker, tmp_path, "--with-hub", "--allow-writes")
    try:
        yield base
    finally:
        stop(proc, log)


@pytest.fixture
def readonly_console(broker: LocalMosquitto, tmp_path: Path) -> Iterator[str]:
    """The console with an in-process hub but without --allow-writes; yields its base URL."""
    proc, base, log = start_console(broker, tmp_path, "--with-hub")
    try:
        yield base
    finally:
        stop(proc, log)


class Line:
    """A real edge node with one device and a writable Double; records what operators write to it."""

    def __init__(self, broker: LocalMosquitto, state_dir: Path) -> None:
        self.received: list[tuple[str | None, str, Any]] = []
        self.node = EdgeNode(BrokerUrl.parse(broker.url), GROUP, NODE, state_dir=state_dir,
                             primary_host_id=HOST_ID, on_write=self._on_write)
        self.node.add_device(DEVICE).add_metric(METRIC, DataType.Double, 10.0, writable=True)
        self.task: asyncio.Task[None] | None = None

    def _on_write(self, device_id: str | None, name: str, value: Any) -> None:
        self.received.append((device_id, name, value))

    async def __aenter__(self) -> Line:
        self.task = self.node.start()
        await self.node.wait_online(10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.node.stop()
        assert self.task is not None
        await asyncio.gather(self.task, return_exceptions=True)
        self.node.close()


async def ui(fn: Callable[..., Any], *args: Any) -> Any:
    """One blocking Selenium call off the event loop, so the edge node keeps running meanwhile."""
    return await asyncio.to_thread(fn, *args)


async def wait_ui(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll a (blocking) page check from a worker thread until it is truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await ui(check)
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def detail_value(driver) -> str:  # type: ignore[no-untyped-def]
    found = driver.find_elements("id", "detail-value")
    return found[0].text if found else ""


def open_tag(driver, base: str) -> None:  # type: ignore[no-untyped-def]
    """Open /uns, wait for the tag in the table and open its details card."""
    driver.get(base + "/uns")
    wait_for(lambda: METRIC in page_text(driver), 20, "the edge node's tag in the table")
    driver.find_element("css selector", "input#tag-search").send_keys(METRIC)
    driver.find_element("xpath", f"//td[contains(., '{METRIC}')]").click()
    wait_for(lambda: driver.find_elements("id", "detail-value"), what="tag details")


def visible_buttons(driver, label: str) -> list[Any]:  # type: ignore[no-untyped-def]
    return [b for b in driver.find_elements("xpath", f"//button[.//span[normalize-space()='{label}']]")
            if b.is_displayed()]


def type_value(driver, text: str) -> None:  # type: ignore[no-untyped-def]
    """Type into the details card's write input (the only input labelled 'New value')."""
    field = driver.find_element("xpath", "//label[.//div[contains(., 'New value')]]//input")
    from selenium.webdriver.common.keys import Keys

    # Select-all and type over: Selenium's clear() does not reach Vue's model, the old text would stay.
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text)


async def test_operator_write_confirmed_in_dialog_reaches_the_edge_node_and_the_uns(
    broker: LocalMosquitto, hub_console: str, browser, tmp_path: Path
) -> None:
    async with Line(broker, tmp_path / "edge") as line:
        await ui(open_tag, browser, hub_console)
        assert await ui(detail_value, browser) == "10.0"
        assert "Writes are off" not in await ui(page_text, browser)

        # Cancelling the dialog sends nothing.
        await ui(type_value, browser, "99")
        (await ui(visible_buttons, browser, "Write…"))[0].click()
        await wait_ui(lambda: "Send 99 to " + TAG in page_text(browser), what="the confirmation dialog")
        (await wait_ui(lambda: visible_buttons(browser, "Cancel"), what="the Cancel button"))[0].click()
        await wait_ui(lambda: "Send 99 to" not in page_text(browser), what="the dialog to close")

        # Confirming sends it: the edge node's handler gets the value and the UNS shows it.
        await ui(type_value, browser, "42.5")
        (await ui(visible_buttons, browser, "Write…"))[0].click()
        await wait_ui(lambda: "Send 42.5 to " + TAG in page_text(browser), what="the confirmation dialog")
        (await wait_ui(lambda: visible_buttons(browser, "Send"), what="the confirm button"))[0].click()
        await wait_ui(lambda: line.received, 10, "the edge node to receive the write")
        assert line.received == [(DEVICE, METRIC, 42.5)]  # only the confirmed write, never the cancelled 99
        await wait_ui(lambda: detail_value(browser) == "42.5", 10, "the UNS to show 42.5")
        await wait_ui(lambda: "Command sent to " + TAG in page_text(browser), what="the success notification")
        await ui(browser.save_screenshot, "/tmp/console_write.png")


async def test_console_without_allow_writes_has_no_write_control(
    broker: LocalMosquitto, readonly_console: str, browser, tmp_path: Path
) -> None:
    async with Line(broker, tmp_path / "edge") as line:
        await ui(open_tag, browser, readonly_console)
        text = await ui(page_text, browser)
        assert "Writes are off (start the console with the hub and --allow-writes)" in text
        assert await ui(visible_buttons, browser, "Write…") == []
        assert line.received == []


def test_allow_writes_without_hub_is_refused(broker: LocalMosquitto) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    done = subprocess.run([sys.executable, "-m", "hub.cli", "console", "--broker", broker.url, "--allow-writes",
                           "--port", str(free_port())], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "--allow-writes needs --with-hub" in done.stderr


TREND_VALUES = """
const el = document.querySelector('.nicegui-echart');
const chart = el && el.querySelector('canvas') && getElement(el).chart;
return chart ? chart.getOption().series[0].data.map(point => point[1]) : null;
"""


def trend_plots(driver, expected: list[float]) -> bool:  # type: ignore[no-untyped-def]
    """Whether the trend chart plots every value of `expected`; if not, reopen the details card (the trend is drawn
    when the card opens) so the next look sees what the historian holds by then."""
    values = driver.execute_script(TREND_VALUES) or []
    if all(v in values for v in expected):
        return True
    driver.find_element("xpath", f"//td[contains(., '{METRIC}')]").click()
    return False


async def trend_after_changes(broker: LocalMosquitto, base: str, driver, tmp_path: Path,  # type: ignore[no-untyped-def]
                              expected: list[float], timeout: float) -> None:
    async with Line(broker, tmp_path / "edge") as line:
        for value in (11.0, 12.5, 14.0):
            # Distinct milliseconds (the birth's 10.0 included): within one ms only the newest reading is history
            # (test_historian_sql).
            await asyncio.sleep(0.005)
            await line.node.update(DEVICE, {METRIC: value})
        await ui(open_tag, driver, base)
        await wait_ui(lambda: detail_value(driver) == "14.0", what="the last value in the details card")
        # The historian stores asynchronously (outbox): reopen the card until the chart holds the values.
        await wait_ui(lambda: trend_plots(driver, expected), timeout, f"the trend to plot {expected}")
        text = await ui(page_text, driver)
        assert "No historian" not in text and "Historian query failed" not in text
        await ui(driver.save_screenshot, "/tmp/console_trend.png")


async def test_trend_shows_values_the_in_process_historian_stored(
    broker: LocalMosquitto, hub_console: str, browser, tmp_path: Path
) -> None:
    await trend_after_changes(broker, hub_console, browser, tmp_path, [10.0], 20)


async def test_trend_includes_the_latest_value(
    broker: LocalMosquitto, hub_console: str, browser, tmp_path: Path
) -> None:
    await trend_after_changes(broker, hub_console, browser, tmp_path, [10.0, 11.0, 12.5, 14.0], 6)
