"""The in-process bus: one queue and task per plugin hook, spill to disk, retries, dead letters, restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import time
from collections.abc import AsyncIterator

from hub.app import Hub
from hub.bus import Bus, decode_events, decode_samples, encode_events, encode_samples
from hub.config import BusConfig
from hub.events import Event, Severity
from hub.mqtt import BrokerUrl
from hub.plugins import hookimpl
from hub.samples import Quality, Sample
from hub.sparkplug.payload import DataSet, DataType, Metric, Template, TemplateParameter
from plugin_support import Gate, Recorder, config, samples
from sparkplug_fakes import FakeEdge, Watcher, running, wait_until


@contextlib.asynccontextmanager
async def started(bus: Bus, drain_s: float = 5.0) -> AsyncIterator[Bus]:
    """Run the bus's consumers under a TaskGroup, as the hub does; close (drain) on exit."""
    async with asyncio.TaskGroup() as tg:
        await bus.start(tg.create_task)
        try:
            yield bus
        finally:
            await bus.close(drain_s)


def count_path(group: str) -> str:
    return f"uns/{group}/n1/count"


async def birth_counter(edge: FakeEdge) -> None:
    await edge.connect()
    await edge.nbirth([Metric("count", DataType.Int64, -1, alias=1)])


async def send_counts(edge: FakeEdge, values: range) -> None:
    for i in values:
        await edge.ndata([Metric(None, DataType.Int64, i, alias=1)])


# ---------------------------------------------------------------------------- codecs


def test_the_overflow_codec_keeps_every_sample_exactly():
    ds = DataSet(["a", "b"], [DataType.Int32, DataType.String], [[1, "x"], [None, "y"]])
    tpl = Template(metrics=[Metric("m", DataType.Float, 1.5)], parameters=[TemplateParameter("p", DataType.Int8, -3)],
                   template_ref="Motor")
    batch = [
        Sample("uns/a/b/c/speed", 1.25, 1, Quality.GOOD, DataType.Double, "a", "b", "c", "speed"),
        Sample("uns/a/b/raw", b"\x00\xff", 2, Quality.BAD, DataType.Bytes, "a", "b", None, "raw"),
        Sample("uns/a/b/n", None, 3, Quality.STALE, DataType.Int16, "a", "b", None, "n", True),
        Sample("uns/a/b/u64", 2**64 - 1, 4, Quality.GOOD, DataType.UInt64, "a", "b", None, "u64"),
        Sample("uns/a/b/arr", [1, -2, 3], 5, Quality.GOOD, DataType.Int16Array, "a", "b", None, "arr"),
        Sample("uns/a/b/ds", ds, 6, Quality.GOOD, DataType.DataSet, "a", "b", None, "ds"),
        Sample("uns/a/b/tpl", tpl, 7, Quality.GOOD, DataType.Template, "a", "b", None, "tpl"),
        Sample("uns/a/b/t", "Тесто готово", 8, Quality.GOOD, DataType.Text, "a", "b", None, "t"),
    ]
    assert decode_samples(encode_samples(batch)) == batch
    events = [Event("alarm", "uns/a/b", 9, Severity.HIGH, {"limit": 3.5, "tags": ["x"]}, ("snap/1.jpg",), "oee")]
    assert decode_events(encode_events(events)) == events


# ---------------------------------------------------------------------------- ordering through memory and disk


async def test_a_blocked_consumer_spills_in_order_and_gets_everything_exactly_once(tmp_path):
    bus = Bus(BusConfig(queue_batches=4, queue_samples=1000), tmp_path / "bus")
    gate, fast = Gate(), Recorder()
    events: list[Event] = []
    bus.add_consumer("slow", "samples", gate.on_samples)
    bus.add_consumer("slow", "events", lambda batch: events.extend(batch))  # a sync consumer
    bus.add_consumer("fast", "samples", fast.on_samples)
    async with started(bus):
        started_at = time.perf_counter()
        for i in range(100):
            bus.publish_samples(samples(3, 3 * i))
        offer_s = time.perf_counter() - started_at
        bus.publish_events([Event("alarm", "uns/x", 1)])
        await wait_until(lambda: len(fast.samples) == 300, what="the fast plugin to get everything")
        slow = bus.consumer("slow", "samples")
        assert gate.entered.is_set() and not gate.batches  # still stuck on the first batch
        await wait_until(lambda: slow.stored() == (96, 288), what="the spill to land on disk")
        assert slow.lag() == {"batches": 100, "items": 300, "memory_batches": 4, "memory_items": 12,
                              "disk_batches": 96, "disk_items": 288}
        assert bus.overflow_path("slow").exists() and events == [Event("alarm", "uns/x", 1)]

        # More arrive while it drains: they queue behind the disk rows, never ahead of them.
        gate.open.set()
        for i in range(100, 150):
            bus.publish_samples(samples(3, 3 * i))
            await asyncio.sleep(0)
        await wait_until(lambda: len(gate.samples) == 450, what="the slow plugin to catch up")
    assert [s.value for s in gate.samples] == list(range(450))
    assert [s.value for s in fast.samples] == list(range(450))
    assert slow.lag()["items"] == 0 and slow.spilled_batches >= 96 and slow.max_lag_items >= 300
    with sqlite3.connect(bus.overflow_path("slow")) as db:
        assert db.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
    # The listener only appends: 100 offers to three consumers took a few milliseconds at most.
    assert offer_s < 0.05, offer_s


async def test_close_keeps_undelivered_batches_on_disk_and_a_new_bus_delivers_them_first(tmp_path):
    cfg = BusConfig(queue_batches=3)
    first = Bus(cfg, tmp_path / "bus")
    gate = Gate()
    first.add_consumer("p", "samples", gate.on_samples)
    async with started(first, drain_s=0.1):
        for i in range(10):
            first.publish_samples(samples(2, 2 * i))
        await gate.entered.wait()
    assert not gate.batches  # nothing was delivered, everything stayed

    second = Bus(cfg, tmp_path / "bus")
    rec = Recorder()
    second.add_consumer("p", "samples", rec.on_samples)
    async with started(second):
        second.publish_samples(samples(2, 20))  # new data goes behind what the last run left
        await wait_until(lambda: len(rec.samples) == 22, what="the resumed delivery")
    assert [s.value for s in rec.samples] == list(range(22))


# ---------------------------------------------------------------------------- through a running hub


async def test_a_slow_plugin_delays_neither_the_host_nor_another_plugin_and_loses_nothing(broker, group_id, tmp_path):
    slow, fast = Gate(), Recorder()
    hub = Hub(config(tmp_path, broker.url, bus={"queue_batches": 5}), plugins=[("slow", slow), ("fast", fast)])
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    watcher = await Watcher(BrokerUrl.parse(broker.url), "w").start(count_path(group_id))
    path = count_path(group_id)
    async with running(hub):
        await hub.host.wait_online()
        await birth_counter(edge)
        await send_counts(edge, range(100))
        await wait_until(lambda: fast.values(path)[-1:] == [99], what="the fast plugin to see value 99")
        lag_1 = hub.plugin_diagnostics()["slow"]["lag"]["items"]
        await send_counts(edge, range(100, 300))
        # The host and the mirror kept up: the last value is on the UNS while the slow plugin is stuck.
        await watcher.wait_for(path, lambda m: m.json()["value"] == 299)
        await wait_until(lambda: fast.values(path)[-1:] == [299], what="the fast plugin to see value 299")
        assert slow.entered.is_set() and not slow.batches
        consumer = hub.bus.consumer("slow", "samples")
        await wait_until(lambda: consumer.stored()[0] > 250, what="the slow plugin's batches on disk")
        lag_2 = hub.plugin_diagnostics()["slow"]["lag"]["items"]
        assert lag_1 >= 100 and lag_2 == len(fast.samples) > lag_1  # everything the host emitted waits
        assert hub.diagnostics()["plugins"]["fast"]["lag"]["items"] == 0
        assert hub.bus.overflow_path("slow").exists()

        slow.open.set()
        await wait_until(lambda: len(slow.samples) == len(fast.samples), timeout=10, what="the slow plugin to drain")
        assert slow.samples == fast.samples  # same samples, same order
        assert [s.value for s in slow.samples if s.path == path] == [-1, *range(300)]
        bus = hub.diagnostics()["plugins"]["slow"]["bus"]["on_samples"]
        assert bus["lag"]["items"] == 0 and bus["spilled_batches"] > 250 and bus["max_lag_items"] == lag_2
        assert bus["delivered_items"] == len(fast.samples)
    await watcher.stop()
    await edge.close()


class Poisoned:
    """Fails on every batch that holds the value 13; records when each attempt happened."""

    def __init__(self) -> None:
        self.attempts: list[float] = []
        self.values: list[int] = []
        self.path = ""

    @hookimpl
    def on_samples(self, samples: list[Sample]) -> None:  # sync on purpose: both kinds of hookimpl work
        if any(s.value == 13 for s in samples):
            self.attempts.append(time.monotonic())
            raise ValueError("value 13 is poison")
        self.values.extend(s.value for s in samples if s.path == self.path and s.quality is Quality.GOOD)


async def test_a_raising_plugin_is_retried_with_backoff_then_dead_lettered_and_the_hub_keeps_serving(
    broker, group_id, tmp_path
):
    poisoned, other = Poisoned(), Recorder()
    poisoned.path = count_path(group_id)
    bus_cfg = {"retry_initial_s": 0.02, "retry_max_s": 0.1, "max_attempts": 5}
    hub = Hub(config(tmp_path, broker.url, bus=bus_cfg), plugins=[("poisoned", poisoned), ("other", other)])
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    path = count_path(group_id)
    watcher = await Watcher(BrokerUrl.parse(broker.url), "w").start(path)
    async with running(hub):
        await hub.host.wait_online()
        await birth_counter(edge)
        await send_counts(edge, range(12, 15))
        await wait_until(lambda: hub.plugins.status["poisoned"].state == "failing", what="the plugin to be failing")
        assert "ValueError: value 13 is poison" in hub.plugin_diagnostics()["poisoned"]["last_error"]
        await wait_until(lambda: poisoned.values[-1:] == [14], what="delivery to go on after the dead letter")
        await send_counts(edge, range(15, 20))
        await wait_until(lambda: other.values(path)[-1:] == [19], what="the other plugin")
        await watcher.wait_for(path, lambda m: m.json()["value"] == 19)  # the mirror kept serving
        await wait_until(lambda: poisoned.values[-1:] == [19], what="the poisoned plugin to see 19")
        diag = hub.plugin_diagnostics()["poisoned"]
    assert len(poisoned.attempts) == 5
    gaps = [b - a for a, b in zip(poisoned.attempts, poisoned.attempts[1:])]
    for gap, expected in zip(gaps, (0.02, 0.04, 0.08, 0.1)):  # doubling, capped at retry_max_s
        assert gap >= expected * 0.9, gaps
    assert poisoned.values == [-1, 12, 14, 15, 16, 17, 18, 19]
    assert [s.value for s in other.samples if s.path == path and s.quality is Quality.GOOD] == [-1, *range(12, 20)]
    assert diag["state"] == "running" and diag["errors"] == 5  # recovered; the failures stay counted
    assert diag["bus"]["on_samples"]["dead_letters"] == 1 and diag["bus"]["on_samples"]["failures"] == 5
    lines = hub.bus.dead_letter_path("poisoned").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["plugin"] == "poisoned" and record["hook"] == "on_samples" and record["attempts"] == 5
    assert record["error"] == "ValueError: value 13 is poison"
    assert [s["value"] for s in record["batch"]] == [13] and record["batch"][0]["path"] == path
    await watcher.stop()
    await edge.close()


async def test_restarted_hub_resumes_delivery_from_the_overflow_file(broker, group_id, tmp_path):
    cfg = config(tmp_path, broker.url, bus={"queue_batches": 3, "drain_timeout_s": 0.2})
    stuck, witness = Gate(), Recorder()
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    path = count_path(group_id)
    first = Hub(cfg, plugins=[("late", stuck), ("witness", witness)])
    async with running(first):
        await first.host.wait_online()
        await birth_counter(edge)
        await send_counts(edge, range(20))
        await wait_until(lambda: witness.values(path)[-1:] == [19], what="the first hub to receive everything")
    # Stopping marked the values STALE; that went through the bus too, and the late plugin got none of it.
    assert witness.samples[-1].quality is Quality.STALE and not stuck.batches
    waiting = witness.samples
    with sqlite3.connect(tmp_path / "state" / "bus" / "late.sqlite") as db:
        assert db.execute("SELECT coalesce(sum(items), 0) FROM batches").fetchone()[0] == len(waiting)

    resumed = Recorder()
    second = Hub(cfg, plugins=[("late", resumed)])
    async with running(second):
        await wait_until(lambda: len(resumed.samples) >= len(waiting), what="the resumed delivery")
        await second.host.wait_online()
        await edge.nbirth()
        await send_counts(edge, range(20, 25))
        await wait_until(lambda: resumed.values(path)[-1:] == [24], what="new values after the old ones")
    assert resumed.samples[: len(waiting)] == waiting  # exactly what was left, in order, before anything new
    new = resumed.samples[len(waiting):]
    assert [s.value for s in new if s.path == path and s.quality is Quality.GOOD] == [-1, *range(20, 25)]
    await edge.close()


# ---------------------------------------------------------------------------- lifecycle


class Lifecycle:
    """Records the order of its hooks; its on_samples is slow (awaits) so shutdown has something to drain."""

    def __init__(self, log: list[str], name: str, *, fail_startup: bool = False) -> None:
        self.log = log
        self.name = name
        self.fail_startup = fail_startup
        self.samples: list[Sample] = []
        self.events: list[Event] = []

    @hookimpl
    async def hub_startup(self, hub: Hub) -> None:
        self.log.append(f"{self.name}.startup online={hub.host.online}")
        if self.fail_startup:
            raise RuntimeError("no licence file")

    @hookimpl
    async def on_samples(self, samples: list[Sample]) -> None:
        await asyncio.sleep(0.002)
        self.samples.extend(samples)

    @hookimpl
    def on_events(self, events: list[Event]) -> None:
        self.events.extend(events)

    @hookimpl
    def hub_shutdown(self, hub: Hub) -> None:
        consumer = hub.bus.consumer(self.name, "samples")
        self.log.append(f"{self.name}.shutdown lag={consumer.lag()['items']} got={len(self.samples)}")


async def test_lifecycle_startup_failure_leaves_a_plugin_out_and_shutdown_follows_a_drained_bus(
    broker, group_id, tmp_path
):
    order: list[str] = []
    good, bad = Lifecycle(order, "good"), Lifecycle(order, "bad", fail_startup=True)
    hub = Hub(config(tmp_path, broker.url), plugins=[("good", good), ("bad", bad)])
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    async with running(hub):
        await hub.host.wait_online()
        assert hub.plugins.status["bad"].state == "failing"
        assert hub.plugins.status["bad"].last_error == "hub_startup failed: RuntimeError: no licence file"
        assert hub.plugins.status["good"].state == "running"
        await birth_counter(edge)
        await wait_until(lambda: good.events, what="the node_status event")
        await send_counts(edge, range(200))
        await edge.ndeath()
        await wait_until(lambda: len(good.events) == 2, what="the node going offline")
    assert all(line.endswith("online=False") for line in order[:2])  # hub_startup runs before the host connects
    # Everything the bus carried (births, 200 values, STALE on death) was delivered before hub_shutdown.
    assert order[2] == f"good.shutdown lag=0 got={hub.bus.published_items}" and hub.bus.published_items > 200
    assert not bad.samples and len(order) == 3  # never fed, never shut down
    online, offline = good.events
    assert (online.kind, online.path, online.payload["online"], online.payload["reason"]) == (
        "node_status", f"uns/{group_id}/n1", True, "birth")
    assert (offline.payload["online"], offline.severity) == (False, Severity.MEDIUM)
    assert hub.plugins.status["good"].state == "loaded"
    await edge.close()


# ---------------------------------------------------------------------------- throughput


async def test_bus_throughput_to_a_no_op_plugin(tmp_path, capsys):
    class NoOp:
        def __init__(self) -> None:
            self.delivered = 0
            self.open = asyncio.Event()
            self.open.set()

        async def on_samples(self, samples: list[Sample]) -> None:
            if not self.open.is_set():
                await self.open.wait()
            self.delivered += len(samples)

    figures = {}
    # Steady: the host hands over a batch per Sparkplug message, the event loop turning in between.
    for size in (1, 50):
        noop, batch, total = NoOp(), samples(size), 100_000
        bus = Bus(BusConfig(), tmp_path / f"steady{size}")
        bus.add_consumer("noop", "samples", noop.on_samples)
        async with started(bus):
            begin = time.perf_counter()
            for _ in range(total // size):
                bus.publish_samples(batch)
                await asyncio.sleep(0)
            await wait_until(lambda: noop.delivered == total, timeout=60, what="delivery")
            figures[f"steady, batches of {size}"] = total / (time.perf_counter() - begin)
    # From disk: a plugin that was stopped while 100 000 samples arrived, then catches up from its file.
    noop, batch = NoOp(), samples(50)
    noop.open.clear()
    bus = Bus(BusConfig(queue_batches=10), tmp_path / "disk")
    bus.add_consumer("noop", "samples", noop.on_samples)
    async with started(bus):
        begin = time.perf_counter()
        for _ in range(2000):
            bus.publish_samples(batch)
        consumer = bus.consumer("noop", "samples")
        await wait_until(lambda: consumer.stored() == (1990, 99_500), timeout=60, what="the spill")
        figures["spilled to disk"] = 100_000 / (time.perf_counter() - begin)
        begin = time.perf_counter()
        noop.open.set()
        await wait_until(lambda: noop.delivered == 100_000, timeout=60, what="delivery from disk")
        figures["delivered from disk"] = 100_000 / (time.perf_counter() - begin)
    with capsys.disabled():
        for what, rate in figures.items():
            print(f"\nbus throughput to a no-op plugin ({what}): {rate:,.0f} samples/s", end="")
        print()
    assert figures["steady, batches of 50"] > 100_000 and figures["delivered from disk"] > 10_000


async def test_batches_spilled_after_the_file_emptied_are_still_delivered(tmp_path):
    # Regression: SQLite reuses row ids once a table is empty; a reader remembering the last id it read
    # would then skip new rows.
    bus = Bus(BusConfig(queue_batches=1), tmp_path / "bus")
    gate = Gate()
    bus.add_consumer("p", "samples", gate.on_samples)
    async with started(bus):
        consumer = bus.consumer("p", "samples")
        for round_ in range(3):
            gate.open.clear()
            for i in range(5):
                bus.publish_samples(samples(1, 10 * round_ + i))
            await wait_until(lambda: consumer.stored()[0] >= 3, what="rows on disk")
            gate.open.set()
            await wait_until(lambda: consumer.lag()["items"] == 0, what="the round to drain")
    assert [s.value for s in gate.samples] == [10 * r + i for r in range(3) for i in range(5)]


async def test_order_and_completeness_hold_through_random_stalls(tmp_path):
    # Memory, spill buffer, disk writes in a worker thread, reads back, deletes: all interleaved at random.
    rng = random.Random(20240601)
    bus = Bus(BusConfig(queue_batches=3, queue_samples=10), tmp_path / "bus")
    got: list[int] = []

    async def deliver(batch: list[Sample]) -> None:
        if rng.random() < 0.3:
            await asyncio.sleep(rng.random() * 0.003)
        got.extend(s.value for s in batch)

    bus.add_consumer("p", "samples", deliver)
    sent = 0
    async with started(bus):
        for _ in range(800):
            k = rng.randint(1, 4)
            bus.publish_samples(samples(k, sent))
            sent += k
            if rng.random() < 0.2:
                await asyncio.sleep(rng.random() * 0.002)
        await wait_until(lambda: len(got) == sent, timeout=30, what="everything")
        consumer = bus.consumer("p", "samples")
        assert consumer.spilled_batches > 100 and consumer.lag()["items"] == 0
    assert got == list(range(sent))
