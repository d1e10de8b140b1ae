"""The load generator: the offered rate holds, every DDATA carries every metric, and values really change."""

from __future__ import annotations

import asyncio

import pytest
from _edge_support import AliasBook, Observer, wait_until

from hub.mqtt import BrokerUrl
from hub.simulate import Simulator, simulate
from hub.sparkplug.payload import DataType
from hub.sparkplug.topic import MessageType as MT


async def test_simulator_offers_its_rate_with_all_metrics_changing_every_tick(broker, group_id, tmp_path):
    async with Observer(broker) as obs:
        stats = await simulate(
            BrokerUrl.parse(broker.url), group_id, 2, 3, 8, 20.0, state_dir=tmp_path, duration_s=1.5, seed=7
        )
        await wait_until(lambda: len(obs.of(MT.NDEATH)) == 2, what="both nodes' NDEATH")
    assert stats.offered_rate == 2 * 3 * 8 * 20
    assert stats.achieved_rate == pytest.approx(stats.offered_rate, rel=0.15)
    assert stats.metric_updates == stats.data_messages * 8 and stats.stored == 0
    for node in ("sim-node-0", "sim-node-1"):
        stream = obs.sparkplug_stream(group_id, node)
        assert [m.type for m in stream[:4]] == [MT.NBIRTH, MT.DBIRTH, MT.DBIRTH, MT.DBIRTH]
        book = AliasBook()
        for birth in stream[1:4]:
            book.learn(birth)
        dbirth = stream[1]
        kinds = {m.datatype for m in dbirth.payload.metrics}
        assert kinds == {DataType.Double, DataType.Int64, DataType.Boolean, DataType.String}
        per_device: dict[str, list[dict]] = {}
        for m in stream:
            if m.type is MT.DDATA:
                assert len(m.payload.metrics) == 8
                assert 0 <= m.wall_ms - m.payload.timestamp < 1000, "the payload timestamp is the publish time"
                per_device.setdefault(m.topic.device_id, []).append(book.values(m))
        assert set(per_device) == {"dev-0", "dev-1", "dev-2"}
        for ticks in per_device.values():
            assert len(ticks) >= 20
            for before, after in zip(ticks, ticks[1:]):
                assert after["good_count_01"] > before["good_count_01"]
                assert after["temperature_00"] != before["temperature_00"]
                assert after["pressure_06"] != before["pressure_06"]


async def test_simulator_without_devices_publishes_ndata_and_stops_with_ndeath_when_cancelled(
    broker, group_id, tmp_path
):
    sim = Simulator(BrokerUrl.parse(broker.url), group_id, 1, 0, 3, 50.0, state_dir=tmp_path)
    async with Observer(broker) as obs:
        task = asyncio.create_task(sim.run())  # no duration: until cancelled
        await obs.wait_type(MT.NDATA)
        await wait_until(lambda: len(obs.of(MT.NDATA)) >= 5, what="a few NDATA")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await obs.wait_type(MT.NDEATH)
    assert sim.stats.metric_updates >= 15 and sim.stats.elapsed_s > 0
