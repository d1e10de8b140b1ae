"""`Hub`: the primary host, the UNS mirror, the plugins, the bus and the derived-values edge node, wired from one
configuration.

Lifecycle of `Hub.run()`, every long-running task named and owned by one TaskGroup:

1. (in `__init__`) load plugins, check their hooks, collect their registrations, validate their settings;
2. `hub_startup` plugin by plugin (a plugin that raises is marked failing and left out);
3. the bus consumers (resuming what an earlier run left on disk), the primary host, the mirror, the status
   publisher; the derived-values edge node starts with the first `publish_derived`;
   then the equipment connectors configured under `connectors.<name>` (hub/connector_runner.py);
4. on cancellation, in order: the status publisher, the connectors (NDEATH), the derived-values node (NDEATH), the host (STALE,
   STATE offline), the mirror; then the bus drains (within `bus.drain_timeout_s`, the rest stays on disk);
   then `hub_shutdown`, then the plugins' own background tasks.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from connectors.base import ConnectorContext
from hub.bus import EVENTS, SAMPLES, Bus
from hub.connector_runner import ConnectorRunner
from hub.config import PlantbusConfig
from hub.derived import DerivedValue, DerivedValues
from hub.errors import PlantbusError
from hub.events import Event
from hub.mirror import UnsMirror
from hub.mqtt import BrokerUrl
from hub.plugins import Plugins, Registries, call_hookimpl, describe_error, discover, given_sources, load_plugins
from hub.samples import Sample
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.host import PrimaryHost
from hub.sparkplug.payload import DataType, now_ms
from hub.uns_paths import UnsMapper

log = logging.getLogger(__name__)


class Hub:
    """One Plantbus hub process: hosts its Sparkplug groups, mirrors them onto the UNS and runs the plugins."""

    def __init__(
        self,
        config: PlantbusConfig,
        *,
        broker_override: str | None = None,
        plugins: Iterable[Any] | None = None,
    ) -> None:
        """Build the hub; `plugins` replaces the installed plugins (objects, classes, modules or (name, obj))."""
        self.config = config
        broker = BrokerUrl.parse(broker_override) if broker_override else config.broker.resolve()
        self.broker = broker
        self.state_dir = config.state_dir
        self.mapper = UnsMapper(config.uns)

        sources = discover() if plugins is None else given_sources(plugins)
        self.plugins: Plugins = load_plugins(sources, config.plugins, config.disabled_plugins)
        self.plugins.raise_for_problems()
        self.plugin_manager = self.plugins.manager

        host_config = config.host
        if host_config.groups and config.derived.group not in host_config.groups:
            # The hub hosts its own derived values whatever groups it was told to host.
            host_config = host_config.model_copy(update={"groups": [*host_config.groups, config.derived.group]})
        self.host = PrimaryHost(
            host_config,
            broker,
            mapper=self.mapper,
            client_id=config.broker.client_id,
            compact_commands=not config.host.command_names,
        )
        self.mirror: UnsMirror | None = UnsMirror(self.host, config.uns) if config.uns.enabled else None
        self.bus = Bus(config.bus, config.state_dir / "bus")
        self.host.add_listener(self.bus.publish_samples)
        self.host.add_status_listener(self.bus.publish_status)
        self.derived = DerivedValues(config.derived, broker, host_id=config.host.host_id, state_dir=config.state_dir)
        self.connectors = ConnectorRunner(
            config.connectors,
            self.registries.connectors,
            ConnectorContext(broker, config.host.host_id, config.state_dir / "connectors"),
        )
        # Set by the historian plugin at startup (plugins/historian.py): queries for the console and the API.
        self.historian: Any = None
        self.started_ms: int | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._started_plugins: list[str] = []
        self._plugin_tasks: list[asyncio.Task[Any]] = []
        self._ran = False

    # ------------------------------------------------------------------ plugins

    @property
    def registries(self) -> Registries:
        """What plugins registered: historian, connector, notifier and analytics types, console pages, routes."""
        return self.plugins.registries

    def plugin_settings(self, name: str) -> BaseModel:
        """The validated settings (`plugins.<name>`) of a plugin that registered a model."""
        try:
            return self.plugins.settings[name]
        except KeyError:
            raise PlantbusError(
                f"no settings registered under {name!r}; the plugin must implement register_settings"
            ) from None

    def start_task(self, plugin: str, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run a plugin's background work under the hub's TaskGroup as `plantbus[plugin:<plugin>].<what>`.

        An exception in it marks the plugin failing and is logged; it does not stop the hub. The task is
        cancelled after `hub_shutdown`.
        """
        if self._tg is None:
            coro.close()
            raise PlantbusError(f"plugin {plugin}: background tasks can start only while the hub runs")
        task = self._tg.create_task(self._guarded(plugin, coro, what), name=f"plantbus[plugin:{plugin}].{what}")
        self._plugin_tasks.append(task)
        return task

    async def _guarded(self, plugin: str, coro: Coroutine[Any, Any, Any], what: str) -> None:
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - one plugin's crash must not take the hub down
            self.plugins.mark_failing(plugin, exc)
            log.error("plugin %s: background task %s failed", plugin, what, exc_info=True)

    async def publish_derived(
        self,
        plugin: str,
        values: Mapping[str, Any] | Iterable[DerivedValue | Sample],
        *,
        timestamp: int | None = None,
        datatypes: Mapping[str, DataType | str] | None = None,
    ) -> int:
        """Publish values a plugin derived as Sparkplug metrics of device `<plugin>` of the derived edge node.

        `values` is `{metric_name: value}` (datatypes inferred, or given by `datatypes`) or DerivedValue /
        Sample items. Returns how many metrics were declared or changed.
        """
        if self.plugin_manager.get_plugin(plugin) is None:
            raise PlantbusError(f"publish_derived: {plugin!r} is not a loaded plugin; use the plugin's own name")
        return await self.derived.publish(plugin, values, timestamp=timestamp, datatypes=datatypes)

    def emit_events(self, events: Iterable[Event]) -> None:
        """Hand events (alarms, detections, ...) to every plugin's `on_events`, through the bus."""
        self.bus.publish_events(list(events))

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until cancelled; then stop in order (module docstring). A Hub runs once; build a new one to restart."""
        if self._ran:
            raise PlantbusError("this Hub has already run; build a new Hub (same configuration) to start again")
        self._ran = True
        self.started_ms = now_ms()
        name = f"plantbus[hub:{self.config.host.host_id}]"
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self.derived.attach(self._start_derived)
            tasks: dict[str, asyncio.Task[Any] | None] = {}
            connector_tasks: list[asyncio.Task[Any]] = []
            try:
                await self._startup_plugins()
                self._add_consumers()
                await self.bus.start(tg.create_task)
                tasks["host"] = tg.create_task(self.host.run(), name=f"{name}.host")
                if self.mirror is not None:
                    tasks["mirror"] = tg.create_task(self.mirror.run(), name=f"{name}.mirror")
                tasks["status"] = tg.create_task(self._status_loop(), name=f"{name}.status")
                connector_tasks = self.connectors.start(tg.create_task)
                await asyncio.Future()  # until cancelled (or a task of the group fails)
            finally:
                await self._stop(tasks, connector_tasks)
                self._tg = None

    async def _stop(self, tasks: Mapping[str, asyncio.Task[Any] | None], connector_tasks: list[asyncio.Task[Any]]) -> None:
        async def end(task: asyncio.Task[Any] | None) -> None:
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        await end(tasks.get("status"))
        # Connectors first: their NDEATHs reach the host while it still listens.
        await asyncio.gather(*(end(t) for t in connector_tasks))
        self.derived.attach(None)
        await self.derived.stop()
        await end(tasks.get("host"))
        await end(tasks.get("mirror"))
        await self.bus.close()
        await self._shutdown_plugins()
        for task in self._plugin_tasks:
            await end(task)
        self._plugin_tasks.clear()

    def _start_derived(self, node: EdgeNode) -> None:
        assert self._tg is not None
        self._tg.create_task(node.run(), name=f"plantbus[edge:{node.group_id}/{node.edge_node_id}].run")

    async def _startup_plugins(self) -> None:
        started_impls = {impl.plugin_name for impl in self.plugins.hookimpls("hub_startup")}
        self._started_plugins = []
        for impl in self.plugins.hookimpls("hub_startup"):
            try:
                result = call_hookimpl(impl, hub=self)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - the hub starts without a plugin that cannot
                self.plugins.mark_failing(impl.plugin_name, f"hub_startup failed: {describe_error(exc)}")
                log.error("plugin %s failed to start; the hub runs without it", impl.plugin_name, exc_info=True)
                continue
            self._started_plugins.append(impl.plugin_name)
        for plugin in self.plugins.active():
            status = self.plugins.status[plugin]
            if plugin not in started_impls:
                self._started_plugins.append(plugin)
            if plugin in self._started_plugins:
                status.state = "running"

    def _add_consumers(self) -> None:
        for stream in (SAMPLES, EVENTS):
            for impl in self.plugins.hookimpls(f"on_{stream}"):
                plugin = impl.plugin_name
                if plugin not in self._started_plugins or self.bus.consumer(plugin, stream) is not None:
                    continue

                def deliver(batch: list[Any], _impl: Any = impl, _stream: str = stream) -> Any:
                    return call_hookimpl(_impl, **{_stream: batch, "hub": self})

                self.bus.add_consumer(plugin, stream, deliver, on_failure=self.plugins.mark_failing,
                                      on_recovery=self.plugins.mark_ok)

    async def _shutdown_plugins(self) -> None:
        for impl in self.plugins.hookimpls("hub_shutdown"):
            if impl.plugin_name not in self._started_plugins:
                continue
            try:
                result = call_hookimpl(impl, hub=self)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - every plugin gets its shutdown
                self.plugins.mark_failing(impl.plugin_name, f"hub_shutdown failed: {describe_error(exc)}")
                log.error("plugin %s failed to shut down cleanly", impl.plugin_name, exc_info=True)
        for plugin in self._started_plugins:
            status = self.plugins.status[plugin]
            if status.state == "running":
                status.state = "loaded"
        self._started_plugins = []

    # ------------------------------------------------------------------ operations

    async def write(self, path: str, value: Any) -> None:
        """Write a value to a metric by UNS path or Sparkplug address (raises WriteError)."""
        await self.host.write(path, value)

    def plugin_diagnostics(self) -> dict[str, Any]:
        """Each plugin's status with its bus figures (lag, failures, dead letters)."""
        out = {}
        for name, status in self.plugins.status.items():
            doc = status.as_dict()
            consumers = {s: self.bus.consumer(name, s) for s in (SAMPLES, EVENTS)}
            bus = {c.hook: c.diagnostics() for c in consumers.values() if c is not None}
            if bus:
                doc["bus"] = bus
                doc["lag"] = {
                    "batches": sum(b["lag"]["batches"] for b in bus.values()),
                    "items": sum(b["lag"]["items"] for b in bus.values()),
                }
            out[name] = doc
        return out

    def diagnostics(self) -> dict[str, Any]:
        """Host, mirror, bus, plugin and derived-value figures, as published on `uns.status_topic`."""
        return {
            "timestamp": now_ms(),
            "started": self.started_ms,
            "broker": str(self.broker),
            "host": self.host.diagnostics(),
            "mirror": self.mirror.diagnostics() if self.mirror is not None else None,
            "bus": self.bus.diagnostics(),
            "plugins": self.plugin_diagnostics(),
            "derived": self.derived.diagnostics(),
            "connectors": self.connectors.diagnostics(),
        }

    def publish_status(self) -> bool:
        """Publish the diagnostics on `uns.status_topic` now (retained); False when not connected."""
        payload = json.dumps(self.diagnostics(), separators=(",", ":"), default=str).encode()
        try:
            return self.host.publish_nowait(self.config.uns.status_topic, payload, qos=self.config.uns.qos,
                                            retain=True)
        except ValueError as exc:
            log.error("cannot publish diagnostics on uns.status_topic %r: %s — use a topic without + or #",
                      self.config.uns.status_topic, exc)
            return False

    async def _status_loop(self) -> None:
        interval = self.config.host.diagnostics_interval_s
        while True:
            await self.host.wait_online()
            self.publish_status()
            await asyncio.sleep(interval)

