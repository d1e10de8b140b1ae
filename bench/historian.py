#!/usr/bin/env python3
"""`make bench`, historian part: write throughput per backend and the latency of a day-long query.

Printed:
  * write throughput (points/s) into SQLite — the historian alone (raw insert + both rollups, in batches of
    `--batch` points: 1,000 tags x 20 s by default, as the outbox sends them) and end to end through the
    durable outbox (fsync'd puts of 2,000 points, drained in batches), as the plugin runs it;
  * the same into PostgreSQL (a LocalPostgres: fsync off, like every test server here — say so next to it);
  * the InfluxDB path: line protocol through influxdb-client's /api/v2/write into victoria-metrics;
  * the latency (median, p95) of a one-day, one-tag query at 1-minute buckets over a store of 1,000 tags at
    1 s, answered by the 1-minute rollups, and the same query computed from raw samples for comparison.
A full store (1,000 tags x 24 h at 1 s = 86.4 M rows) takes ~15 minutes to build here; by default the
queried tag gets the full day and the 1,000 tags `--hours` of it (1 h); `--hours 24` builds it all.
Targets (issue 3): >= 100,000 points/s into SQLite; < 50 ms for the query.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.historian import MINUTE_MS, Record, Tier  # noqa: E402
from hub.historian.influx import InfluxHistorian  # noqa: E402
from hub.historian.outbox import Outbox  # noqa: E402
from hub.historian.sql import SqlHistorian  # noqa: E402
from hub.servers import LocalPostgres, LocalVictoriaMetrics  # noqa: E402

DAY0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TAGS = 1_000
QUERIED = "zdorovo/plant1/bakery/oven1/zone2/temperature"
DOUBLE = 10


def tag_paths(n: int = TAGS) -> list[str]:
    """1,000 ISA-95 paths shaped like the reference plant's."""
    areas = ("bakery", "packaging", "mixing", "utilities")
    return [f"zdorovo/plant1/{areas[i % 4]}/line{i % 10}/cell{i % 25}/tag{i:04d}" for i in range(n)]


def batches(paths: list[str], start_ms: int, seconds: int, batch_points: int) -> Iterator[list[Record]]:
    """Every path at 1 s for `seconds`, in time order, `batch_points` at a time (made lazily)."""
    per_batch = max(1, batch_points // len(paths))
    for s0 in range(0, seconds, per_batch):
        out = []
        for s in range(s0, min(seconds, s0 + per_batch)):
            ts = start_ms + s * 1_000
            for i, path in enumerate(paths):
                out.append(Record(path, ts, 20.0 + (s * 7 + i) % 1000 / 10.0, None, 192, DOUBLE))
        yield out


async def write_all(historian, source: Iterator[list[Record]]) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """Write every batch; (points, seconds)."""
    points = 0
    started = time.perf_counter()
    for batch in source:
        points += await historian.write_records(batch)
    return points, time.perf_counter() - started


async def through_outbox(historian, workdir: Path, points: int, put_size: int, batch_points: int) -> float:  # type: ignore[no-untyped-def]
    """Points/s from the first put until the outbox has delivered everything (puts fsync'd)."""
    paths = tag_paths()
    box = Outbox(workdir / f"outbox-{uuid.uuid4().hex[:6]}.sqlite", historian.write_records, batch_points=batch_points)
    await box.open()
    drain = asyncio.create_task(box.run())
    seconds = points // TAGS
    started = time.perf_counter()
    for batch in batches(paths, DAY0 + 2 * 86_400_000, seconds, put_size):
        await box.put(batch)
    await box.flush()
    elapsed = time.perf_counter() - started
    drain.cancel()
    await asyncio.gather(drain, return_exceptions=True)
    await box.close()
    return seconds * TAGS / elapsed


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def query_latency(historian: SqlHistorian, repeats: int, tier: Tier | None) -> tuple[float, float, int]:
    """Median and p95 seconds of the day query; the number of buckets it returned."""
    times = []
    buckets = 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = await historian.query_buckets(QUERIED, DAY0, DAY0 + 86_400_000, MINUTE_MS, tier=tier)
        times.append(time.perf_counter() - started)
        buckets = len(result[QUERIED].buckets)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)], buckets


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="hours of 1 s data for the 1,000 tags (24 = full)")
    parser.add_argument("--batch", type=int, default=20_000, help="points per historian write")
    parser.add_argument("--queries", type=int, default=50, help="repetitions of the day query")
    parser.add_argument("--pg-seconds", type=int, default=600, help="seconds of 1,000 tags written to PostgreSQL")
    parser.add_argument("--influx-seconds", type=int, default=600, help="seconds of 1,000 tags written to VM")
    args = parser.parse_args()
    paths = tag_paths()
    print(f"\nHistorian benchmark on {os.cpu_count()} cores", flush=True)
    summary: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="plantbus-bench-historian-") as tmp:
        work = Path(tmp)

        # 1. SQLite: build the query store through the write path, timing it.
        sqlite = SqlHistorian(f"sqlite:///{work / 'history.sqlite'}")
        await sqlite.open()
        seconds = int(args.hours * 3600)
        print(f"\n1. SQLite (WAL, synchronous=FULL), batches of {args.batch:,} points", flush=True)
        n_tags, t_tags = await write_all(sqlite, batches(paths, DAY0, seconds, args.batch))
        rate = n_tags / t_tags
        print(f"   {TAGS:,} tags x {seconds:,} s at 1 s: {n_tags:,} points in {t_tags:.1f} s = {rate:,.0f} points/s"
              " (raw + 1 min + 1 h rollups)", flush=True)  # fmt: skip
        n_q, t_q = await write_all(sqlite, batches([QUERIED], DAY0, 86_400, args.batch))
        print(f"   queried tag, a full day at 1 s: {n_q:,} points in {t_q:.1f} s", flush=True)
        size = sum(f.stat().st_size for f in work.glob("history.sqlite*")) / 2**20
        print(f"   store: {n_tags + n_q:,} points, {size:,.0f} MiB on disk", flush=True)
        summary["sqlite"] = f"{rate:,.0f} points/s"
        outbox_rate = await through_outbox(sqlite, work, 300_000, 2_000, args.batch)
        print(f"   end to end through the fsync'd outbox (puts of 2,000, sends up to {args.batch:,}): "
              f"{outbox_rate:,.0f} points/s", flush=True)  # fmt: skip
        summary["sqlite_outbox"] = f"{outbox_rate:,.0f} points/s"

        # 2. The query, on this store.
        print(f"\n2. one tag, one day, 1-minute buckets, {args.queries} queries", flush=True)
        p50, p95, count = await query_latency(sqlite, args.queries, None)
        print(f"   1-minute rollups: {count:,} buckets, median {_ms(p50)}, p95 {_ms(p95)}", flush=True)
        r50, r95, _ = await query_latency(sqlite, max(5, args.queries // 10), Tier.RAW)
        print(f"   from raw samples (for comparison): median {_ms(r50)}, p95 {_ms(r95)}", flush=True)
        summary["query"] = f"median {_ms(p50)}, p95 {_ms(p95)}"
        store = (f"{TAGS:,} tags x {args.hours:g} h at 1 s + the queried tag for 24 h = {n_tags + n_q:,} points"
                 + ("" if args.hours >= 24 else f" (a full store would be {TAGS * 86_400:,})"))  # fmt: skip
        await sqlite.close()

        # 3. PostgreSQL.
        print(f"\n3. PostgreSQL (LocalPostgres: fsync=off, synchronous_commit=off), batches of {args.batch:,}",
              flush=True)  # fmt: skip
        with LocalPostgres() as pg:  # its own directory: the postgres user cannot enter ours
            pg_hist = SqlHistorian(pg.create_database("bench"))
            await pg_hist.open()
            n_pg, t_pg = await write_all(pg_hist, batches(paths, DAY0, args.pg_seconds, args.batch))
            pg_rate = n_pg / t_pg
            print(f"   {TAGS:,} tags x {args.pg_seconds} s: {n_pg:,} points in {t_pg:.1f} s = {pg_rate:,.0f} points/s",
                  flush=True)  # fmt: skip
            await pg_hist.close()
        summary["postgres"] = f"{pg_rate:,.0f} points/s"

        # 4. InfluxDB protocol into victoria-metrics.
        print(f"\n4. InfluxDB v2 write API (influxdb-client) into victoria-metrics, batches of {args.batch:,}",
              flush=True)  # fmt: skip
        with LocalVictoriaMetrics(workdir=work / "vm") as vm:
            influx = InfluxHistorian(vm.url, bucket="plant", org="zdorovo")
            now = (time.time_ns() // 1_000_000) - args.influx_seconds * 1000
            n_vm, t_vm = await write_all(influx, batches(paths, now - now % 1000, args.influx_seconds, args.batch))
            vm_rate = n_vm / t_vm
            print(f"   {TAGS:,} tags x {args.influx_seconds} s: {n_vm:,} points in {t_vm:.1f} s"
                  f" = {vm_rate:,.0f} points/s", flush=True)  # fmt: skip
            await influx.close()
        summary["influx"] = f"{vm_rate:,.0f} points/s"

    print("\nSummary (historian)")
    print(f"   SQLite write:               {summary['sqlite']}   (target >= 100,000)")
    print(f"   SQLite through the outbox:  {summary['sqlite_outbox']}")
    print(f"   PostgreSQL write:           {summary['postgres']}   (test server, fsync off)")
    print(f"   InfluxDB path (VM):         {summary['influx']}")
    print(f"   1-day 1-tag 1-min query:    {summary['query']}   (target < 50 ms)")
    print(f"   query store:                {store}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
