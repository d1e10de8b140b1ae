"""`plantbus plugins new NAME`: the files of a new, installable plugin package.

The package it writes (`plantbus-<name>/`) is a working plugin: a pyproject with the `plantbus` entry
point, a module with a settings model and hook implementations, a README and a test. `pip install -e` it
and `plantbus plugins list` shows it.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from hub.errors import PlantbusError

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "plantbus-$name"
version = "0.1.0"
description = "A Plantbus plugin: $ident"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["plantbus"]

[project.optional-dependencies]
test = ["pytest"]

# The hub finds the plugin here; `$ident` is its name (the `plugins.$ident` section of the hub's YAML).
[project.entry-points.plantbus]
$ident = "plantbus_$ident:Plugin"

[tool.setuptools]
py-modules = ["plantbus_$ident"]

[tool.pytest.ini_options]
pythonpath = ["."]
"""

MODULE = '''\
"""plantbus-$name: counts the samples under a UNS path prefix (a starting point: change it to what you need).

The hub creates one `Plugin` per hub when the plugin loads; see docs/plugins.md of Plantbus for every hook.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hub.plugins import hookimpl

log = logging.getLogger(__name__)

NAME = "$ident"


class Settings(BaseModel):
    """The `plugins.$ident` section of the hub's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path_prefix: str = Field("", description="count only samples whose UNS path starts with this")


class Plugin:
    """The plugin; its state lives on the instance, so two hubs in one process do not share it."""

    def __init__(self) -> None:
        self.samples = 0

    @hookimpl
    def register_settings(self, register: Any) -> None:
        register(NAME, Settings)

    @hookimpl
    async def hub_startup(self, hub: Any) -> None:
        settings = hub.plugin_settings(NAME)
        log.info("%s: counting samples under %r", NAME, settings.path_prefix)

    @hookimpl
    async def on_samples(self, samples: list[Any], hub: Any) -> None:
        prefix = hub.plugin_settings(NAME).path_prefix
        self.samples += sum(1 for s in samples if s.path.startswith(prefix))

    @hookimpl
    async def hub_shutdown(self, hub: Any) -> None:
        log.info("%s: %d samples seen", NAME, self.samples)
'''

TEST = '''\
"""Tests of plantbus-$name: no broker needed; the hub is built with exactly this plugin."""

from __future__ import annotations

import asyncio

from hub.app import Hub
from hub.config import parse_config
from hub.samples import Quality, Sample
from hub.sparkplug.payload import DataType

import plantbus_$ident


def sample(path: str) -> Sample:
    return Sample(path, 1.0, 0, Quality.GOOD, DataType.Double, "g", "n", None, path.rsplit("/", 1)[-1])


def test_counts_only_samples_under_the_prefix(tmp_path):
    config = parse_config({"state_dir": str(tmp_path), "plugins": {"$ident": {"path_prefix": "uns/line1/"}}})
    hub = Hub(config, plugins=[("$ident", plantbus_$ident.Plugin)])
    plugin = hub.plugin_manager.get_plugin("$ident")
    asyncio.run(plugin.on_samples([sample("uns/line1/speed"), sample("uns/line2/speed")], hub))
    assert plugin.samples == 1
'''

README = """\
# plantbus-$name

A Plantbus plugin. It counts the samples whose UNS path starts with a prefix;
change `plantbus_$ident.py` to do what you need.

## Install

    pip install -e .
    plantbus plugins list        # shows `$ident`, its version and hooks

## Configure

In the hub's YAML file:

```yaml
plugins:
  $ident:
    path_prefix: uns/line1/
```

`enabled: false` in that section turns the plugin off.

## Test

    pip install -e '.[test]'
    pytest
"""


def plugin_identifier(name: str) -> str:
    """The Python and entry-point name for a plugin name (`-` becomes `_`)."""
    return name.replace("-", "_")


def create_plugin(name: str, directory: Path) -> Path:
    """Write the package `plantbus-<name>/` under `directory`; returns its folder."""
    if not _NAME.match(name):
        raise PlantbusError(
            f"plugin name {name!r}: use lower-case letters, digits, '-' and '_', starting with a letter "
            "(e.g. line-counts)"
        )
    ident = plugin_identifier(name)
    root = Path(directory) / f"plantbus-{name}"
    if root.exists():
        raise PlantbusError(f"{root} already exists; choose another name or --dir")
    values = {"name": name, "ident": ident}
    files = {
        root / "pyproject.toml": PYPROJECT,
        root / f"plantbus_{ident}.py": MODULE,
        root / "README.md": README,
        root / "tests" / f"test_plantbus_{ident}.py": TEST,
    }
    try:
        for path, template in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(template).substitute(values), encoding="utf-8")
    except OSError as exc:
        raise PlantbusError(f"cannot write the plugin package to {root}: {exc.strerror or exc}") from None
    return root
