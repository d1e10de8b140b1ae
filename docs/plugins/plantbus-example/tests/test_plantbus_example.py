"""Tests of the reference plugin that need no broker: counting and settings. (Plantbus's own test suite
runs it end to end against a real Mosquitto: tests/test_plugins_example.py.)"""

from __future__ import annotations

import pytest

from hub.app import Hub
from hub.config import parse_config
from hub.errors import ConfigError
from hub.samples import Quality, Sample
from hub.sparkplug.payload import DataType

import plantbus_example


def sample(path: str, group: str = "Bakery") -> Sample:
    return Sample(path, 1.0, 0, Quality.GOOD, DataType.Double, group, "n", None, path.rsplit("/", 1)[-1])


def make_hub(tmp_path, **settings) -> Hub:
    config = parse_config({"state_dir": str(tmp_path), "plugins": {"example": settings}})
    return Hub(config, plugins=[("example", plantbus_example.SampleCounts)])


def test_counts_per_subtree_of_the_configured_depth(tmp_path):
    hub = make_hub(tmp_path, depth=2)
    plugin = hub.plugin_manager.get_plugin("example")
    plugin.on_samples([sample("uns/Bakery/Oven/T"), sample("uns/Bakery/Mixer/S"), sample("uns/Dairy/Filler/C")], hub)
    assert plugin.counts == {"uns/Bakery": 2, "uns/Dairy": 1}


def test_own_derived_values_are_not_counted(tmp_path):
    hub = make_hub(tmp_path)
    plugin = hub.plugin_manager.get_plugin("example")
    own = Sample("uns/Plantbus/analytics/example/samples/x", 3, 0, Quality.GOOD, DataType.UInt64, "Plantbus",
                 "analytics", "example", "samples/x")
    plugin.on_samples([own], hub)
    assert not plugin.counts


def test_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"plugins\.example\.depth"):
        make_hub(tmp_path, depth=0)
