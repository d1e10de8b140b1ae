"""The plugin manager: discovery, loading, the `register_*` registries and each plugin's validated settings.

One `Plugins` object per `Hub` (no module globals), holding its own pluggy `PluginManager`. Plugins come
from one discovery path: the `plantbus` entry-point group of the installed distributions, and the
built-in plugins named in `DEFAULT_PLUGINS`, which are turned into entry points of the very same group
and loaded by the same code (`Plugins.load`). A test hands its own plugins to `Hub(plugins=...)`; they
go through the same registration too.

Loading is in phases, each with its own failure policy:

1. load: import each entry point; an import error marks that plugin *failing* (the hub runs without it
   and `plantbus plugins list` shows why). A plugin whose entry point names a class is instantiated,
   once per hub, so a plugin that keeps state keeps it per hub.
2. check: a hook name that is not in `hub/hookspecs.py` (a misspelling), or a hookimpl with arguments
   the hook does not have, is a `PluginError`: the hub refuses to start and says which plugin and hook.
3. register: every `register_*` hook is called plugin by plugin, so the core knows who registered what;
   two plugins registering the same name is a `PluginError` naming both.
4. configure: the `plugins.<name>` sections of the configuration are validated with the models plugins
   registered through `register_settings`; every problem is reported with its path
   (`plugins.example.depth: ...`). `plugins.<name>.enabled: false` or `disabled_plugins: [<name>]`
   turns a plugin off (it is not even imported when its name is known before loading).
"""

from __future__ import annotations

import asyncio
import difflib
import importlib.metadata
import inspect
import json
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from hub import hookspecs
from hub.config import explain_errors
from hub.errors import ConfigError, PlantbusError

log = logging.getLogger(__name__)

PROJECT = "plantbus"
ENTRY_POINT_GROUP = "plantbus"
BUILT_IN = "built-in"

hookimpl = pluggy.HookimplMarker(PROJECT)

# Built-in plugins, by module (the plugin's name is the module name's last part) or as "name=module[:Class]".
DEFAULT_PLUGINS: tuple[str, ...] = (
    "plugins.historian",
    "plugins.uns_events",
    "plugins.console",
    "cv_events=plugins.cv_events:Plugin",
    "modbus=connectors.modbus.plugin",
    "opcua=connectors.opcua.plugin",
)

# Hooks the core calls once at load, with a `register` callable; the registry each one fills.
REGISTRATION_HOOKS: dict[str, str] = {
    "register_historians": "historians",
    "register_connectors": "connectors",
    "register_notifiers": "notifiers",
    "register_analytics": "analytics",
    "register_console_pages": "console_pages",
}


class PluginError(PlantbusError):
    """A plugin cannot be used as it is: an unknown hook, bad hook arguments, a name clash."""


# ---------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from: an entry point to load, or an object handed over directly."""

    name: str
    origin: str  # "built-in", "distribution <name>" or "given"
    version: str
    entry_point: importlib.metadata.EntryPoint | None = None
    obj: Any = None

    def load(self) -> Any:
        """Import the plugin (entry points) or return the object given."""
        return self.entry_point.load() if self.entry_point is not None else self.obj


def default_sources(modules: Iterable[str] = DEFAULT_PLUGINS) -> list[PluginSource]:
    """The built-in plugins, as entry points of the `plantbus` group (so they load like any other)."""
    sources = []
    for entry in modules:
        # "name=module" as in an entry point; a bare module is named after its last part.
        name, _, module = entry.rpartition("=")
        name = name.strip() or module.rpartition(".")[2]
        module = module.strip()
        sources.append(
            PluginSource(
                name, BUILT_IN, BUILT_IN,
                entry_point=importlib.metadata.EntryPoint(name, module, ENTRY_POINT_GROUP),
            )  # fmt: skip
        )
    return sources


def entry_point_sources(group: str = ENTRY_POINT_GROUP) -> list[PluginSource]:
    """Plugins that installed distributions publish under the entry-point group `group`."""
    found: list[PluginSource] = []
    seen: set[tuple[str, str]] = set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != group:
                continue
            key = (dist_name.lower().replace("_", "-"), ep.name)
            if key in seen:
                continue  # the same distribution found twice on sys.path
            seen.add(key)
            found.append(PluginSource(ep.name, f"distribution {dist_name}", dist.version or "?", entry_point=ep))
    return found


def discover(defaults: Iterable[str] = DEFAULT_PLUGINS, group: str = ENTRY_POINT_GROUP) -> list[PluginSource]:
    """Built-in plugins first, then the installed ones: the hub's normal plugin set."""
    return default_sources(defaults) + entry_point_sources(group)


def given_sources(plugins: Iterable[Any]) -> list[PluginSource]:
    """Plugins handed over directly: objects, modules, classes or `(name, object)` pairs."""
    out = []
    for item in plugins:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, obj = item
        else:
            obj = item
            name = getattr(obj, "__name__", type(obj).__name__).rpartition(".")[2]
        out.append(PluginSource(name, "given", "-", obj=obj))
    return out


# ---------------------------------------------------------------------------- state and registries


@dataclass
class PluginStatus:
    """What the hub knows about one plugin: where it came from, its hooks and how it is doing."""

    name: str
    version: str
    origin: str
    module: str = ""
    hooks: list[str] = field(default_factory=list)
    state: str = "loaded"  # loaded, running, failing, disabled
    last_error: str | None = None
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (diagnostics, `plantbus plugins list --json`)."""
        return {
            "name": self.name, "version": self.version, "origin": self.origin, "module": self.module,
            "hooks": list(self.hooks), "state": self.state, "last_error": self.last_error, "errors": self.errors,
        }  # fmt: skip


class Registry:
    """Things plugins registered under unique names (historian types, connector types, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, tuple[str, Any]] = {}

    def add(self, plugin: str, name: str, obj: Any) -> None:
        """Record `obj` under `name` for `plugin`; a name taken by another plugin is a PluginError naming both."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} with the name {name!r}; use a non-empty string")
        if name in self._items:
            other = self._items[name][0]
            who = f"plugin {plugin!r} twice" if other == plugin else f"both plugin {other!r} and plugin {plugin!r}"
            raise PluginError(
                f"{self.kind} {name!r} is registered by {who}; names must be unique — disable one of them "
                f"(plugins.<name>.enabled: false) or rename it"
            )
        self._items[name] = (plugin, obj)

    def remove_plugin(self, plugin: str) -> None:
        """Forget everything `plugin` registered."""
        self._items = {k: v for k, v in self._items.items() if v[0] != plugin}

    def owner(self, name: str) -> str | None:
        """The plugin that registered `name`."""
        item = self._items.get(name)
        return item[0] if item else None

    def get(self, name: str, default: Any = None) -> Any:
        """The object registered under `name`, or `default`."""
        item = self._items.get(name)
        return item[1] if item else default

    def __getitem__(self, name: str) -> Any:
        try:
            return self._items[name][1]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"no {self.kind} {name!r} is registered (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._items)


class Registries:
    """Everything the `register_*` hooks contributed."""

    def __init__(self) -> None:
        self.settings = Registry("settings model")
        self.historians = Registry("historian type")
        self.connectors = Registry("connector type")
        self.notifiers = Registry("notifier type")
        self.analytics = Registry("analytics")
        self.console_pages = Registry("console page")
        self.api_routes: list[tuple[str, Any]] = []  # (plugin, router); routers carry their own paths

    def remove_plugin(self, plugin: str) -> None:
        """Forget everything `plugin` registered."""
        for registry in (self.settings, self.historians, self.connectors, self.notifiers, self.analytics,
                         self.console_pages):
            registry.remove_plugin(plugin)
        self.api_routes = [(p, r) for p, r in self.api_routes if p != plugin]


def call_hookimpl(impl: Any, **kwargs: Any) -> Any:
    """Call one plugin's implementation with the arguments it declares (pluggy's convention)."""
    return impl.function(*[kwargs[name] for name in impl.argnames])


def describe_error(exc: BaseException) -> str:
    """A one-line description of an exception for status displays."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------- the manager


class Plugins:
    """One hub's plugins: its pluggy manager, each plugin's status, the registries and the settings."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.status: dict[str, PluginStatus] = {}
        self.registries = Registries()
        self.settings: dict[str, BaseModel] = {}
        self.problems: list[str] = []  # fatal: unknown hooks, bad arguments, clashes
        self.config_problems: list[str] = []

    # ------------------------------------------------------------------ loading

    def load(self, sources: Iterable[PluginSource], disabled: Collection[str] = (), *, quiet: bool = False) -> None:
        """Register each plugin from `sources`, skipping the `disabled` names (not even imported)."""
        for source in sources:
            if source.name in self.status:
                other = self.status[source.name]
                self.problems.append(
                    f"two plugins are named {source.name!r}: one from {other.origin}, one from {source.origin}; "
                    "uninstall one of them"
                )
                continue
            status = PluginStatus(source.name, source.version, source.origin)
            self.status[source.name] = status
            if source.name in disabled:
                status.state = "disabled"
                self.manager.set_blocked(source.name)
                continue
            try:
                obj = source.load()
                # A class is instantiated here, once per hub, so a plugin keeps its state per hub.
                if inspect.isclass(obj):
                    obj = obj()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the hub
                status.state = "failing"
                status.errors += 1
                status.last_error = f"could not be loaded: {describe_error(exc)}"
                log.log(logging.DEBUG if quiet else logging.ERROR, "plugin %s (%s) could not be loaded; "
                        "the hub runs without it", source.name, source.origin, exc_info=True)
                continue
            status.module = getattr(obj, "__name__", None) or type(obj).__module__
            try:
                self.manager.register(obj, name=source.name)
            except pluggy.PluginValidationError as exc:
                # Arguments a hook does not have: a programming error the plugin's author must fix.
                detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                status.state = "failing"
                status.last_error = detail
                self.problems.append(f"plugin {source.name!r}: {detail}; see docs/plugins.md for each hook's arguments")
                continue
            except ValueError as exc:
                status.state = "failing"
                status.last_error = str(exc)
                self.problems.append(f"plugin {source.name!r} cannot be registered: {exc}")
                continue
            status.hooks = self._hooks_of(source.name)

    def _hooks_of(self, name: str) -> list[str]:
        plugin = self.manager.get_plugin(name)
        callers = self.manager.get_hookcallers(plugin) or []
        return sorted(caller.name for caller in callers)

    def check_hooks(self) -> None:
        """Record every hookimpl whose hook is not in the contract (pluggy's check_pending, with hints)."""
        known = sorted(name for name, caller in vars(self.manager.hook).items()
                       if not name.startswith("_") and caller.has_spec())
        for name, caller in vars(self.manager.hook).items():
            if name.startswith("_") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" — did you mean {close[0]!r}?" if close else ""
                message = f"plugin {impl.plugin_name!r} implements unknown hook {name!r}{hint} (hooks: docs/plugins.md)"
                self.problems.append(message)
                status = self.status.get(impl.plugin_name)
                if status is not None:
                    status.state = "failing"
                    status.last_error = f"unknown hook {name!r}{hint}"
        if not self.problems:
            # pluggy's own check, as the authority; it can only fail here if the scan above missed a case.
            try:
                self.manager.check_pending()
            except pluggy.PluginValidationError as exc:
                self.problems.append(str(exc))

    def hookimpls(self, hook: str) -> list[Any]:
        """The implementations of `hook` in pluggy's call order (tryfirst first, then last registered first)."""
        caller = getattr(self.manager.hook, hook, None)
        if caller is None:
            return []
        # The hub calls each implementation itself (per-plugin queues and failure handling); wrappers, which
        # only make sense around pluggy's own call loop, are not called.
        return [impl for impl in reversed(caller.get_hookimpls()) if not (impl.hookwrapper or impl.wrapper)]

    def collect_settings(self) -> None:
        """Call `register_settings` plugin by plugin."""
        for impl in self.hookimpls("register_settings"):
            plugin = impl.plugin_name

            def register(name: str, model: type, _plugin: str = plugin) -> None:
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise PluginError(f"plugin {_plugin!r} registered settings {name!r} with {model!r}; "
                                      "register a pydantic model class")
                self.registries.settings.add(_plugin, name, model)

            self._call_registration(impl, plugin, register=register)

    def collect_registrations(self) -> None:
        """Call the other `register_*` hooks plugin by plugin, refusing name clashes."""
        for hook, attr in REGISTRATION_HOOKS.items():
            registry: Registry = getattr(self.registries, attr)
            for impl in self.hookimpls(hook):
                plugin = impl.plugin_name

                def register(name: str, obj: Any, _plugin: str = plugin, _registry: Registry = registry) -> None:
                    _registry.add(_plugin, name, obj)

                self._call_registration(impl, plugin, register=register)
        for impl in self.hookimpls("register_api_routes"):
            plugin = impl.plugin_name

            def add_router(router: Any, _plugin: str = plugin) -> None:
                self.registries.api_routes.append((_plugin, router))

            self._call_registration(impl, plugin, register=add_router)

    def _call_registration(self, impl: Any, plugin: str, **kwargs: Any) -> None:
        try:
            call_hookimpl(impl, **kwargs)
        except PluginError as exc:
            self.problems.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported as a start-up problem with the plugin's name
            self.problems.append(f"plugin {plugin!r} failed in {impl.function.__name__}: {describe_error(exc)}")

    def unregister(self, name: str, state: str = "disabled") -> None:
        """Take a loaded plugin out (turned off by configuration)."""
        plugin = self.manager.get_plugin(name)
        if plugin is not None:
            self.manager.unregister(plugin, name=name)
        self.manager.set_blocked(name)
        self.registries.remove_plugin(name)
        self.settings.pop(name, None)
        status = self.status.get(name)
        if status is not None:
            status.state = state

    def configure(self, sections: Mapping[str, Mapping[str, Any]]) -> None:
        """Validate every `plugins.<name>` section with its registered model; record problems with their paths."""
        for name, section in sections.items():
            where = f"plugins.{name}"
            if not isinstance(section, Mapping):
                self.config_problems.append(f"{where}: must be a mapping of settings")
                continue
            if self._section_disabled(section):
                continue
            model = self.registries.settings.get(name)
            if model is None:
                status = self.status.get(name)
                if status is not None and status.state == "failing":
                    continue  # it did not load; its status says why, and the hub runs without it
                if status is not None and status.state == "disabled":
                    continue
                if status is not None and set(section) <= {"enabled"}:
                    continue
                if status is not None:
                    self.config_problems.append(
                        f"{where}: plugin {name!r} has no settings; remove the section (or keep only enabled: ...)"
                    )
                    continue
                known = sorted(self.registries.settings.names())
                close = difflib.get_close_matches(name, known + sorted(self.status), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.config_problems.append(
                    f"{where}: unknown plugin section; {hint}plugins with settings: {', '.join(known) or 'none'}"
                )
                continue
            self._validate(name, model, section)
        for name in self.registries.settings:
            if name not in sections and name not in self.settings:
                self._validate(name, self.registries.settings[name], {})

    @staticmethod
    def _section_disabled(section: Mapping[str, Any]) -> bool:
        return section.get("enabled", True) is False

    def _validate(self, name: str, model: type[BaseModel], section: Mapping[str, Any]) -> None:
        data = {k: v for k, v in section.items() if k != "enabled"}
        if "enabled" in section and not isinstance(section["enabled"], bool):
            self.config_problems.append(f"plugins.{name}.enabled: must be true or false (got {section['enabled']!r})")
            return
        try:
            self.settings[name] = model.model_validate(data)
        except ValidationError as exc:
            self.config_problems.extend(explain_errors(exc, ("plugins", name)))

    # ------------------------------------------------------------------ state

    def names(self, state: str | None = None) -> list[str]:
        """Plugin names (in load order), optionally only those in `state`."""
        return [n for n, s in self.status.items() if state is None or s.state == state]

    def active(self) -> list[str]:
        """Plugins registered with the manager (not disabled, not failed to load)."""
        return [n for n in self.status if self.manager.get_plugin(n) is not None]

    def mark_failing(self, name: str, exc: BaseException | str) -> None:
        """Record a failure of `name`; its state becomes failing."""
        status = self.status.get(name)
        if status is None:
            return
        status.state = "failing"
        status.errors += 1
        status.last_error = exc if isinstance(exc, str) else describe_error(exc)

    def mark_ok(self, name: str) -> None:
        """`name` works again (a delivery succeeded after failures)."""
        status = self.status.get(name)
        if status is not None and status.state == "failing":
            status.state = "running"

    def raise_for_problems(self) -> None:
        """Raise PluginError (hook or registration problems) or ConfigError (settings) if there are any."""
        if self.problems:
            raise PluginError("plugins cannot be loaded:\n  " + "\n  ".join(self.problems))
        if self.config_problems:
            raise ConfigError("plugin configuration is not valid:\n  " + "\n  ".join(self.config_problems))


def disabled_names(sections: Mapping[str, Mapping[str, Any]], disabled_plugins: Iterable[str]) -> set[str]:
    """Names turned off by configuration: `disabled_plugins` and sections with `enabled: false`."""
    names = set(disabled_plugins)
    names.update(n for n, s in sections.items() if isinstance(s, Mapping) and s.get("enabled", True) is False)
    return names


def load_plugins(
    sources: Iterable[PluginSource],
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    disabled_plugins: Iterable[str] = (),
    *,
    quiet: bool = False,
) -> Plugins:
    """Load, check, register and configure plugins; problems are recorded (see `Plugins.raise_for_problems`)."""
    sections = sections or {}
    sources = list(sources)
    off = disabled_names(sections, disabled_plugins)
    plugins = Plugins()
    plugins.load(sources, off, quiet=quiet)
    plugins.collect_settings()
    # A settings section may be named differently from its plugin: turn off the owner of a disabled section.
    for name in off:
        owner = plugins.registries.settings.owner(name)
        if owner is not None and owner not in off:
            plugins.unregister(owner)
    known = set(plugins.status) | set(plugins.registries.settings)
    for name in sorted(set(disabled_plugins) - known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        plugins.config_problems.append(
            f"disabled_plugins: no plugin named {name!r} is installed; {hint}installed: {', '.join(sorted(known)) or 'none'}"
        )
    plugins.check_hooks()
    plugins.collect_registrations()
    plugins.configure(sections)
    return plugins


def plugin_table(statuses: Iterable[Mapping[str, Any]]) -> str:
    """A plain-text table of plugins (name, version, state, hooks, last error) for the command line."""
    rows = [("NAME", "VERSION", "STATE", "HOOKS", "LAST ERROR")]
    for s in statuses:
        state = s["state"]
        lag = s.get("lag")
        if lag:
            state += f" (lag {lag['batches']} batches / {lag['items']} items)"
        rows.append((s["name"], s["version"], state, ", ".join(s["hooks"]) or "-", s.get("last_error") or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + ("  " + r[4] if r[4] else "")
        for r in rows
    ).rstrip() + "\n"


def hook_names() -> list[str]:
    """Every hook of the contract, in the order `hub/hookspecs.py` declares them."""
    return [name for name, obj in vars(hookspecs).items()
            if callable(obj) and hasattr(obj, "plantbus_spec")]


def add_plugin_commands(cli: Any, plugins: Plugins | None = None) -> list[str]:
    """Call `register_commands(cli)` plugin by plugin; returns the problems (a command clash, a failing hook).

    The core's commands win: a plugin cannot replace one, nor a command another plugin added.
    """
    if plugins is None:
        plugins = load_plugins(discover(), quiet=True)
    problems: list[str] = []
    owners: dict[str, str] = {}
    for impl in plugins.hookimpls("register_commands"):
        plugin = impl.plugin_name
        if plugins.status[plugin].state == "failing":
            continue
        before = dict(cli.commands)
        try:
            call_hookimpl(impl, cli=cli)
        except Exception as exc:  # noqa: BLE001 - a plugin must not break the command line
            cli.commands.clear()
            cli.commands.update(before)
            problems.append(f"plugin {plugin!r} failed in register_commands: {describe_error(exc)}")
            continue
        for name, command in list(cli.commands.items()):
            if before.get(name) is command:
                continue
            if name in before:
                owner = f"plugin {owners[name]!r}" if name in owners else "Plantbus itself"
                problems.append(f"plugin {plugin!r} tried to add command {name!r}, which {owner} already has; "
                                "ignored — rename it in the plugin")
                cli.commands[name] = before[name]
            else:
                owners[name] = plugin
    return problems


async def fetch_hub_status(broker: Any, topic: str, timeout: float) -> dict[str, Any] | None:
    """The retained diagnostics a running hub publishes on `topic` (uns.status_topic), or None."""
    import aiomqtt

    from hub.mqtt import make_client

    client = make_client(broker, f"plantbus-cli-{id(object()):x}")
    try:
        async with asyncio.timeout(timeout):
            async with client:
                await client.subscribe(topic, qos=0)
                async for message in client.messages:
                    try:
                        return json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    except ValueError:
                        return None
    except (TimeoutError, aiomqtt.MqttError):
        return None
    return None
