"""The historian's durable outbox: durable on return, in order, retried with backoff, dead letters kept."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from historian_support import T0
from hub.historian import BatchRejected, HistorianError, Record, SinkUnavailable
from hub.historian.outbox import Outbox
from hub.historian.sql import SqlHistorian
from hub.sparkplug.payload import DataType

ROOT = Path(__file__).resolve().parent.parent


def batch(start: int, n: int, path: str = "zdorovo/plant1/packaging/oatbar/filler/count") -> list[Record]:
    return [Record(path, T0 + start + i, float(start + i), None, 192, int(DataType.Int64)) for i in range(n)]


class Sink:
    """Collects what the outbox delivers; fails while told to (an outage, as the outbox sees it)."""

    def __init__(self) -> None:
        self.received: list[list[Record]] = []
        self.down = False
        self.attempts = 0
        self.reject_value: float | None = None

    async def __call__(self, records: list[Record]) -> None:
        self.attempts += 1
        if self.down:
            raise SinkUnavailable("sink is down")
        if self.reject_value is not None and any(r.num == self.reject_value for r in records):
            raise BatchRejected(f"value {self.reject_value} is not acceptable")
        self.received.append(list(records))

    @property
    def values(self) -> list[float]:
        return [r.num for b in self.received for r in b]


async def test_put_is_durable_when_the_process_is_killed_right_after_it(tmp_path):
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from hub.historian import Record
        from hub.historian.outbox import Outbox

        async def never(records):
            raise RuntimeError("the sink is never reached in this process")

        async def main():
            box = Outbox(__import__("pathlib").Path({str(tmp_path / "box.sqlite")!r}), never)
            await box.open()
            for b in range(5):
                await box.put([Record("p", {T0} + b * 10 + i, float(b * 10 + i), None, 192, 10) for i in range(10)])
            print("put", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit, no flush of anything

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "put" and proc.returncode == -signal.SIGKILL
    sink = Sink()
    box = Outbox(tmp_path / "box.sqlite", sink)
    await box.open()
    assert (box.pending_batches, box.pending_points) == (5, 50)
    drain = asyncio.create_task(box.run())
    assert await box.flush(timeout=5)
    assert sink.values == [float(v) for v in range(50)]
    drain.cancel()
    await box.close()


async def test_batches_are_delivered_in_order_combined_up_to_batch_points(tmp_path):
    sink = Sink()
    box = Outbox(tmp_path / "box.sqlite", sink, batch_points=25)
    await box.open()
    for b in range(10):
        await box.put(batch(b * 10, 10))
    drain = asyncio.create_task(box.run())
    assert await box.flush(timeout=5)
    assert sink.values == [float(v) for v in range(100)]
    # 10-point batches, at most 25 points per send: two batches go together
    assert [len(b) for b in sink.received] == [20, 20, 20, 20, 20]
    d = box.diagnostics()
    assert (d["pending_points"], d["sent_points"], d["sent_batches"], d["retries"]) == (0, 100, 10, 0)
    drain.cancel()
    await box.close()


async def test_an_outage_is_retried_with_growing_backoff_and_nothing_is_removed_before_success(tmp_path, caplog):
    sink = Sink()
    sink.down = True
    box = Outbox(tmp_path / "box.sqlite", sink, backoff_initial_s=0.02, backoff_max_s=0.1)
    await box.open()
    drain = asyncio.create_task(box.run())
    await box.put(batch(0, 5))
    await box.put(batch(5, 5))
    assert not await box.flush(timeout=0.5)
    attempts = sink.attempts
    assert 4 <= attempts <= 25  # backoff, not a busy loop: at most 0.1 s apart after a few tries
    d = box.diagnostics()
    assert d["pending_points"] == 10 and d["retries"] == attempts and d["failing_since_ms"] is not None
    assert d["last_error"] == "SinkUnavailable: sink is down"
    # the rows are still on disk while the sink is down
    on_disk = sqlite3.connect(tmp_path / "box.sqlite").execute("SELECT SUM(points) FROM batches").fetchone()[0]
    assert on_disk == 10
    sink.down = False
    assert await box.flush(timeout=5)
    assert sink.values == [float(v) for v in range(10)]
    assert box.diagnostics()["failing_since_ms"] is None
    failing = [r for r in caplog.records if "is failing" in r.getMessage()]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failing) == 1 and len(recovered) == 1  # logged once when it starts, once on recovery
    drain.cancel()
    await box.close()


async def test_a_batch_the_sink_refuses_goes_to_the_dead_letter_table_and_the_rest_flows(tmp_path):
    sink = Sink()
    sink.reject_value = 13.0
    box = Outbox(tmp_path / "box.sqlite", sink, batch_points=10)
    await box.open()
    for b in range(3):
        await box.put(batch(b * 10, 10))
    drain = asyncio.create_task(box.run())
    assert await box.flush(timeout=5)
    assert sink.values == [float(v) for v in range(10)] + [float(v) for v in range(20, 30)]
    d = box.diagnostics()
    assert (d["dead_batches"], d["dead_points"], d["pending_points"]) == (1, 10, 0)
    assert "value 13.0 is not acceptable" in d["last_error"]
    db = sqlite3.connect(tmp_path / "box.sqlite")
    assert db.execute("SELECT points, error FROM dead").fetchall() == [(10, "value 13.0 is not acceptable")]
    drain.cancel()
    await box.close()


async def test_a_damaged_batch_is_set_aside_and_cannot_run_code(tmp_path):
    sink = Sink()
    box = Outbox(tmp_path / "box.sqlite", sink)
    await box.open()
    await box.close()
    # A pickle that would call os.system if it were loaded with a normal unpickler.
    evil = b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR."
    db = sqlite3.connect(tmp_path / "box.sqlite")
    db.execute("INSERT INTO batches (points, created_ms, payload) VALUES (1, 0, ?)", (evil,))
    db.commit()
    db.close()
    box = Outbox(tmp_path / "box.sqlite", sink)
    await box.open()
    await box.put(batch(0, 3))
    drain = asyncio.create_task(box.run())
    assert await box.flush(timeout=5)
    assert not (tmp_path / "pwned").exists()
    assert sink.values == [0.0, 1.0, 2.0] and box.dead_batches == 1
    drain.cancel()
    await box.close()


async def test_the_outbox_feeds_a_real_sql_historian_and_refuses_bad_settings(tmp_path):
    historian = SqlHistorian(f"sqlite:///{tmp_path / 'h.sqlite'}")
    box = Outbox(tmp_path / "box.sqlite", historian.write_records)
    await box.open()
    drain = asyncio.create_task(box.run())
    for b in range(20):
        await box.put(batch(b * 50, 50))
        await box.put(batch(b * 50, 50))  # every batch twice: the historian stores each sample once
    assert await box.flush(timeout=10)
    path = batch(0, 1)[0].path
    assert len((await historian.query_raw(path, T0, T0 + 10_000))[path]) == 1000
    assert historian.stored == 1000 and historian.duplicates == 1000
    drain.cancel()
    await box.close()
    await historian.close()
    with pytest.raises(HistorianError, match="batch_points"):
        Outbox(tmp_path / "x.sqlite", historian.write_records, batch_points=0)
    with pytest.raises(HistorianError, match="not open"):
        await Outbox(tmp_path / "y.sqlite", historian.write_records).put(batch(0, 1))

