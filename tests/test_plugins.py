"""The plugin manager: one discovery path, hook checks, settings, registries, clashes, and the contract's docs."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import pluggy
import pytest
from pydantic import BaseModel, ConfigDict, Field

from hub.app import Hub
from hub.errors import ConfigError
from hub.plugins import (
    BUILT_IN,
    DEFAULT_PLUGINS,
    PluginError,
    default_sources,
    entry_point_sources,
    given_sources,
    hook_names,
    hookimpl,
    load_plugins,
)
from plugin_support import config, fake_distribution, unique

ROOT = Path(__file__).resolve().parent.parent

COUNTER_PLUGIN = """
    from pydantic import BaseModel, ConfigDict, Field
    from hub.plugins import hookimpl

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        depth: int = Field(3, ge=1)

    class Plugin:
        def __init__(self):
            self.seen = 0

        @hookimpl
        def register_settings(self, register):
            register("counter", Settings)

        @hookimpl
        def on_samples(self, samples):
            self.seen += len(samples)
"""


def install_counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, extra_modules: dict[str, str] | None = None,
                    extra_entry_points: dict[str, str] | None = None) -> str:
    module = unique("counter_plugin")
    root = fake_distribution(
        tmp_path / "site", "plantbus-counter", "1.2.3",
        {module: COUNTER_PLUGIN, **(extra_modules or {})},
        {"counter": f"{module}:Plugin", **(extra_entry_points or {})},
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(root))
    return module


# ---------------------------------------------------------------------------- discovery


def test_installed_and_builtin_plugins_load_through_the_same_entry_point_path(tmp_path, monkeypatch):
    module = install_counter(tmp_path, monkeypatch)
    installed = [s for s in entry_point_sources() if s.name == "counter"]
    builtins = default_sources()
    assert [s.name for s in builtins] == [
        m.partition("=")[0] if "=" in m else m.rpartition(".")[2] for m in DEFAULT_PLUGINS
    ]
    assert "modbus" in [s.name for s in builtins]  # "modbus=connectors.modbus.plugin" names it explicitly
    # Both are entry points of the `plantbus` group; Plugins.load only ever calls EntryPoint.load().
    for source in installed + builtins:
        assert isinstance(source.entry_point, importlib.metadata.EntryPoint)
        assert source.entry_point.group == "plantbus"
    assert installed[0].entry_point.value == f"{module}:Plugin"

    hub = Hub(config(tmp_path))  # no plugins= : the hub discovers, as `plantbus run` does
    status = hub.plugins.status
    assert status["counter"].version == "1.2.3" and status["counter"].origin == "distribution plantbus-counter"
    assert status["uns_events"].version == BUILT_IN and status["uns_events"].module == "plugins.uns_events"
    assert status["counter"].hooks == ["on_samples", "register_settings"]
    assert {s.state for s in status.values()} == {"loaded"}
    assert hub.plugin_settings("counter").depth == 3

    # A class entry point is instantiated per hub: two hubs in one process do not share plugin state.
    other = Hub(config(tmp_path))
    assert hub.plugin_manager.get_plugin("counter") is not other.plugin_manager.get_plugin("counter")
    assert type(hub.plugin_manager.get_plugin("counter")).__name__ == "Plugin"


def test_a_hub_built_with_given_plugins_has_exactly_those(tmp_path, monkeypatch):
    install_counter(tmp_path, monkeypatch)

    class Only:
        @hookimpl
        def on_events(self, events):
            pass

    hub = Hub(config(tmp_path), plugins=[("only", Only())])
    assert list(hub.plugins.status) == ["only"]
    assert hub.plugins.status["only"].hooks == ["on_events"]


def test_a_plugin_that_cannot_be_imported_is_marked_failing_and_the_hub_still_builds(tmp_path, monkeypatch):
    broken = unique("broken_plugin")
    install_counter(tmp_path, monkeypatch, extra_modules={broken: "import no_such_dependency_xyz\n"},
                    extra_entry_points={"broken": broken})
    hub = Hub(config(tmp_path))
    status = hub.plugins.status["broken"]
    assert status.state == "failing"
    assert "could not be loaded: ModuleNotFoundError" in status.last_error and "no_such_dependency_xyz" in status.last_error
    assert hub.plugins.status["counter"].state == "loaded"


# ---------------------------------------------------------------------------- hook checks


def test_a_misspelt_hook_stops_the_hub_naming_the_plugin_and_the_likely_hook(tmp_path):
    class Typo:
        @hookimpl
        def on_sample(self, samples):  # on_samples, misspelt
            pass

    with pytest.raises(PluginError) as info:
        Hub(config(tmp_path), plugins=[("typo", Typo())])
    message = str(info.value)
    assert "plugin 'typo' implements unknown hook 'on_sample'" in message
    assert "did you mean 'on_samples'?" in message


def test_a_hookimpl_asking_for_an_argument_the_hook_does_not_have_is_refused(tmp_path):
    class Wrong:
        @hookimpl
        def on_samples(self, samples, broker):
            pass

    with pytest.raises(PluginError, match=r"plugin 'wrong'.*broker"):
        Hub(config(tmp_path), plugins=[("wrong", Wrong())])


def test_pluggy_check_pending_agrees_with_the_hubs_own_check(tmp_path):
    class Typo:
        @hookimpl
        def hub_statup(self, hub):
            pass

    loaded = load_plugins(given_sources([("t", Typo())]))
    assert loaded.problems == ["plugin 't' implements unknown hook 'hub_statup' — did you mean 'hub_startup'? "
                               "(hooks: docs/plugins.md)"]
    with pytest.raises(pluggy.PluginValidationError, match="hub_statup"):
        loaded.manager.check_pending()


# ---------------------------------------------------------------------------- settings


class CounterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = Field(3, ge=1)
    line: str


class Counter:
    @hookimpl
    def register_settings(self, register):
        register("counter", CounterSettings)


def test_settings_are_validated_by_the_plugins_model_and_errors_name_their_path(tmp_path):
    with pytest.raises(ConfigError) as info:
        Hub(config(tmp_path, plugins={"counter": {"depth": 0, "colour": "red"}}), plugins=[("counter", Counter())])
    message = str(info.value)
    assert "plugins.counter.depth: Input should be greater than or equal to 1 (got 0)" in message
    assert "plugins.counter.colour: unknown key; remove it or check its spelling" in message
    assert "plugins.counter.line: required; add it" in message

    hub = Hub(config(tmp_path, plugins={"counter": {"line": "Line1_Oven"}}), plugins=[("counter", Counter())])
    settings = hub.plugin_settings("counter")
    assert isinstance(settings, CounterSettings) and settings.depth == 3 and settings.line == "Line1_Oven"


def test_a_section_for_no_plugin_is_an_error_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError) as info:
        Hub(config(tmp_path, plugins={"countr": {}, "counter": {"line": "x"}}), plugins=[("counter", Counter())])
    assert "plugins.countr: unknown plugin section; did you mean 'counter'? plugins with settings: counter" in str(info.value)


def test_enabled_false_and_disabled_plugins_turn_plugins_off(tmp_path, monkeypatch):
    # A module that raises on import proves that a plugin disabled by name is never imported.
    exploding = unique("exploding_plugin")
    install_counter(tmp_path, monkeypatch, extra_modules={exploding: "raise RuntimeError('imported!')\n"},
                    extra_entry_points={"exploding": exploding})
    hub = Hub(config(tmp_path, disabled_plugins=["exploding"],
                     # the section of a disabled plugin is not validated: `depth: 0` would be refused
                     plugins={"counter": {"enabled": False, "depth": 0}}))
    assert hub.plugins.status["exploding"].state == "disabled"
    assert hub.plugins.status["counter"].state == "disabled"
    assert hub.plugin_manager.get_plugin("counter") is None
    assert "counter" not in hub.plugins.settings

    with pytest.raises(ConfigError, match=r"disabled_plugins: no plugin named 'counterr' is installed; did you mean 'counter'"):
        Hub(config(tmp_path, disabled_plugins=["counterr"]))
    with pytest.raises(ConfigError, match=r"plugins.counter.enabled: must be true or false"):
        Hub(config(tmp_path, plugins={"counter": {"enabled": "no"}}))


# ---------------------------------------------------------------------------- registries


def test_registrations_are_collected_per_plugin_and_clashes_name_both_plugins(tmp_path):
    def sql_factory(settings, state_dir):
        return "sql"

    class Sql:
        @hookimpl
        def register_historians(self, register):
            register("sql", sql_factory)

        @hookimpl
        def register_notifiers(self, register):
            register("telegram", object)

        @hookimpl
        def register_api_routes(self, register):
            register("router-object")

    class Shop:
        @hookimpl
        def register_connectors(self, register):
            register("modbus", object)

        @hookimpl
        def register_analytics(self, register):
            register("oee", object)

        @hookimpl
        def register_console_pages(self, register):
            register("/oee", object)

    hub = Hub(config(tmp_path), plugins=[("sqlhist", Sql()), ("shop", Shop())])
    reg = hub.registries
    assert reg.historians["sql"] is sql_factory and reg.historians.owner("sql") == "sqlhist"
    assert reg.notifiers.names() == ["telegram"] and reg.connectors.names() == ["modbus"]
    assert reg.analytics.owner("oee") == "shop" and reg.console_pages.names() == ["/oee"]
    assert reg.api_routes == [("sqlhist", "router-object")]
    with pytest.raises(KeyError, match="no historian type 'influx' is registered"):
        reg.historians["influx"]

    class AlsoSql:
        @hookimpl
        def register_historians(self, register):
            register("sql", object)

    with pytest.raises(PluginError) as info:
        Hub(config(tmp_path), plugins=[("sqlhist", Sql()), ("rival", AlsoSql())])
    assert "historian type 'sql' is registered by both plugin" in str(info.value)
    assert "'sqlhist'" in str(info.value) and "'rival'" in str(info.value)


def test_two_plugins_claiming_one_settings_name_are_refused(tmp_path):
    class A:
        @hookimpl
        def register_settings(self, register):
            register("shared", CounterSettings)

    with pytest.raises(PluginError, match=r"settings model 'shared' is registered by both plugin '(a|b)' and plugin '(a|b)'"):
        Hub(config(tmp_path), plugins=[("a", A()), ("b", A())])


# ---------------------------------------------------------------------------- the contract's documentation


def hookspec_names_from_source() -> list[str]:
    """Every function decorated with @hookspec in hub/hookspecs.py, read from the source (as Datasette does)."""
    tree = ast.parse((ROOT / "hub" / "hookspecs.py").read_text())
    return [
        node.name for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and any(isinstance(d, ast.Name) and d.id == "hookspec" for d in node.decorator_list)
    ]  # fmt: skip


def test_docs_plugins_md_documents_every_hook():
    names = hookspec_names_from_source()
    assert len(names) >= 12 and names == hook_names()
    docs = (ROOT / "docs" / "plugins.md").read_text()
    headings = set(re.findall(r"^### `?(\w+)", docs, flags=re.MULTILINE))
    missing = [n for n in names if n not in headings]
    assert not missing, f"docs/plugins.md has no '### {missing[0]}' section; document every hook of hub/hookspecs.py"


def test_the_configuration_example_in_docs_plugins_md_is_valid():
    import yaml

    from hub.config import BusConfig, DerivedConfig
    from plugins import uns_events

    docs = (ROOT / "docs" / "plugins.md").read_text()
    section = docs[docs.index("## Configuration"):]
    example = yaml.safe_load(section[section.index("```yaml") + 7 : section.index("```", section.index("```yaml") + 7)])
    BusConfig.model_validate(example["bus"])
    DerivedConfig.model_validate(example["derived"])
    uns_events.Settings.model_validate(example["plugins"]["uns_events"])
    assert set(BusConfig.model_fields) == set(example["bus"])  # every bus setting is shown
