"""The InfluxDB historian: writes through the v2 write API to a real VictoriaMetrics (read back through its
export API), reads through InfluxQL from a real InfluxDB 1.6.7 (loaded through its v1 /write)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from historian_support import HOUR, MIN, T0, assert_buckets_match, brute_buckets, messy_series, numeric_records, sample
from hub.historian import HistorianError, Point, Record, SinkUnavailable, Tier, to_records
from hub.historian.influx import InfluxHistorian, to_line_protocol
from hub.historian.outbox import Outbox
from hub.samples import Quality
from hub.servers import LocalInfluxDB, LocalVictoriaMetrics
from hub.sparkplug.payload import DataType, now_ms
from sparkplug_fakes import wait_until

# A GS1 marking code (Chestny ZNAK style, GS separators kept) and a serial number: values, never tags.
MARKING_CODE = "0104601234567890215!&Qx7\x1d93dGVz"
SERIAL = "SN-2026-000123"
CODE_PATH = "zdorovo/plant1/packaging/oatbar/printer/last_code"
SERIAL_PATH = "zdorovo/plant1/packaging/oatbar/printer/serial"


@pytest.fixture
def vm(tmp_path) -> Iterator[LocalVictoriaMetrics]:
    with LocalVictoriaMetrics(workdir=tmp_path / "vm") as server:
        yield server


@pytest.fixture(scope="module")
def influxd() -> Iterator[LocalInfluxDB]:
    with LocalInfluxDB() as server:
        yield server


def exported_points(vm: LocalVictoriaMetrics, field: str = "value") -> dict[str, list[int]]:
    """Timestamps per path of `plantbus_<field>`, duplicates included."""
    vm.flush()
    out: dict[str, list[int]] = {}
    for series in vm.export(f'{{__name__="plantbus_{field}"}}'):
        out.setdefault(series["metric"]["path"], []).extend(series["timestamps"])
    return out


def split_line(line: str) -> tuple[str, str, str]:
    """Line protocol -> (measurement and tags, fields, timestamp), honouring escaped spaces."""
    parts, current, escaped, quoted = [], "", False, False
    for ch in line:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            current += ch
            escaped = True
        elif ch == '"':
            current += ch
            quoted = not quoted
        elif ch == " " and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    assert len(parts) == 3, line
    return parts[0], parts[1], parts[2]


# ---------------------------------------------------------------------------- writing: no values in tags


def test_line_protocol_has_the_path_as_its_only_tag_and_values_as_fields():
    records = to_records([
        sample(CODE_PATH, T0, MARKING_CODE, DataType.String),
        sample(SERIAL_PATH, T0, SERIAL, DataType.String),
        sample("zdorovo/plant1/line 1,a=b/temp", T0 + 1, 21.5),
        sample("zdorovo/plant1/line1/run", T0 + 2, True, DataType.Boolean),
        sample("zdorovo/plant1/line1/count", T0 + 3, None, DataType.Int64, Quality.STALE),
    ])  # fmt: skip
    lines = to_line_protocol(records)
    heads = [split_line(line)[0] for line in lines]
    assert heads == [
        f"plantbus,path={CODE_PATH}",
        f"plantbus,path={SERIAL_PATH}",
        r"plantbus,path=zdorovo/plant1/line\ 1\,a\=b/temp",
        "plantbus,path=zdorovo/plant1/line1/run",
        "plantbus,path=zdorovo/plant1/line1/count",
    ]
    assert all(MARKING_CODE not in head and SERIAL not in head for head in heads)
    fields = [split_line(line)[1] for line in lines]
    assert fields[0] == f'value_str="{MARKING_CODE}",quality=192i,datatype=12i'
    assert fields[2] == "value=21.5,quality=192i,datatype=10i"
    assert fields[3] == "value=1.0,quality=192i,datatype=11i"
    assert fields[4] == "quality=500i,datatype=4i"  # a null value still counts as a sample


async def test_a_string_sample_never_becomes_a_tag_on_the_server(vm, influxd):
    codes = [f"{MARKING_CODE}{i:04d}" for i in range(50)]
    now = now_ms()
    samples = [sample(CODE_PATH, now + i, code, DataType.String) for i, code in enumerate(codes)]
    samples += [sample(SERIAL_PATH, now + i, f"{SERIAL}-{i}", DataType.String) for i in range(50)]
    historian = InfluxHistorian(vm.url, bucket="plant", org="zdorovo", token="secret")
    assert await historian.write(samples) == 100
    # VictoriaMetrics keeps numeric fields only; what matters is which series and labels exist
    await wait_until(lambda: sum(map(len, exported_points(vm, "quality").values())) == 100, timeout=15,
                     what="100 quality points in victoria-metrics")  # fmt: skip
    series = vm.export('{__name__=~"plantbus_.*"}')
    assert {tuple(sorted(s["metric"])) for s in series} == {("__name__", "path")}
    assert {s["metric"]["path"] for s in series} == {CODE_PATH, SERIAL_PATH}
    assert len(series) <= 2 * 4  # one series per field per path: 50 codes did not make 50 series
    await historian.close()
    # InfluxDB proper: the code is a string field, readable, and the only tag key is path
    db = influxd.create_database("tags" + uuid.uuid4().hex[:6])
    influxd.write_lines(db, to_line_protocol(to_records(samples)))
    tag_keys = influxd.query("SHOW TAG KEYS FROM plantbus", db)["results"][0]["series"][0]["values"]
    assert tag_keys == [["path"]]
    fields = dict(map(tuple, influxd.query("SHOW FIELD KEYS FROM plantbus", db)["results"][0]["series"][0]["values"]))
    assert fields == {"value_str": "string", "quality": "integer", "datatype": "integer"}
    reader = InfluxHistorian(influxd.url, bucket=db)
    raw = await reader.query_raw(CODE_PATH, now, now + 1000)
    assert [p.value for p in raw[CODE_PATH]] == codes
    await reader.close()


async def test_every_point_written_through_the_outbox_reaches_victoria_metrics_once(vm, tmp_path):
    historian = InfluxHistorian(vm.url, bucket="plant", org="zdorovo")
    box = Outbox(tmp_path / "box.sqlite", historian.write_records, name="influxdb", batch_points=700)
    await box.open()
    drain = asyncio.create_task(box.run())
    now = now_ms()
    paths = [f"zdorovo/plant1/bakery/oven{i}/temperature" for i in range(20)]
    for k in range(100):
        await box.put([Record(p, now + k, float(k), None, 192, 10) for p in paths])
    assert await box.flush(timeout=15)
    await wait_until(lambda: sum(map(len, exported_points(vm).values())) >= 2000, timeout=15,
                     what="2000 points in victoria-metrics")  # fmt: skip
    got = exported_points(vm)
    assert sorted(got) == sorted(paths)
    assert all(sorted(ts) == [now + k for k in range(100)] for ts in got.values())
    drain.cancel()
    await box.close()
    await historian.close()


@pytest.mark.slow
async def test_a_minute_long_outage_of_the_influx_server_loses_and_duplicates_nothing(vm, tmp_path):
    """The issue's scenario: the InfluxDB-protocol server is down for 60 s in the middle of a stream."""
    historian = InfluxHistorian(vm.url, bucket="plant", org="zdorovo", timeout_s=2)
    box = Outbox(tmp_path / "box.sqlite", historian.write_records, name="influxdb", backoff_initial_s=0.2,
                 backoff_max_s=2.0)  # fmt: skip
    await box.open()
    drain = asyncio.create_task(box.run())
    paths = [f"zdorovo/plant1/packaging/line{i}/checkweigher/weight" for i in range(10)]
    start = now_ms()
    sent: Counter[str] = Counter()
    produced = 0

    async def produce(seconds: float) -> None:
        nonlocal produced
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            ts = start + produced  # unique, increasing timestamps: a duplicate would show as a repeat
            await box.put([Record(p, ts, 500.0 + produced % 7, None, 192, 10) for p in paths])
            sent.update(paths)
            produced += 1
            await asyncio.sleep(0.1)

    await produce(3)
    await asyncio.to_thread(vm.stop)
    await produce(60)  # a minute without the server; the hub keeps accepting samples
    assert box.pending_points > 0 and box.retries > 0 and box.failing_since_ms is not None
    assert "unreachable" in (box.last_error or "")
    await asyncio.to_thread(vm.start)
    await produce(3)
    assert await box.flush(timeout=30)
    total = sum(sent.values())
    await wait_until(lambda: sum(map(len, exported_points(vm).values())) >= total, timeout=20,
                     what=f"{total} points in victoria-metrics")  # fmt: skip
    got = exported_points(vm)
    assert {p: len(ts) for p, ts in got.items()} == dict(sent)  # every point, once
    assert all(len(set(ts)) == len(ts) == produced for ts in got.values())
    assert box.diagnostics()["failing_since_ms"] is None and box.sent_points == total
    drain.cancel()
    await box.close()
    await historian.close()


async def test_an_unreachable_server_is_a_retryable_failure(tmp_path):
    historian = InfluxHistorian("http://127.0.0.1:1", bucket="plant", timeout_s=1)
    with pytest.raises(SinkUnavailable, match="unreachable"):
        await historian.write([sample(CODE_PATH, T0, "x", DataType.String)])
    with pytest.raises(HistorianError, match="http"):
        InfluxHistorian("influxdb:8086", bucket="plant")
    await historian.close()


# ---------------------------------------------------------------------------- reading: InfluxQL on InfluxDB 1.6.7


@pytest.fixture(scope="module")
def loaded(influxd) -> dict:
    """A database loaded through /write with messy numeric series, text, booleans; written twice."""
    rng = random.Random(5)
    db = influxd.create_database("read" + uuid.uuid4().hex[:6])
    series = {
        "zdorovo/plant1/bakery/oven1/temperature": messy_series(rng, T0, 3 * HOUR, 900),
        "zdorovo/plant1/bakery/oven2/temperature": messy_series(rng, T0, 3 * HOUR, 400),
    }
    records = [r for path, points in series.items() for r in numeric_records(path, points)]
    records += to_records([
        sample(CODE_PATH, T0 + 1_000, MARKING_CODE, DataType.String),
        sample(CODE_PATH, T0 + 2_000, "second", DataType.String, Quality.BAD),
        sample("zdorovo/plant1/packaging/oatbar/filler/running", T0, True, DataType.Boolean),
        sample("zdorovo/plant1/packaging/oatbar/filler/running", T0 + 45_000, False, DataType.Boolean),
        sample("zdorovo/plant1/packaging/oatbar/filler/count", T0, 2**60 + 1, DataType.UInt64),
    ])  # fmt: skip
    lines = to_line_protocol(records)
    for i in range(0, len(lines), 500):
        influxd.write_lines(db, lines[i : i + 500])
    influxd.write_lines(db, lines[:300])  # a replay overwrites, it does not add
    return {"db": db, "series": series, "server": influxd}


async def test_influxql_buckets_match_brute_force(loaded):
    reader = InfluxHistorian(loaded["server"].url, bucket=loaded["db"])
    paths = list(loaded["series"])
    end = T0 + 3 * HOUR
    for bucket in (10_000, MIN, 5 * MIN, HOUR):
        result = await reader.query_buckets(paths, T0, end, bucket)
        for path, points in loaded["series"].items():
            assert result[path].tier is Tier.RAW and result[path].datatype is DataType.Double
            assert_buckets_match(result[path].buckets, brute_buckets(points, T0, end, bucket), f"{path} {bucket}")
    with pytest.raises(HistorianError, match="no rollup tiers"):
        await reader.query_buckets(paths, T0, end, MIN, tier=Tier.MINUTE)
    await reader.close()


async def test_influxql_raw_latest_text_and_many_paths(loaded):
    reader = InfluxHistorian(loaded["server"].url, bucket=loaded["db"])
    paths = list(loaded["series"])
    raw = await reader.query_raw([*paths, CODE_PATH, "no/such/path"], T0, T0 + 3 * HOUR)
    for path, points in loaded["series"].items():
        assert [(p.ts, p.value) for p in raw[path]] == sorted(points.items())  # once each despite the replay
    assert raw[CODE_PATH] == [Point(T0 + 1_000, MARKING_CODE, Quality.GOOD), Point(T0 + 2_000, "second", Quality.BAD)]
    assert raw["no/such/path"] == []
    limited = await reader.query_raw(paths, T0, T0 + 3 * HOUR, limit=3)
    assert [len(limited[p]) for p in paths] == [3, 3]
    latest = await reader.latest()
    last_ts = max(loaded["series"][paths[0]])
    assert latest[paths[0]] == Point(last_ts, loaded["series"][paths[0]][last_ts], Quality.GOOD)
    assert latest["zdorovo/plant1/packaging/oatbar/filler/count"].value == 2**60 + 1
    assert set(await reader.latest([CODE_PATH])) == {CODE_PATH}
    text = (await reader.query_buckets(CODE_PATH, T0, T0 + MIN, MIN))[CODE_PATH].buckets
    assert [(b.count, b.first, b.last, b.mean, b.twa) for b in text] == [(2, MARKING_CODE, "second", None, None)]
    running = "zdorovo/plant1/packaging/oatbar/filler/running"
    duty = (await reader.query_buckets(running, T0, T0 + MIN, MIN))[running].buckets
    assert [(b.count, b.first, b.last, b.twa) for b in duty] == [(2, True, False, 0.75)]
    listed = await reader.list_paths("zdorovo/plant1/packaging/")
    assert listed == {
        CODE_PATH: DataType.String,
        "zdorovo/plant1/packaging/oatbar/filler/count": DataType.UInt64,
        running: DataType.Boolean,
    }
    assert await reader.apply_retention() == {}
    await reader.close()
