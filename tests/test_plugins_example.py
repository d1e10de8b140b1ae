"""The reference plugin of docs/plugins/plantbus-example, installed the way pip would, run against a real broker."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

from hub.app import Hub
from hub.mqtt import BrokerUrl
from hub.samples import Sample
from hub.sparkplug.payload import DataType, Metric
from plugin_support import config, fake_distribution
from sparkplug_fakes import FakeEdge, Watcher, running, wait_until

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "plugins" / "plantbus-example"


def install_example(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The example's own pyproject names its entry points; write the dist-info pip would and put it on sys.path."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = fake_distribution(tmp_path / "site", project["name"], project["version"], {},
                             project["entry-points"]["plantbus"])
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE))


async def test_the_reference_plugin_publishes_sample_counts_per_subtree(broker, group_id, tmp_path, monkeypatch):
    install_example(tmp_path, monkeypatch)
    cfg = config(
        tmp_path, broker.url,
        plugins={"example": {"depth": 3, "interval_s": 0.1}},
        uns={"mappings": [{"group": "Plantbus", "edge_node": "analytics", "path": "zdorovo/plant1/analytics/{device}"}]},
    )  # fmt: skip
    hub = Hub(cfg)  # discovered through its entry point, like any installed plugin
    status = hub.plugins.status["example"]
    assert (status.version, status.origin, status.state) == ("0.1.0", "distribution plantbus-example", "loaded")
    assert status.hooks == ["hub_startup", "on_samples", "register_settings"]

    seen: list[Sample] = []
    hub.host.add_listener(seen.extend)  # what the host emitted, to check the counts against
    url = BrokerUrl.parse(broker.url)
    topics = {n: f"zdorovo/plant1/analytics/example/samples/uns/{group_id}/{n}" for n in ("oven", "mixer")}
    watcher = await Watcher(url, "w").start("zdorovo/plant1/analytics/example/#")
    ovens, mixer = FakeEdge(url, group_id, "oven"), FakeEdge(url, group_id, "mixer")
    async with running(hub):
        await hub.host.wait_online()
        for edge in (ovens, mixer):
            await edge.connect()
            await edge.nbirth([Metric("temperature", DataType.Double, 180.0, alias=1)])
        for i in range(30):
            await ovens.ndata([Metric(None, DataType.Double, 180.0 + i, alias=1)])
            if i % 3 == 0:
                await mixer.ndata([Metric(None, DataType.Double, 20.0 + i, alias=1)])

        def expected() -> Counter[str]:
            return Counter("/".join(s.path.split("/")[:3]) for s in seen if not hub.derived.owns(s))

        await wait_until(lambda: (hub.host.current(f"{group_id}/oven/temperature").value == 209.0
                                  and hub.host.current(f"{group_id}/mixer/temperature").value == 47.0),
                         what="the host to get the last values")
        for node, topic in topics.items():
            want = expected()[f"uns/{group_id}/{node}"]
            message = await watcher.wait_for(topic, lambda m, want=want: m.json()["value"] == want, timeout=5)
            assert message.json()["datatype"] == "UInt64"
            late = await Watcher(url, f"late-{node}").start(topic)  # retained: a newcomer gets it at once
            assert (await late.wait_for(topic)).retain and late.on(topic)[0].json()["value"] == want
            await late.stop()
    await watcher.stop()
    for edge in (ovens, mixer):
        await edge.close()


def test_the_reference_plugins_own_tests_pass():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=EXAMPLE,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
