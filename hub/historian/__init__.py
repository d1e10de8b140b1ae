"""The historian interface: how Plantbus stores metric samples over time and reads them back.

Backends (`hub.historian.sql.SqlHistorian`, `hub.historian.influx.InfluxHistorian`, or a plugin's own) all
implement `Historian`. Every sink is fed through a durable `hub.historian.outbox.Outbox`, so what the
backends receive are `Record`s: a sample already reduced to storable columns.

Time is milliseconds since the epoch (UTC) everywhere. Ranges are half open, `[start, end)`.

Aggregation, per bucket (buckets are aligned on multiples of their size since the epoch, so hours and days
start on UTC boundaries; a query's `start` is rounded down and its `end` up to whole buckets):

* `count`: samples in the bucket, whatever their value (text, null and STALE samples included);
* `min`, `max`, `mean`: over the bucket's numeric samples (booleans count as 0/1); `first`/`last`: the
  value of the earliest/latest sample, decoded to its datatype;
* `twa`, the time-weighted mean of the step function the samples describe: each sample's value holds from
  its timestamp until the next sample of the same path, and no further than the bucket end; the interval
  from the bucket start to its first sample holds the value of the latest earlier sample (carried in from
  before the bucket, however old). `twa = integral / covered time`, where only time during which a numeric
  value holds counts as covered (before a path's first sample, or while a text/null value holds, nothing
  is known). For a boolean this is the fraction of the bucket it was true.

Only buckets holding at least one sample are returned.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from hub.errors import PlantbusError
from hub.samples import Quality, Sample
from hub.sparkplug.payload import (
    BYTES_TYPES,
    FLOAT_TYPES,
    INT_RANGES,
    STRING_TYPES,
    DataType,
    to_json_value,
)

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# Sparkplug's Quality property codes (192 good, 500 stale, 0 bad): compact, and what SCADA tools expect.
QUALITY_CODES: dict[Quality, int] = {Quality.GOOD: 192, Quality.STALE: 500, Quality.BAD: 0}
# Integers beyond 2**53 do not survive a 64-bit float; they are kept exactly in the text column as well.
_EXACT_FLOAT_INT = 2**53


class HistorianError(PlantbusError):
    """A historian cannot do what was asked (bad query, unknown backend, unusable URL)."""


class SinkUnavailable(HistorianError):
    """A backend is unreachable or failing for now; the outbox keeps the batch and retries with backoff."""


class BatchRejected(HistorianError):
    """A backend refuses a batch for good (bad data); the outbox sets it aside instead of retrying forever."""


class Tier(str, Enum):
    """Storage tiers of the SQL historian: raw samples and the incrementally maintained rollups."""

    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"

    @property
    def bucket_ms(self) -> int:
        """The rollup bucket size; 0 for raw samples."""
        return {Tier.RAW: 0, Tier.MINUTE: MINUTE_MS, Tier.HOUR: HOUR_MS}[self]


def choose_tier(bucket_ms: int) -> Tier:
    """The coarsest tier whose buckets tile `bucket_ms` exactly: hour, else minute, else raw."""
    if bucket_ms <= 0:
        raise HistorianError(f"bucket size must be a positive number of milliseconds, got {bucket_ms}")
    if bucket_ms % HOUR_MS == 0:
        return Tier.HOUR
    if bucket_ms % MINUTE_MS == 0:
        return Tier.MINUTE
    return Tier.RAW


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each tier keeps data, in milliseconds; None keeps it forever."""

    raw_ms: int | None = 30 * DAY_MS
    minute_ms: int | None = 365 * DAY_MS
    hour_ms: int | None = 3650 * DAY_MS

    def keep_ms(self, tier: Tier) -> int | None:
        """The retention of one tier."""
        return {Tier.RAW: self.raw_ms, Tier.MINUTE: self.minute_ms, Tier.HOUR: self.hour_ms}[tier]


class Record(NamedTuple):
    """A sample reduced to storable columns: what outboxes persist and backends write.

    `num` holds numbers and booleans (0/1) as floats; `text` holds strings, bytes (base64), JSON of arrays,
    data sets and templates, non-finite floats ("nan", "inf") and the exact digits of integers beyond 2**53.
    `quality` is the Sparkplug quality code, `datatype` the Sparkplug datatype id.
    """

    path: str
    ts: int
    num: float | None
    text: str | None
    quality: int
    datatype: int


def encode_value(datatype: DataType, value: Any) -> tuple[float | None, str | None]:
    """Split a metric value into the (num, text) columns of a `Record`."""
    if value is None:
        return None, None
    try:
        if datatype in FLOAT_TYPES:
            number = float(value)
            return (number, None) if math.isfinite(number) else (None, repr(number))
        if datatype is DataType.Boolean:
            return (1.0 if value else 0.0), None
        if datatype in INT_RANGES:
            integer = int(value)
            if -_EXACT_FLOAT_INT <= integer <= _EXACT_FLOAT_INT:
                return float(integer), None
            return float(integer), str(integer)
        if datatype in STRING_TYPES:
            return None, str(value)
        if datatype in BYTES_TYPES:
            return None, base64.b64encode(bytes(value)).decode("ascii")
    except (TypeError, ValueError, OverflowError):
        pass  # a value that does not fit its declared type is kept as JSON text below
    return None, json.dumps(to_json_value(datatype, value), separators=(",", ":"), default=str)


def decode_value(datatype: DataType | int | None, num: float | None, text: str | None) -> Any:
    """The value a `Record`'s columns stand for, in its datatype (arrays and data sets come back as JSON)."""
    if datatype is None:
        return num if num is not None else text
    datatype = DataType(datatype)
    if datatype in FLOAT_TYPES:
        return num if num is not None else (float(text) if text is not None else None)
    if datatype is DataType.Boolean:
        return None if num is None else num != 0
    if datatype in INT_RANGES:
        if text is not None:
            return int(text)
        return None if num is None else int(num)
    if datatype in STRING_TYPES:
        return text
    if datatype in BYTES_TYPES:
        return None if text is None else base64.b64decode(text)
    if text is None:
        return num
    try:
        return json.loads(text)
    except ValueError:
        return text


def to_record(sample: Sample) -> Record:
    """One sample as a `Record`."""
    num, text = encode_value(sample.datatype, sample.value)
    return Record(sample.path, int(sample.timestamp), num, text, QUALITY_CODES[sample.quality], int(sample.datatype))


def to_records(samples: Iterable[Sample]) -> list[Record]:
    """Samples as `Record`s; the hot path for numbers skips the general encoder."""
    out: list[Record] = []
    append = out.append
    codes = QUALITY_CODES
    floats = FLOAT_TYPES
    isfinite = math.isfinite
    for s in samples:
        value = s.value
        if s.datatype in floats and type(value) is float and isfinite(value):
            append(Record(s.path, s.timestamp, value, None, codes[s.quality], s.datatype.value))
        else:
            num, text = encode_value(s.datatype, value)
            append(Record(s.path, int(s.timestamp), num, text, codes[s.quality], int(s.datatype)))
    return out


_QUALITY_BY_CODE = {code: quality for quality, code in QUALITY_CODES.items()}


def quality_from_code(code: int | None) -> Quality:
    """The `Quality` a stored code stands for; unknown codes read as BAD, as in Sparkplug."""
    return _QUALITY_BY_CODE.get(code, Quality.BAD) if code is not None else Quality.GOOD


@dataclass(frozen=True, slots=True)
class Point:
    """One stored sample as a query returns it."""

    ts: int
    value: Any
    quality: Quality


@dataclass(frozen=True, slots=True)
class Bucket:
    """Aggregates of one bucket `[start, start + bucket_ms)`; see the module docstring for definitions."""

    start: int
    count: int
    min: float | None
    max: float | None
    mean: float | None
    first: Any
    last: Any
    twa: float | None


@dataclass(frozen=True, slots=True)
class BucketSeries:
    """The buckets of one path, with the tier that answered."""

    path: str
    datatype: DataType | None
    bucket_ms: int
    tier: Tier
    buckets: list[Bucket]


def bucket_range(start_ms: int, end_ms: int, bucket_ms: int) -> tuple[int, int]:
    """`[start, end)` widened to whole buckets."""
    if end_ms <= start_ms:
        raise HistorianError(f"query range is empty: end {end_ms} must be after start {start_ms}")
    start = start_ms - start_ms % bucket_ms
    end = end_ms if end_ms % bucket_ms == 0 else end_ms - end_ms % bucket_ms + bucket_ms
    return start, end


def paths_arg(paths: str | Sequence[str]) -> list[str]:
    """Accept one path or many; keep order, drop repeats."""
    if isinstance(paths, str):
        return [paths]
    return list(dict.fromkeys(paths))


def buckets_from_samples(
    rows: Sequence[tuple[int, float | None, str | None]],
    carry_num: float | None,
    bucket_ms: int,
    datatype: DataType | int | None,
) -> list[Bucket]:
    """Aggregate raw samples `(ts, num, text)`, sorted by ts, into buckets.

    `carry_num` is the numeric value of the latest sample before the first bucket (None if there is none
    or it was not numeric); it fills the start of the first bucket for the time-weighted mean.
    """
    out: list[Bucket] = []
    i = 0
    total = len(rows)
    held = carry_num
    while i < total:
        start = rows[i][0] - rows[i][0] % bucket_ms
        end = start + bucket_ms
        count = n_num = 0
        vmin = vmax = None
        vsum = integral = 0.0
        covered = 0
        cursor = start
        first = rows[i]
        last = first
        while i < total and rows[i][0] < end:
            row = rows[i]
            ts, num = row[0], row[1]
            if held is not None:
                integral += held * (ts - cursor)
                covered += ts - cursor
            cursor = ts
            held = num
            count += 1
            if num is not None:
                n_num += 1
                vsum += num
                if vmin is None or num < vmin:
                    vmin = num
                if vmax is None or num > vmax:
                    vmax = num
            last = row
            i += 1
        if held is not None:
            integral += held * (end - cursor)
            covered += end - cursor
        out.append(
            Bucket(
                start,
                count,
                vmin,
                vmax,
                vsum / n_num if n_num else None,
                decode_value(datatype, first[1], first[2]),
                decode_value(datatype, last[1], last[2]),
                integral / covered if covered else None,
            )
        )
    return out


class RollupRow(NamedTuple):
    """One stored rollup bucket (SQL tiers): everything needed to merge buckets into larger ones exactly.

    `tw_int` is the integral of the step function over the part of the bucket where a numeric value holds
    (carry-in from before the bucket included), `tw_dur` the length of that part in ms.
    """

    bucket: int
    n: int
    n_num: int
    vmin: float | None
    vmax: float | None
    vsum: float
    first_ts: int
    first_num: float | None
    first_text: str | None
    last_ts: int
    last_num: float | None
    last_text: str | None
    tw_int: float
    tw_dur: int


def buckets_from_rollups(
    rows: Sequence[RollupRow],
    carry_num: float | None,
    bucket_ms: int,
    tier_ms: int,
    datatype: DataType | int | None,
) -> list[Bucket]:
    """Merge rollup rows of size `tier_ms` (sorted) into buckets of `bucket_ms`, a multiple of it.

    Rollup slots without samples are not stored; over such a gap the last value of the previous stored
    slot holds (`carry_num` before the first), which keeps the time-weighted mean exact.
    """
    # A row without samples (a time-weighted correction whose bucket retention already removed) is ignored.
    rows = [row for row in rows if row.n]
    out: list[Bucket] = []
    i = 0
    total = len(rows)
    held = carry_num
    while i < total:
        start = rows[i].bucket - rows[i].bucket % bucket_ms
        end = start + bucket_ms
        count = n_num = 0
        vmin = vmax = None
        vsum = integral = 0.0
        covered = 0
        cursor = start
        first = rows[i]
        last = first
        while i < total and rows[i].bucket < end:
            row = rows[i]
            if held is not None and row.bucket > cursor:
                integral += held * (row.bucket - cursor)
                covered += row.bucket - cursor
            integral += row.tw_int
            covered += row.tw_dur
            cursor = row.bucket + tier_ms
            held = row.last_num
            count += row.n
            n_num += row.n_num
            vsum += row.vsum
            if row.vmin is not None and (vmin is None or row.vmin < vmin):
                vmin = row.vmin
            if row.vmax is not None and (vmax is None or row.vmax > vmax):
                vmax = row.vmax
            if row.first_ts < first.first_ts:
                first = row
            if row.last_ts >= last.last_ts:
                last = row
            i += 1
        if held is not None and end > cursor:
            integral += held * (end - cursor)
            covered += end - cursor
        out.append(
            Bucket(
                start,
                count,
                vmin,
                vmax,
                vsum / n_num if n_num else None,
                decode_value(datatype, first.first_num, first.first_text),
                decode_value(datatype, last.last_num, last.last_text),
                integral / covered if covered else None,
            )
        )
    return out


_T = TypeVar("_T")


async def run_exclusive(lock: asyncio.Lock, fn: Callable[..., _T], *args: Any) -> _T:
    """Run blocking `fn(*args)` in a worker thread while holding `lock`.

    A thread cannot be stopped: if the caller is cancelled meanwhile, the lock stays held until the
    thread is done, so the next caller never shares a database connection with a running thread.
    """
    async with lock:
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            while not task.done():
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    continue
                except Exception:  # noqa: BLE001 — the caller is gone; the outcome has nobody to go to
                    break
            raise


@runtime_checkable
class Historian(Protocol):
    """What every time-series backend offers. All methods that touch storage are async."""

    name: str

    async def open(self) -> None:
        """Prepare the backend (create tables); may connect lazily. Raises HistorianError on a bad URL."""

    async def close(self) -> None:
        """Release connections."""

    async def write(self, samples: Sequence[Sample]) -> int:
        """Store samples directly (no outbox); returns how many were new."""

    async def write_records(self, records: Sequence[Record]) -> int:
        """Store records, idempotently: a (path, ts) stored before is not stored again. Returns how many
        were new where the backend can tell, else how many were sent. Raises SinkUnavailable or BatchRejected."""

    async def query_raw(
        self, paths: str | Sequence[str], start_ms: int, end_ms: int, *, limit: int | None = None
    ) -> dict[str, list[Point]]:
        """Stored samples of each path with start <= ts < end, oldest first (at most `limit` per path)."""

    async def query_buckets(
        self,
        paths: str | Sequence[str],
        start_ms: int,
        end_ms: int,
        bucket_ms: int,
        *,
        tier: Tier | None = None,
    ) -> dict[str, BucketSeries]:
        """Aggregates per bucket of each path; the backend picks the tier unless one is forced."""

    async def latest(self, paths: str | Sequence[str] | None = None) -> dict[str, Point]:
        """The newest stored sample of each path (of every path when `paths` is None)."""

    async def list_paths(self, prefix: str = "") -> dict[str, DataType | None]:
        """Known paths starting with `prefix`, with their datatype where known."""

    async def apply_retention(self, now_ms: int | None = None) -> dict[Tier, int]:
        """Delete what each tier's retention no longer keeps; returns rows deleted per tier."""

    def diagnostics(self) -> dict[str, Any]:
        """Counters for the console and the status topic."""


__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "MINUTE_MS",
    "QUALITY_CODES",
    "BatchRejected",
    "Bucket",
    "BucketSeries",
    "Historian",
    "HistorianError",
    "Point",
    "Record",
    "Retention",
    "RollupRow",
    "SinkUnavailable",
    "Tier",
    "bucket_range",
    "buckets_from_rollups",
    "buckets_from_samples",
    "choose_tier",
    "decode_value",
    "encode_value",
    "paths_arg",
    "quality_from_code",
    "run_exclusive",
    "to_record",
    "to_records",
]
