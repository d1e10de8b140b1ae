"""`plantbus plugins list|new` and plugin-contributed commands, run as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from hub.app import Hub
from hub.mqtt import BrokerUrl
from plugin_support import Gate, config, fake_distribution, samples
from sparkplug_fakes import Watcher, running

ROOT = Path(__file__).resolve().parent.parent

PLUGINS = {
    "cli_counter": """
        from hub.plugins import hookimpl

        @hookimpl
        def on_samples(samples):
            pass
    """,
    "cli_broken": "import no_such_dependency_xyz\n",
    "cli_off": "raise RuntimeError('a disabled plugin is never imported')\n",
    "cli_commands": """
        import click
        from hub.plugins import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                '''Say hello from a plugin.'''
                click.echo("hello from plantbus-tools")

            @cli.command()
            def run():
                '''A plugin trying to take over `plantbus run`.'''
                click.echo("hijacked")
    """,
}


def site(tmp_path: Path, modules: dict[str, str], entry_points: dict[str, str]) -> dict[str, str]:
    root = fake_distribution(tmp_path / "site", "plantbus-tools", "2.0.1", modules, entry_points)
    return {**os.environ, "PYTHONPATH": str(root)}


def plantbus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=ROOT)


def write_config(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "plantbus.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_plugins_list_shows_name_version_hooks_and_state(tmp_path):
    env = site(tmp_path, {k: PLUGINS[k] for k in ("cli_counter", "cli_broken", "cli_off")},
               {"counter": "cli_counter", "broken": "cli_broken", "off": "cli_off"})
    cfg = write_config(tmp_path, {"disabled_plugins": ["off"], "state_dir": str(tmp_path / "state")})
    table = plantbus("plugins", "list", "-c", cfg, env=env)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert table.stdout.splitlines()[0].split() == ["NAME", "VERSION", "STATE", "HOOKS", "LAST", "ERROR"]
    assert lines["uns_events"].split()[:3] == ["uns_events", "built-in", "loaded"]
    assert lines["counter"].split() == ["counter", "2.0.1", "loaded", "on_samples"]
    assert lines["off"].split()[:3] == ["off", "2.0.1", "disabled"]
    assert lines["broken"].split()[:3] == ["broken", "2.0.1", "failing"]
    assert "could not be loaded: ModuleNotFoundError: No module named 'no_such_dependency_xyz'" in lines["broken"]

    rows = {r["name"]: r for r in json.loads(plantbus("plugins", "list", "-c", cfg, "--json", env=env).stdout)}
    assert rows["counter"]["hooks"] == ["on_samples"] and rows["counter"]["origin"] == "distribution plantbus-tools"
    assert rows["uns_events"]["hooks"] == ["on_events", "register_settings"]


def test_plugins_list_exits_2_when_the_hub_would_refuse_to_start(tmp_path):
    env = site(tmp_path, {"cli_typo": "from hub.plugins import hookimpl\n\n@hookimpl\ndef on_sample(samples):\n    pass\n"},
               {"typo": "cli_typo"})
    result = plantbus("plugins", "list", env=env)
    assert result.returncode == 2
    assert "problem: plugin 'typo' implements unknown hook 'on_sample' — did you mean 'on_samples'?" in result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("typo")][0].split()[2] == "failing"


async def test_plugins_list_live_shows_the_running_hubs_state_and_lag(broker, tmp_path):
    class BadStart:
        from hub.plugins import hookimpl

        @hookimpl
        def hub_startup(self, hub):
            raise ConnectionError("licence server unreachable")

    slow = Gate()
    hub = Hub(config(tmp_path, broker.url, uns={"status_topic": "plantbus/status/live"}),
              plugins=[("slow", slow), ("badstart", BadStart())])
    cfg = write_config(tmp_path, {"uns": {"status_topic": "plantbus/status/live"}})
    async with running(hub):
        await hub.host.wait_online()
        hub.bus.publish_samples(samples(3))
        hub.bus.publish_samples(samples(4))
        await slow.entered.wait()
        status = await Watcher(BrokerUrl.parse(broker.url), "status").start("plantbus/status/live")
        await status.wait_for("plantbus/status/live", lambda m: m.json()["plugins"]["slow"]["lag"]["items"] == 7)
        await status.stop()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub.cli", "plugins", "list", "--live", "--json", "-c", cfg, "--broker", broker.url,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        slow.open.set()
    assert proc.returncode == 0, err.decode()
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["slow"]["state"] == "running" and rows["slow"]["lag"] == {"batches": 2, "items": 7}
    assert rows["slow"]["bus"]["on_samples"]["lag"]["memory_items"] == 7
    assert rows["badstart"]["state"] == "failing"
    assert rows["badstart"]["last_error"] == "hub_startup failed: ConnectionError: licence server unreachable"
    assert rows["uns_events"]["state"] == "loaded"  # installed here, not in that hub: the load-time view


def test_plugins_add_commands_and_the_core_keeps_its_own(tmp_path):
    env = site(tmp_path, {"cli_commands": PLUGINS["cli_commands"]}, {"tools": "cli_commands"})
    hello = plantbus("hello", env=env)
    assert hello.returncode == 0 and hello.stdout == "hello from plantbus-tools\n"
    assert "plugin 'tools' tried to add command 'run', which Plantbus itself already has; ignored" in hello.stderr
    run_help = plantbus("run", "--help", env=env)
    assert "Run the hub" in run_help.stdout and "hijacked" not in run_help.stdout


def test_plugins_new_scaffolds_a_package_that_loads_as_a_plugin(tmp_path, monkeypatch):
    created = plantbus("plugins", "new", "line-counts", "--dir", str(tmp_path))
    assert created.returncode == 0, created.stderr
    package = tmp_path / "plantbus-line-counts"
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()) == [
        "README.md", "plantbus_line_counts.py", "pyproject.toml", "tests/test_plantbus_line_counts.py"]

    # Load it exactly as an installed distribution would be: its own pyproject's entry point, discovered.
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["plantbus"] == {"line_counts": "plantbus_line_counts:Plugin"}
    monkeypatch.syspath_prepend(str(fake_distribution(tmp_path / "site", project["name"], project["version"], {},
                                                      project["entry-points"]["plantbus"])))
    monkeypatch.syspath_prepend(str(package))
    hub = Hub(config(tmp_path, plugins={"line_counts": {"path_prefix": "uns/line1/"}}))
    status = hub.plugins.status["line_counts"]
    assert (status.version, status.state) == ("0.1.0", "loaded")
    assert status.hooks == ["hub_shutdown", "hub_startup", "on_samples", "register_settings"]
    assert hub.plugin_settings("line_counts").path_prefix == "uns/line1/"

    generated = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package,
                               capture_output=True, text=True, timeout=60)
    assert generated.returncode == 0 and "1 passed" in generated.stdout, generated.stdout + generated.stderr

    again = plantbus("plugins", "new", "line-counts", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = plantbus("plugins", "new", "Line Counts", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "use lower-case letters" in bad.stderr


def test_config_check_validates_plugin_sections_with_the_installed_plugins(tmp_path):
    bad = write_config(tmp_path, {"plugins": {"uns_events": {"qos": 2, "colour": "red"}, "nosuch": {}}})
    result = plantbus("config", "check", bad)
    assert result.returncode == 2
    for expected in ("plugins.uns_events.qos: Input should be less than or equal to 1 (got 2)",
                     "plugins.uns_events.colour: unknown key; remove it or check its spelling",
                     "plugins.nosuch: unknown plugin section"):
        assert expected in result.stderr, result.stderr
