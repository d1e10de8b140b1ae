"""Derived values back onto the broker: a plugin's result becomes a Sparkplug tag, a UNS topic and a sample."""

from __future__ import annotations

import pytest

from hub.app import Hub
from hub.derived import DerivedValue, infer_datatype
from hub.errors import PayloadError, PlantbusError
from hub.mqtt import BrokerUrl
from hub.plugins import hookimpl
from hub.samples import Quality, Sample
from hub.sparkplug.payload import DataType, Metric, decode_payload
from plugin_support import Recorder, config
from sparkplug_fakes import FakeEdge, Watcher, running, wait_until


class Doubler:
    """An analytics plugin: publishes twice every value of metric `speed` as derived metric `doubled`."""

    @hookimpl
    async def on_samples(self, samples: list[Sample], hub: Hub) -> None:
        for sample in samples:
            if sample.metric == "speed" and sample.quality is Quality.GOOD:
                await hub.publish_derived("doubler", {"doubled": sample.value * 2})


def births(watcher: Watcher, topic: str) -> list[dict[str, DataType]]:
    return [{m.name: m.datatype for m in decode_payload(r.payload).metrics} for r in watcher.on(topic)]


@pytest.mark.spec("tck-id-topics-dbirth-metric-reqs", "tck-id-operational-behavior-data-publish-dbirth")
async def test_a_derived_value_reaches_the_uns_retained_sparkplug_and_another_plugins_on_samples(
    broker, group_id, tmp_path
):
    url = BrokerUrl.parse(broker.url)
    sink = Recorder()
    # The hub hosts only `group_id`, yet its own derived-values group is hosted too.
    hub = Hub(config(tmp_path, broker.url, host={"groups": [group_id]}), plugins=[("doubler", Doubler()), ("sink", sink)])
    edge = FakeEdge(url, group_id, "n1")
    scada = await Watcher(url, "scada").start("spBv1.0/Plantbus/#")
    path = "uns/Plantbus/analytics/doubler/doubled"
    async with running(hub):
        await hub.host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("speed", DataType.Double, 10.5, alias=1)])
        sample = await wait_until(lambda: next((s for s in sink.samples if s.path == path), None),
                                  what="the derived value at the sink plugin")
        assert (sample.value, sample.datatype, sample.quality) == (21.0, DataType.Double, Quality.GOOD)
        assert (sample.group, sample.edge_node, sample.device, sample.metric) == ("Plantbus", "analytics", "doubler",
                                                                                  "doubled")
        assert hub.derived.owns(sample)

        late = await Watcher(url, "late").start(path)  # subscribes after the fact: gets the retained value
        retained = await late.wait_for(path)
        assert retained.retain and retained.json() == {"value": 21.0, "timestamp": sample.timestamp,
                                                       "quality": "GOOD", "datatype": "Double"}
        await late.stop()
        assert births(scada, "spBv1.0/Plantbus/DBIRTH/analytics/doubler")[-1] == {"doubled": DataType.Double}

        await edge.ndata([Metric(None, DataType.Double, 11.0, alias=1)])
        await wait_until(lambda: [s.value for s in sink.samples if s.path == path][-1:] == [22.0],
                         what="the second derived value")

        # A new metric: declared on first use with the datatype given, announced by a new DBIRTH.
        await hub.publish_derived("doubler", [DerivedValue("parts", 7, "UInt32")])
        await wait_until(lambda: any(s.metric == "parts" for s in sink.samples), what="the new metric")
        assert births(scada, "spBv1.0/Plantbus/DBIRTH/analytics/doubler")[-1] == {
            "doubled": DataType.Double, "parts": DataType.UInt32}
        assert hub.host.current(path).value == 22.0
        diag = hub.diagnostics()["derived"]
        assert diag["online"] and diag["devices"] == ["doubler"] and diag["published"] == 3
        # Every metric a DDATA reports was described by a DBIRTH before it (metrics declared on first use).
        described: set[int] = set()
        assert scada.on("spBv1.0/Plantbus/DDATA/analytics/doubler")
        for message in scada.messages:
            if message.topic == "spBv1.0/Plantbus/DBIRTH/analytics/doubler":
                described = {m.alias for m in decode_payload(message.payload).metrics}
            elif message.topic == "spBv1.0/Plantbus/DDATA/analytics/doubler":
                assert {m.alias for m in decode_payload(message.payload).metrics} <= described
    # The hub's shutdown takes its derived-values node offline first: SCADA sees the death, the UNS STALE.
    assert scada.on("spBv1.0/Plantbus/NDEATH/analytics")
    assert [s.quality for s in sink.samples if s.path == path][-1] is Quality.STALE
    await scada.stop()
    await edge.close()


async def test_publish_derived_refuses_what_it_cannot_publish(broker, tmp_path):
    hub = Hub(config(tmp_path, broker.url), plugins=[("doubler", Doubler())])
    with pytest.raises(PlantbusError, match="only while the hub runs"):
        await hub.publish_derived("doubler", {"x": 1.0})
    async with running(hub):
        await hub.host.wait_online()
        with pytest.raises(PlantbusError, match="'dubler' is not a loaded plugin"):
            await hub.publish_derived("dubler", {"x": 1.0})
        with pytest.raises(PlantbusError, match=r"cannot infer a Sparkplug datatype for dict.*datatypes="):
            await hub.publish_derived("doubler", {"x": {"a": 1}})
        assert hub.derived.node is None  # nothing was declared or started for the refused values
        await hub.publish_derived("doubler", {"x": 1.0})
        with pytest.raises(PayloadError, match="'x'"):
            await hub.publish_derived("doubler", {"x": "fast"})  # x is a Double now


def test_datatypes_are_inferred_from_python_values():
    import datetime

    assert [infer_datatype(v) for v in (True, 3, 2.5, "A", b"\x00", datetime.datetime.now(datetime.UTC))] == [
        DataType.Boolean, DataType.Int64, DataType.Double, DataType.String, DataType.Bytes, DataType.DateTime]
