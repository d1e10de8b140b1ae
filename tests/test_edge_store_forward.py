"""Store and forward: DATA that cannot be delivered goes to a durable outbox and comes back as historical."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _edge_support import AliasBook, Observer, persistent_broker, wait_until

from hub.mqtt import BrokerUrl
from hub.sparkplug.bdseq import BdSeqStore
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.outbox import Outbox
from hub.sparkplug.payload import DataType, now_ms
from hub.sparkplug.topic import MessageType as MT

ROOT = Path(__file__).resolve().parent.parent


def make_node(broker, group_id, tmp_path, **kw) -> EdgeNode:
    kw.setdefault("backoff_min_s", 0.2)
    kw.setdefault("backoff_max_s", 1.0)
    node = EdgeNode(BrokerUrl.parse(broker.url), group_id, "edge1", state_dir=tmp_path / "state", **kw)
    node.add_device("d").add_metric("count", DataType.Int64, 0)
    return node


def observed_counts(obs: Observer, group_id: str) -> list[tuple[int, int, bool, int]]:
    """(session bdSeq, value, is_historical, metric timestamp) of every DDATA, in arrival order."""
    book = AliasBook()
    out = []
    bdseq = None
    for m in obs.sparkplug_stream(group_id, "edge1"):
        if m.type is MT.NBIRTH:
            bdseq = m.metric("bdSeq").value
        if m.type.is_birth:
            book.learn(m)
        elif m.type is MT.DDATA:
            (metric,) = m.payload.metrics
            out.append((bdseq, book.values(m)["count"], metric.is_historical, metric.timestamp))
    return out


def test_outbox_keeps_rows_across_reopen_and_drops_the_oldest_beyond_its_cap(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, max_messages=5)
    for i in range(3):
        box.append("dev", bytes([i]))
    box.append(None, b"node")
    assert len(box) == 4 and box.dropped == 0
    assert box.append_many([("dev", b"x"), ("dev", b"y")]) == 1
    rows = box.read_after(0, 100)
    assert [r[2] for r in rows] == [b"\x01", b"\x02", b"node", b"x", b"y"]
    assert rows[2][1] is None
    box.delete([rows[0][0], rows[1][0]])
    assert len(box) == 3
    reopened = Outbox(path, max_messages=5)  # another process after a crash sees the committed rows
    assert [r[2] for r in reopened.read_after(0, 100)] == [b"node", b"x", b"y"]
    assert reopened.read_after(rows[3][0], 100)[0][2] == b"y"


def test_bdseq_file_steps_wraps_and_recovers_from_damage(tmp_path):
    store = BdSeqStore(tmp_path / "a" / "bdseq")
    assert store.last() is None
    assert [store.next() for _ in range(3)] == [0, 1, 2]
    assert BdSeqStore(tmp_path / "a" / "bdseq").next() == 3  # a new process continues
    store.path.write_text("255")
    assert store.next() == 0
    store.path.write_text("garbage")
    assert store.next() == 0
    assert not [p for p in store.path.parent.iterdir() if p.name.startswith(".bdseq-")], "no temp files left"


async def test_broker_restart_mid_stream_loses_nothing_and_replays_as_historical(tmp_path, group_id):
    with persistent_broker(tmp_path) as broker:
        node = make_node(broker, group_id, tmp_path)
        base = now_ms() - 10_000
        sent: list[int] = []

        async def stream() -> None:
            i = 0
            while True:
                i += 1
                await node.update("d", {"count": i}, timestamp=base + i)
                sent.append(i)
                await asyncio.sleep(0.004)

        async with Observer(broker, persistent=True) as obs, node:
            await node.wait_online(5)
            producer = asyncio.create_task(stream())
            await wait_until(lambda: len(sent) > 50, what="data flowing")
            await asyncio.to_thread(broker.restart, 0.6)
            await wait_until(lambda: node.stats.connects == 2 and node.online, timeout=10, what="the second session")
            await wait_until(lambda: node.outbox_size == 0 and node.stats.replayed > 0, what="replay done")
            await asyncio.sleep(0.2)
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            last = sent[-1]
            await wait_until(
                lambda: any(v == last for _, v, _, _ in observed_counts(obs, group_id)), what="the last value"
            )
        seen = observed_counts(obs, group_id)
    values = {v for _, v, _, _ in seen}
    assert set(sent) <= values, f"lost: {sorted(set(sent) - values)[:20]}"
    for bdseq in {b for b, _, _, _ in seen}:
        in_session = [v for b, v, _, _ in seen if b == bdseq]
        assert len(in_session) == len(set(in_session)), "a value repeated within one session"
    historical = [(v, ts) for _, v, hist, ts in seen if hist]
    assert historical, "the outage's values came back as historical"
    assert all(ts == base + v for v, ts in historical), "historical values keep their original timestamps"
    assert all(not hist for b, _, hist, _ in seen if b == seen[0][0]), "first session: live only"
    assert node.stats.stored >= len(historical) - node.stats.dropped and node.stats.dropped == 0


@pytest.mark.spec("tck-id-topics-nbirth-bdseq-increment")
async def test_data_from_before_the_first_connection_is_replayed_after_the_births(tmp_path, group_id):
    with persistent_broker(tmp_path) as broker:
        async with Observer(broker, persistent=True):
            pass  # registers the observer's session so the broker queues for it across the restart
        broker.stop()
        node = make_node(broker, group_id, tmp_path)
        async with node:
            for i in range(1, 21):
                await node.update("d", {"count": i})
            await wait_until(lambda: node.stats.connect_failures >= 1, what="a failed CONNECT")
            assert node.outbox_size == 20 and not node.online
            await asyncio.to_thread(broker.start)
            async with Observer(broker, persistent=True) as obs:
                await wait_until(lambda: node.online and node.outbox_size == 0, timeout=10, what="replay")
                await wait_until(lambda: len(observed_counts(obs, group_id)) == 20, what="20 historical DDATA")
                nbirth = obs.of(MT.NBIRTH)[0]
        seen = observed_counts(obs, group_id)
    assert [v for _, v, _, _ in seen] == list(range(1, 21))
    assert all(hist for _, _, hist, _ in seen)
    assert nbirth.metric("bdSeq").value == node.stats.connect_failures, "one bdSeq per CONNECT attempt"
    dbirth = obs.of(MT.DBIRTH)[0]
    assert dbirth.metric("count").value == 20, "the birth carries the current value"


async def test_replay_is_chunked_and_live_data_is_not_starved(broker, group_id, tmp_path):
    broker.stop()
    node = make_node(broker, group_id, tmp_path, replay_chunk=25)
    node.add_node_metric("live", DataType.Int64, 0)
    for i in range(1, 1001):
        await node.update("d", {"count": i})
    assert node.outbox_size == 1000
    await asyncio.to_thread(broker.start)
    live = 0

    async def live_feed() -> None:
        nonlocal live
        while True:
            live += 1
            await node.update(None, {"live": live})
            await asyncio.sleep(0.001)

    async with Observer(broker) as obs, node:
        feeder = asyncio.create_task(live_feed())
        await wait_until(lambda: node.online and node.outbox_size == 0, timeout=10, what="replay done")
        await wait_until(lambda: len(observed_counts(obs, group_id)) == 1000, what="1000 historical")
        feeder.cancel()
    stream = obs.sparkplug_stream(group_id, "edge1")
    ddata = [i for i, m in enumerate(stream) if m.type is MT.DDATA]
    ndata_during = [i for i, m in enumerate(stream) if m.type is MT.NDATA and ddata[0] < i < ddata[-1]]
    assert ndata_during, "live NDATA went out between replay chunks"
    assert [v for _, v, _, _ in observed_counts(obs, group_id)] == list(range(1, 1001))
    seqs = [m.payload.seq for m in stream if m.type is not MT.NDEATH]
    assert seqs == [i % 256 for i in range(len(seqs))]


async def test_outbox_cap_drops_the_oldest_and_counts_them(broker, group_id, tmp_path):
    broker.stop()
    node = make_node(broker, group_id, tmp_path, outbox_max_messages=10)
    for i in range(1, 26):
        await node.update("d", {"count": i})
    assert node.outbox_size == 10 and node.stats.dropped == 15
    await asyncio.to_thread(broker.start)
    async with Observer(broker) as obs, node:
        await wait_until(lambda: len(observed_counts(obs, group_id)) == 10, timeout=10, what="10 replayed")
    assert [v for _, v, _, _ in observed_counts(obs, group_id)] == list(range(16, 26))


async def test_without_store_and_forward_offline_data_is_dropped_but_counted(broker, group_id, tmp_path):
    broker.stop()
    node = make_node(broker, group_id, tmp_path, store_forward=False)
    for i in range(1, 6):
        await node.update("d", {"count": i})
    assert node.outbox_size == 0 and node.stats.dropped == 5
    await asyncio.to_thread(broker.start)
    async with Observer(broker) as obs, node:
        dbirth = await obs.wait_type(MT.DBIRTH, timeout=10)
        await asyncio.sleep(0.2)
    assert dbirth.metric("count").value == 5
    assert not obs.of(MT.DDATA)


CRASHING_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from hub.mqtt import BrokerUrl
    from hub.sparkplug.edge import EdgeNode

    async def main():
        node = EdgeNode(BrokerUrl.parse(sys.argv[1]), sys.argv[2], "edge1", state_dir=Path(sys.argv[3]))
        node.add_device("d").add_metric("count", "Int64", 0)
        node.start()
        for i in range(1, 51):
            await node.update("d", {"count": i}, timestamp=1_700_000_000_000 + i)
        while node.stats.connect_failures == 0:
            await asyncio.sleep(0.01)
        print("stored", node.outbox_size, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def test_stored_data_survives_a_crash_and_a_new_process_replays_it(broker, group_id, tmp_path):
    broker.stop()  # the child never reaches a broker
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_CHILD, broker.url, group_id, str(tmp_path / "state")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
        assert line.split() == ["stored", "50"]
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    await asyncio.to_thread(broker.start)
    node = make_node(broker, group_id, tmp_path)
    assert node.outbox_size == 50
    async with Observer(broker) as obs, node:
        await wait_until(lambda: len(observed_counts(obs, group_id)) == 50, timeout=10, what="50 replayed")
        await wait_until(lambda: node.outbox_size == 0, what="the outbox emptied after confirmation")
    seen = observed_counts(obs, group_id)
    assert [(v, ts) for _, v, _, ts in seen] == [(i, 1_700_000_000_000 + i) for i in range(1, 51)]
    assert all(hist for _, _, hist, _ in seen)
    assert obs.of(MT.NBIRTH)[0].metric("bdSeq").value >= 1, "bdSeq continued after the crashed process"
