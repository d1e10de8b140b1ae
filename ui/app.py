"""The operator console: a NiceGUI app whose pages draw from the console's own UNS subscription.

`Console` owns the runtime state (tag store, MQTT client, historian access, optional in-process `Hub`);
`serve(console, host, port)` registers the pages and runs the web server. Writes are possible only when
the console runs in the same process as a `Hub` (it calls `hub.write`, which sends NCMD/DCMD) and
`allow_writes` is set; a standalone console is read-only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nicegui import app, ui

from hub.config import UnsConfig
from hub.mqtt import BrokerUrl
from ui.i18n import Translator, translator
from ui.pages.cameras import CvEventFeed, cv_event_filters
from ui.uns_client import TagStore, UnsClient, subscription_filters

log = logging.getLogger(__name__)

REFRESH_S = 0.25  # pages redraw at most 4 times a second, whatever the message rate
QUALITY_CSS = """
.q-GOOD { color: #1b7f3b; } .q-STALE { color: #b26a00; } .q-BAD { color: #c62828; font-weight: 600; }
.tag-value { font-family: ui-monospace, monospace; margin-left: .6em; }
"""


@dataclass
class ConsoleSettings:
    """How a console connects and what it may do."""

    broker: BrokerUrl
    uns: UnsConfig = field(default_factory=UnsConfig)
    historian_url: str | None = None
    allow_writes: bool = False
    client_id: str | None = None
    snapshot_dir: Path | None = None  # the hub's CV snapshot folder (plugins/cv_events.py), served to the cameras page


class Console:
    """One console: its tag store fed by its own MQTT subscription, historian access and (optional) hub."""

    def __init__(self, settings: ConsoleSettings, *, hub: Any = None, historian: Any = None) -> None:
        self.settings = settings
        self.hub = hub
        self.store = TagStore(status_topic=settings.uns.status_topic)
        client_id = settings.client_id or f"plantbus-console-{uuid.uuid4().hex[:8]}"
        self.client = UnsClient(settings.broker, subscription_filters(settings.uns), self.store, client_id)
        # CV events are a stream, not values: a feed of their own, on a subscription to just their topics.
        self.cv_events = CvEventFeed()
        self.cv_client = UnsClient(settings.broker, cv_event_filters(settings.uns), self.cv_events, client_id + "-cv")
        self._historian = historian
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def historian(self) -> Any:
        """The hub's historian in-process, else the SQL historian opened from `historian_url`, else None."""
        if self.hub is not None and getattr(self.hub, "historian", None) is not None:
            return self.hub.historian
        if self._historian is None and self.settings.historian_url:
            from hub.historian.sql import SqlHistorian

            self._historian = SqlHistorian(self.settings.historian_url, name="console")
        return self._historian

    @property
    def can_write(self) -> bool:
        """Writes need the configuration's consent and a hub in this process to execute them."""
        return self.settings.allow_writes and self.hub is not None

    async def write(self, path: str, value: Any) -> None:
        """Send a command through the in-process hub (raises WriteError; PlantbusError when writes are off)."""
        from hub.errors import PlantbusError

        if not self.can_write:
            raise PlantbusError("writes are off: run the console with the hub (--config) and --allow-writes")
        await self.hub.write(path, value)

    async def start(self) -> None:
        """Start the subscription (and the in-process hub, if any) on the running loop."""
        loop = asyncio.get_running_loop()
        if self.hub is not None:
            self._tasks.append(loop.create_task(self.hub.run(), name="plantbus[console].hub"))
        self._tasks.append(loop.create_task(self.client.run(), name="plantbus[console].uns"))
        self._tasks.append(loop.create_task(self.cv_client.run(), name="plantbus[console].cv_events"))

    async def stop(self) -> None:
        """Cancel what `start` started and close the historian."""
        for task in reversed(self._tasks):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._tasks.clear()
        if self._historian is not None:
            await self._historian.close()


def format_ts(ms: int | None) -> str:
    """A millisecond timestamp as local date and time with milliseconds."""
    if not ms:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) + f".{int(ms) % 1000:03d}"


def format_value(value: Any) -> str:
    """A tag value for a cell: short, one line."""
    text = "" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "…"


def frame(console: Console, t: Translator, route: str) -> None:
    """Header shared by all pages: navigation, broker state, tag count, message rate, language switch."""
    ui.add_css(QUALITY_CSS)
    with ui.header().classes("items-center gap-4 bg-blue-grey-9"):
        ui.label(t("app.title")).classes("text-lg font-bold")
        ui.link(t("nav.overview"), f"/?lang={t.lang}").classes("text-white")
        ui.link(t("nav.browser"), f"/uns?lang={t.lang}").classes("text-white")
        ui.link(t("nav.cameras"), f"/cameras?lang={t.lang}").classes("text-white")
        ui.space()
        state = ui.label().props("id=broker-state")
        count = ui.label()
        rate = ui.label()
        ui.link(t("lang.switch"), f"{route}?lang={t.other}").classes("text-white").props("id=lang-switch")
    last = {"messages": console.store.messages, "at": time.monotonic()}

    def refresh() -> None:
        store = console.store
        state.text = t("broker.connected") if console.client.connected else t("broker.disconnected")
        state.classes(replace="text-green-3" if console.client.connected else "text-red-3")
        count.text = t("stats.tags", n=len(store.tags))
        now = time.monotonic()
        if now - last["at"] >= 1.0:
            rate.text = t("stats.rate", rate=round((store.messages - last["messages"]) / (now - last["at"]), 1))
            last.update(messages=store.messages, at=now)

    refresh()
    ui.timer(REFRESH_S, refresh)


def register_pages(console: Console) -> None:
    """Add the console's pages (and the pages plugins registered on an in-process hub) to the NiceGUI app."""
    from ui.pages import cameras, overview, uns_browser

    @ui.page("/", title="Plantbus")
    def overview_page(lang: str = "en") -> None:
        t = translator(lang)
        frame(console, t, "/")
        overview.build(console, t)

    @ui.page("/uns", title="Plantbus UNS")
    def browser_page(lang: str = "en") -> None:
        t = translator(lang)
        frame(console, t, "/uns")
        uns_browser.build(console, t)

    @ui.page("/cameras", title="Plantbus cameras")
    def cameras_page(lang: str = "en") -> None:
        t = translator(lang)
        frame(console, t, "/cameras")
        cameras.build(console, t)

    cameras.register_snapshot_route(console)

    if console.hub is not None:
        pages = console.hub.registries.console_pages
        for route in pages.names():
            ui.page(route)(_plugin_page(console, route, pages[route]))


def _plugin_page(console: Console, route: str, build_page: Callable[..., Any]) -> Callable[..., None]:
    def page(lang: str = "en") -> None:
        t = translator(lang)
        frame(console, t, route)
        build_page(console=console, t=t)

    return page


def serve(console: Console, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Register the pages and run the web server until interrupted (blocks)."""
    register_pages(console)
    app.on_startup(console.start)
    app.on_shutdown(console.stop)
    ui.run(host=host, port=port, title="Plantbus", reload=False, show=False, favicon="🏭",
           uvicorn_logging_level=os.environ.get("PLANTBUS_CONSOLE_LOG", "warning"))


def main(argv: list[str] | None = None) -> None:
    """`python -m ui.app --broker URL [--port N] ...`: the same as `plantbus console`."""
    from plugins.console import console_command

    console_command.main(args=argv, standalone_mode=True)


if __name__ == "__main__":
    main()
