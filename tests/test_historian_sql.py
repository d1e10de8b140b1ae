"""The SQL historian against real SQLite files and a real PostgreSQL: aggregates against a brute-force
reference, tiers, retention, exactly-once under replay and late data, latest values, many paths."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from historian_support import (
    HOUR,
    MIN,
    T0,
    arrival_batches,
    assert_buckets_match,
    brute_buckets,
    messy_series,
    numeric_records,
    sample,
)
from hub.historian import (
    DAY_MS,
    HistorianError,
    Historian,
    Point,
    Record,
    Retention,
    SinkUnavailable,
    Tier,
    choose_tier,
)
from hub.historian.outbox import Outbox
from hub.historian.sql import SqlHistorian, check_url
from hub.samples import Quality
from hub.servers import LocalPostgres
from hub.sparkplug.payload import DataSet, DataType

PATH_A = "zdorovo/plant1/packaging/oatbar/checkweigher/weight"
PATH_B = "zdorovo/plant1/bakery/oven1/zone2/temperature"


@pytest.fixture(scope="module")
def pg() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


def fresh_url(request, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """An SQLite file, or a new database on the module's PostgreSQL, as the test's parameter says."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite'}"
    return request.getfixturevalue("pg").create_database("h" + uuid.uuid4().hex[:10])


@pytest.fixture(params=["sqlite", "postgresql"])
async def historian(request, tmp_path) -> AsyncIterator[SqlHistorian]:
    """A fresh SQL historian with the default retention."""
    h = SqlHistorian(fresh_url(request, tmp_path))
    await h.open()
    try:
        yield h
    finally:
        await h.close()


async def raw_count(h: SqlHistorian, path: str) -> int:
    return len((await h.query_raw(path, 0, 2**62))[path])


# ---------------------------------------------------------------------------- aggregates


async def test_aggregates_match_brute_force_with_late_out_of_order_and_replayed_writes(historian):
    rng = random.Random(7)
    series = {PATH_A: messy_series(rng, T0, 3 * HOUR, 1500), PATH_B: messy_series(rng, T0, 3 * HOUR, 700)}
    for path, points in series.items():
        for order in arrival_batches(rng, points):
            await historian.write_records(numeric_records(path, points, order))
    assert historian.stored == 2200
    end = T0 + 3 * HOUR
    for bucket, tier in [
        (10_000, Tier.RAW), (MIN, Tier.MINUTE), (5 * MIN, Tier.MINUTE), (HOUR, Tier.HOUR), (2 * HOUR, Tier.HOUR),
        (MIN, None), (DAY_MS, None),
    ]:  # fmt: skip
        result = await historian.query_buckets([PATH_A, PATH_B], T0, end, bucket, tier=tier)
        for path, points in series.items():
            start = T0 - T0 % bucket
            stop = end if end % bucket == 0 else end - end % bucket + bucket
            assert result[path].tier is (tier or choose_tier(bucket))
            assert_buckets_match(result[path].buckets, brute_buckets(points, start, stop, bucket), f"{path} {bucket}")


async def test_every_tier_that_tiles_a_bucket_gives_the_same_answer(historian):
    rng = random.Random(11)
    points = messy_series(rng, T0, 2 * HOUR, 800)
    for order in arrival_batches(rng, points, late_share=0.4):
        await historian.write_records(numeric_records(PATH_A, points, order))
    for bucket, tiers in [(MIN, [Tier.RAW, Tier.MINUTE]), (HOUR, [Tier.RAW, Tier.MINUTE, Tier.HOUR])]:
        answers = [(await historian.query_buckets(PATH_A, T0, T0 + 2 * HOUR, bucket, tier=t))[PATH_A] for t in tiers]
        expected = brute_buckets(points, T0, T0 + 2 * HOUR, bucket)
        for answer in answers:
            assert_buckets_match(answer.buckets, expected, f"{bucket} from {answer.tier}")


async def test_time_weighted_mean_holds_each_value_until_the_next_and_carries_the_earlier_one_in(historian):
    # 10 from 00:59:30 on, 20 from 01:00:15: the minute [01:00, 01:01) is 15 s of 10 and 45 s of 20.
    t = T0 + HOUR
    await historian.write([sample(PATH_A, t - 30_000, 10.0), sample(PATH_A, t + 15_000, 20.0)])
    for tier in (Tier.RAW, Tier.MINUTE):
        buckets = (await historian.query_buckets(PATH_A, t - MIN, t + MIN, MIN, tier=tier))[PATH_A].buckets
        first, second = buckets
        # before the path's first sample nothing is known: only the 30 s after it count
        assert (first.start, first.count, first.twa) == (t - MIN, 1, 10.0)
        assert (second.start, second.count, second.mean, second.twa) == (t, 1, 20.0, (10 * 15 + 20 * 45) / 60)
    # a quiet hour in between: the hour bucket holds 20 throughout, its minute buckets are never stored
    await historian.write([sample(PATH_A, t + 2 * HOUR + 30 * MIN, 40.0)])
    hours = (await historian.query_buckets(PATH_A, t, t + 3 * HOUR, HOUR, tier=Tier.MINUTE))[PATH_A].buckets
    assert [(b.start, b.twa) for b in hours] == [(t, (10 * 15 + 20 * 3585) / 3600), (t + 2 * HOUR, 30.0)]


async def test_text_boolean_integer_dataset_and_null_values_round_trip(historian):
    code = "010460123456789021ABC123\x1d17261231"  # a GS1 marking code, GS separator kept
    ds = DataSet(["batch", "kg"], [DataType.String, DataType.Double], [["B-17", 12.5], ["B-18", 13.0]])
    running = "zdorovo/plant1/packaging/oatbar/filler/running"
    await historian.write([
        sample("m/code", T0 + 1_000, code, DataType.String),
        sample("m/code", T0 + 2_000, "next", DataType.String),
        sample("m/serial", T0 + 1_000, 2**63 + 5, DataType.UInt64),
        sample("m/count", T0 + 1_000, -7, DataType.Int32, Quality.STALE),
        sample("m/ds", T0 + 1_000, ds, DataType.DataSet),
        sample("m/bytes", T0 + 1_000, b"\x00\xffok", DataType.Bytes),
        sample("m/nan", T0 + 1_000, float("nan"), DataType.Float),
        sample("m/null", T0 + 1_000, None, DataType.Double),
        sample(running, T0, True, DataType.Boolean),
        sample(running, T0 + 45_000, False, DataType.Boolean),
    ])  # fmt: skip
    names = ["m/code", "m/serial", "m/count", "m/ds", "m/bytes", "m/nan", "m/null"]
    raw = await historian.query_raw(names, T0, T0 + MIN)
    assert [p.value for p in raw["m/code"]] == [code, "next"]
    assert raw["m/serial"] == [Point(T0 + 1_000, 2**63 + 5, Quality.GOOD)]
    assert raw["m/count"] == [Point(T0 + 1_000, -7, Quality.STALE)]
    assert raw["m/ds"][0].value == {"columns": ["batch", "kg"], "types": ["String", "Double"],
                                    "rows": [["B-17", 12.5], ["B-18", 13.0]]}  # fmt: skip
    assert raw["m/bytes"][0].value == b"\x00\xffok"
    assert str(raw["m/nan"][0].value) == "nan"
    assert raw["m/null"][0].value is None
    text = (await historian.query_buckets("m/code", T0, T0 + MIN, MIN))["m/code"].buckets
    assert [(b.count, b.first, b.last, b.min, b.twa) for b in text] == [(2, code, "next", None, None)]
    # a boolean's time-weighted mean is the share of the bucket it was true: the filler ran 45 of 60 s
    duty = (await historian.query_buckets(running, T0, T0 + MIN, MIN))[running].buckets
    assert [(b.count, b.first, b.last, b.twa) for b in duty] == [(2, True, False, 0.75)]


# ---------------------------------------------------------------------------- exactly once


async def test_replayed_batches_are_stored_once_and_rollups_never_count_twice(historian):
    rng = random.Random(3)
    points = messy_series(rng, T0, HOUR, 600)
    batches = arrival_batches(rng, points)
    for order in batches:
        await historian.write_records(numeric_records(PATH_A, points, order))
    before = {b: (await historian.query_buckets(PATH_A, T0, T0 + HOUR, b))[PATH_A].buckets for b in (MIN, HOUR)}
    # the whole stream again, in another order, plus one batch repeating its own samples
    replay = [t for order in batches for t in order]
    rng.shuffle(replay)
    new = 0
    for i in range(0, len(replay), 97):
        new += await historian.write_records(numeric_records(PATH_A, points, replay[i : i + 97]))
    new += await historian.write_records(numeric_records(PATH_A, points, list(points)[:50] * 2))
    assert new == 0
    assert await raw_count(historian, PATH_A) == 600
    for bucket, buckets in before.items():
        again = (await historian.query_buckets(PATH_A, T0, T0 + HOUR, bucket))[PATH_A].buckets
        assert again == buckets
        assert sum(b.count for b in again) == 600
        assert_buckets_match(again, brute_buckets(points, T0, T0 + HOUR, bucket), f"after replay, {bucket}")


async def test_a_value_changed_twice_in_one_millisecond_keeps_the_newest_in_raw_and_every_rollup(historian):
    # An edge node may send 11.0, 12.5 and 14.0 for one metric within the same millisecond: the last is the
    # truth. Some arrive in one batch, some in later ones (the bus batches by time), some land on a minute
    # edge where the next bucket carries the value in; rollups must equal a fresh computation of the final series.
    rng = random.Random(5)
    points = messy_series(rng, T0, 2 * HOUR, 400)
    for order in arrival_batches(rng, points):
        await historian.write_records(numeric_records(PATH_A, points, order))
    final = dict(points)
    stamps = sorted(points)
    newest = stamps[-1]
    # same ms, separate later batches (the console case), the newest stored sample included
    for ts in (newest, stamps[10], stamps[200]):
        for value in (final[ts] + 1.5, final[ts] + 3.0):
            await historian.write_records(numeric_records(PATH_A, {ts: value}))
            final[ts] = value
    # same ms twice in one batch, after the stored ones: the later arrival wins
    t_new = newest + 30_000
    batch = numeric_records(PATH_A, {t_new: 1.0}) + numeric_records(PATH_A, {t_new: 2.0})
    assert await historian.write_records(batch) == 1
    final[t_new] = 2.0
    end = t_new + 1
    assert (await historian.latest(PATH_A))[PATH_A].value == 2.0
    raw = (await historian.query_raw(PATH_A, 0, 2**62))[PATH_A]
    assert {p.ts: p.value for p in raw} == final
    for bucket in (MIN, HOUR):
        for tier in (Tier.RAW, Tier.MINUTE if bucket == MIN else Tier.HOUR):
            got = (await historian.query_buckets(PATH_A, T0, end, bucket, tier=tier))[PATH_A].buckets
            start = T0 - T0 % bucket
            stop = end - end % bucket + bucket
            assert_buckets_match(got, brute_buckets(final, start, stop, bucket), f"{bucket} from {tier}")
    # an identical replay of a corrected sample is still a replay: nothing new, nothing replaced
    replaced = historian.diagnostics()["replaced_same_ms"]
    assert await historian.write_records(numeric_records(PATH_A, {newest: final[newest]})) == 0
    assert historian.diagnostics()["replaced_same_ms"] == replaced == 6


async def test_a_second_writer_on_the_same_paths_cannot_make_rollups_double_count(historian):
    # Two historian objects on one database: each one's idea of a path's newest sample goes stale.
    other = SqlHistorian(historian.url)
    await other.open()
    try:
        points = {T0 + i * 1_000: float(i % 17) for i in range(300)}
        times = sorted(points)
        await historian.write_records(numeric_records(PATH_A, points, times[:100]))
        await other.write_records(numeric_records(PATH_A, points, times[:200]))  # 100 repeated, 100 new
        await historian.write_records(numeric_records(PATH_A, points, times[100:]))  # its view says "all new"
        assert historian.careful_redos == 1
        assert await raw_count(historian, PATH_A) == 300
        got = (await historian.query_buckets(PATH_A, T0, T0 + 5 * MIN, MIN))[PATH_A].buckets
        assert_buckets_match(got, brute_buckets(points, T0, T0 + 5 * MIN, MIN), "two writers")
    finally:
        await other.close()


# ---------------------------------------------------------------------------- tiers and retention


def test_the_coarsest_tier_that_tiles_the_bucket_is_chosen():
    assert choose_tier(1_000) is Tier.RAW
    assert choose_tier(90_000) is Tier.RAW  # 1.5 min: minute rollups cannot be split
    assert choose_tier(MIN) is Tier.MINUTE and choose_tier(15 * MIN) is Tier.MINUTE
    assert choose_tier(HOUR) is Tier.HOUR and choose_tier(DAY_MS) is Tier.HOUR
    assert choose_tier(90 * MIN) is Tier.MINUTE
    with pytest.raises(HistorianError):
        choose_tier(0)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    return fresh_url(request, tmp_path)


async def test_retention_deletes_each_tier_on_its_own_and_keeps_the_value_that_still_holds(url):
    h = SqlHistorian(url, retention=Retention(2 * DAY_MS, 10 * DAY_MS, 40 * DAY_MS))
    await h.open()
    # one sample an hour for 60 days, and a quiet tag that last changed 50 days ago
    points = {T0 + i * HOUR: float(i) for i in range(60 * 24)}
    await h.write_records(numeric_records(PATH_A, points))
    await h.write([sample(PATH_B, T0 + 10 * DAY_MS, 5.0)])
    now = T0 + 60 * DAY_MS
    deleted = await h.apply_retention(now_ms=now)
    remaining = (await h.query_raw(PATH_A, 0, now))[PATH_A]
    # raw: two days kept, plus the newest sample before that horizon (it still holds at the horizon)
    assert [p.ts for p in remaining][:2] == [now - 2 * DAY_MS - HOUR, now - 2 * DAY_MS]
    assert len(remaining) == 2 * 24 + 1
    assert deleted[Tier.RAW] == 60 * 24 - len(remaining)
    assert (await h.query_raw(PATH_B, 0, now))[PATH_B] == [Point(T0 + 10 * DAY_MS, 5.0, Quality.GOOD)]
    # minute rollups reach back 10 days, hour rollups 40; the raw tier no longer answers older minutes
    old = now - 5 * DAY_MS
    assert (await h.query_buckets(PATH_A, old, old + HOUR, MIN, tier=Tier.RAW))[PATH_A].buckets == []
    minutes = (await h.query_buckets(PATH_A, old, old + HOUR, MIN))[PATH_A].buckets
    assert [(b.start, b.last) for b in minutes] == [(old, points[old])]
    assert (await h.query_buckets(PATH_A, now - 20 * DAY_MS, now - 20 * DAY_MS + HOUR, MIN))[PATH_A].buckets == []
    hours = (await h.query_buckets(PATH_A, now - 20 * DAY_MS, now - 20 * DAY_MS + HOUR, HOUR))[PATH_A].buckets
    assert [b.last for b in hours] == [points[now - 20 * DAY_MS]]
    assert deleted[Tier.HOUR] == 60 * 24 - 40 * 24 - 1
    # the time-weighted mean right after the raw horizon still starts from the carried-in value
    await h.write([sample(PATH_B, now + 30_000, 7.0)])
    twa = (await h.query_buckets(PATH_B, now, now + MIN, MIN))[PATH_B].buckets[0].twa
    assert twa == (5.0 * 30 + 7.0 * 30) / 60
    await h.close()


# ---------------------------------------------------------------------------- latest, many paths


async def test_latest_values_list_paths_and_many_path_queries(historian):
    paths = [f"zdorovo/plant1/line{i % 3}/cell{i}/speed" for i in range(60)]
    records = [Record(p, T0 + k * 1_000, float(i * 100 + k), None, 192, int(DataType.Float))
               for k in range(20) for i, p in enumerate(paths)]  # fmt: skip
    await historian.write_records(records)
    await historian.write([sample("zdorovo/plant1/line0/mode", T0 + 500, "CIP", DataType.String, Quality.STALE)])
    latest = await historian.latest()
    assert len(latest) == 61
    assert latest[paths[7]] == Point(T0 + 19_000, 719.0, Quality.GOOD)
    assert latest["zdorovo/plant1/line0/mode"] == Point(T0 + 500, "CIP", Quality.STALE)
    some = await historian.latest([paths[0], paths[59], "no/such/path"])
    assert set(some) == {paths[0], paths[59]}
    raw = await historian.query_raw(paths + ["no/such/path"], T0 + 5_000, T0 + 8_000)
    assert raw["no/such/path"] == []
    assert all([p.value for p in raw[p]] == [i * 100 + 5.0, i * 100 + 6.0, i * 100 + 7.0] for i, p in enumerate(paths))
    limited = await historian.query_raw(paths[:2], T0, T0 + MIN, limit=4)
    assert [len(v) for v in limited.values()] == [4, 4]
    buckets = await historian.query_buckets(paths, T0, T0 + MIN, MIN)
    assert [buckets[p].buckets[0].count for p in paths] == [20] * 60
    listed = await historian.list_paths("zdorovo/plant1/line0/")
    assert len(listed) == 21 and listed["zdorovo/plant1/line0/mode"] is DataType.String


def test_urls_that_cannot_work_are_refused_with_the_fix():
    for url, hint in [
        ("sqlite://", "names no file"),
        ("sqlite:///:memory:", "names no file"),
        ("mysql://x@y/z", "use sqlite:///... or postgresql+psycopg://"),
        ("not a url", "not a database URL"),
    ]:
        with pytest.raises(HistorianError, match=re.escape(hint)):
            check_url(url)
    check_url("postgresql+psycopg://plantbus@db:5432/plantbus")
    check_url("sqlite:///var/history.sqlite")


async def test_the_sqlite_file_is_in_wal_mode_with_the_documented_tables(tmp_path):
    h = SqlHistorian(f"sqlite:///{tmp_path / 'h.sqlite'}")
    await h.open()
    assert isinstance(h, Historian)
    await h.write([sample(PATH_A, T0, 1.0)])
    await h.close()
    db = sqlite3.connect(tmp_path / "h.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"historian_paths", "historian_samples", "historian_rollup_1m", "historian_rollup_1h"} <= tables
    db.close()


# ---------------------------------------------------------------------------- PostgreSQL outage


async def test_postgres_restart_under_the_sql_historian_loses_nothing_and_duplicates_nothing(pg, tmp_path):
    url = pg.create_database("outage" + uuid.uuid4().hex[:8])
    historian = SqlHistorian(url)
    await historian.open()
    outbox = Outbox(tmp_path / "outbox.sqlite", historian.write_records, name="pg", batch_points=500,
                    backoff_initial_s=0.05, backoff_max_s=0.5)  # fmt: skip
    await outbox.open()
    drain = asyncio.create_task(outbox.run())
    paths = [f"zdorovo/plant1/bakery/oven{i}/temperature" for i in range(10)]
    expected = 0
    restart = None
    for batch in range(120):
        ts = T0 + batch * 1_000
        await outbox.put([Record(p, ts, float(batch + i), None, 192, 10) for i, p in enumerate(paths)])
        expected += len(paths)
        if batch == 30:
            restart = asyncio.create_task(asyncio.to_thread(pg.restart, 2.0))
        await asyncio.sleep(0.02)
    await restart
    assert await outbox.flush(timeout=30)
    drain.cancel()
    await asyncio.gather(drain, return_exceptions=True)
    assert outbox.retries > 0 and "PostgreSQL" in (outbox.last_error or "")
    assert outbox.sent_points == expected and outbox.pending_points == 0
    raw = await historian.query_raw(paths, T0, T0 + HOUR)
    assert sum(len(v) for v in raw.values()) == expected
    assert all([p.ts for p in raw[p]] == [T0 + b * 1_000 for b in range(120)] for p in paths)
    minutes = await historian.query_buckets(paths, T0, T0 + HOUR, MIN)
    assert sum(b.count for s in minutes.values() for b in s.buckets) == expected
    await outbox.close()
    await historian.close()


async def test_a_database_that_is_down_is_reported_as_unavailable_not_as_bad_data(pg):
    url = pg.url("postgres").replace(f":{pg.port}/", ":1/")  # nothing listens on port 1
    historian = SqlHistorian(url)
    with pytest.raises(SinkUnavailable, match="is unavailable"):
        await historian.write([sample(PATH_A, T0, 1.0)])
