"""The whole Plantbus plugin contract: every hook a plugin may implement, grouped by lifecycle phase.

A plugin is a module or object with functions decorated `@hookimpl` (from `hub.plugins`), published under
the `plantbus` entry-point group; the built-in plugins in `plugins/` load through the very same path.
Every hook is called with keyword arguments; a plugin implements only the ones it needs and may leave
out arguments it does not use. `docs/plugins.md` documents each hook; a test fails when one is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from hub.app import Hub
    from hub.events import Event
    from hub.samples import Sample

hookspec = pluggy.HookspecMarker("plantbus")

# ---------------------------------------------------------------------------- 1. registration (at load)


@hookspec
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare the plugin's configuration model: `register(plugin_name, PydanticModel)`.

    Called once when plugins load, before the hub starts; synchronous. The hub validates the section
    `plugins.<plugin_name>` of its YAML file with the model (which should set extra="forbid") and hands the
    validated object to the plugin through `hub.plugin_settings(plugin_name)`. A plugin without settings
    does not implement this hook; a `plugins.<name>` section for a plugin that registered no model is an
    error that names the section.
    """


@hookspec
def register_historians(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Offer time-series backends: `register(type_name, factory)`.

    Called once at load; synchronous. `factory(settings, state_dir)` returns an object implementing
    `hub.historian.Historian`. Type names must be unique across plugins (the core refuses a clash).
    """


@hookspec
def register_connectors(register: Callable[[str, Any], None]) -> None:
    """Offer equipment connector types (OPC UA, Modbus, ...): `register(type_name, ConnectorType(...))`.

    Called once at load; synchronous. `connectors.base.ConnectorType` pairs the type's settings model
    (a `connectors.base.ConnectorSettings` subclass) with `create(name, settings, context)`, which returns a
    connector: itself a Sparkplug edge node built on `hub.sparkplug.edge.EdgeNode`, run by the hub for every
    `connectors.<name>` section of the configuration whose `type` is this type name.
    """


@hookspec
def register_notifiers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Offer notification channels (Telegram, e-mail through Apprise, ...): `register(type_name, factory)`.

    Called once at load; synchronous. `factory(settings)` returns an object with `async notify(title, body)`.
    """


@hookspec
def register_analytics(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Offer analytics that derive values (OEE, downtime, counts): `register(name, factory)`.

    Called once at load; synchronous. `factory(settings, hub)` returns an object that consumes samples and
    events through the bus and publishes derived samples with `hub.publish_derived(...)`.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the `plantbus` command line; `cli` is the root click group.

    Called once when the command line starts; synchronous.
    """


@hookspec
def register_console_pages(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Add pages to the operator console: `register(route, build_page)`. Used from the console issue on.

    Called once at load; synchronous.
    """


@hookspec
def register_api_routes(register: Callable[[Any], None]) -> None:
    """Add routes to the hub's REST API: `register(router)`. Used from the security/API issue on.

    Called once at load; synchronous.
    """


# ---------------------------------------------------------------------------- 2. lifecycle


@hookspec
async def hub_startup(hub: Hub) -> None:
    """The hub is starting: open connections, start background work. May be async.

    Called once per `Hub.run()`, after the plugin settings were validated and before the primary host
    connects, so a plugin sees every sample from the first birth on. An exception here is logged, the
    plugin is marked failing and the hub starts without it.
    """


@hookspec
async def hub_shutdown(hub: Hub) -> None:
    """The hub is stopping: flush and close. May be async.

    Called once when `Hub.run()` ends, after the bus has delivered what it holds (each plugin's queue is
    drained or spilled to disk). Exceptions are logged and do not stop other plugins' shutdown.
    """


# ---------------------------------------------------------------------------- 3. data (through the bus)


@hookspec
async def on_samples(samples: list[Sample], hub: Hub) -> None:
    """A batch of metric samples, in arrival order. May be async.

    Each plugin that implements it gets its own bounded queue on the in-process bus and its own task,
    so a slow plugin never delays the host or other plugins: when its queue is full the batches spill to
    disk and its lag is shown. An exception is counted, the batch retried with backoff, and after five
    failures it is set aside in the plugin's dead-letter file (counted, never silently dropped).
    """


@hookspec
async def on_events(events: list[Event], hub: Hub) -> None:
    """A batch of events (node/device online changes, alarms, CV detections, ...), in order. May be async.

    Delivered like `on_samples`, through the plugin's own queue.
    """
