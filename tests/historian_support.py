"""Helpers for the historian tests: a brute-force reference for every aggregate, and test data."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Any

from hub.historian import Bucket, Record
from hub.samples import Quality, Sample
from hub.sparkplug.payload import DataType

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a whole day, hour and minute
MIN = 60_000
HOUR = 3_600_000


def sample(
    path: str, ts: int, value: Any, datatype: DataType = DataType.Double, quality: Quality = Quality.GOOD
) -> Sample:
    """A Sample as the primary host would hand it over (Sparkplug address made up from the path)."""
    return Sample(path, value, ts, quality, datatype, "g", "n", None, path.rpartition("/")[2])


def numeric_records(path: str, points: Mapping[int, float], order: Iterable[int] | None = None) -> list[Record]:
    """Double records for `points` (ts -> value), in `order` if given."""
    return [Record(path, ts, points[ts], None, 192, int(DataType.Double)) for ts in (order or sorted(points))]


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


def brute_buckets(points: Mapping[int, Any], start: int, end: int, size: int) -> dict[int, tuple[Any, ...]]:
    """Every aggregate of every non-empty bucket in [start, end), straight from the definitions.

    Returns {bucket start: (count, min, max, mean, first, last, twa)}. The time-weighted mean integrates
    the step function piece by piece: on [a, b) the value of the latest sample at or before a holds.
    """
    items = sorted(points.items())
    out: dict[int, tuple[Any, ...]] = {}
    for b in range(start, end, size):
        inside = [(t, v) for t, v in items if b <= t < b + size]
        if not inside:
            continue
        nums = [_numeric(v) for _, v in inside if _numeric(v) is not None]
        # pieces: [b, t1), [t1, t2), ..., [tn, b + size)
        edges = [b] + [t for t, _ in inside] + [b + size]
        integral = 0.0
        covered = 0
        for left, right in zip(edges, edges[1:], strict=False):
            if right <= left:
                continue
            before = [v for t, v in items if t <= left]
            if not before:
                continue
            held = _numeric(before[-1])
            if held is None:
                continue
            integral += held * (right - left)
            covered += right - left
        out[b] = (
            len(inside),
            min(nums) if nums else None,
            max(nums) if nums else None,
            sum(nums) / len(nums) if nums else None,
            inside[0][1],
            inside[-1][1],
            integral / covered if covered else None,
        )
    return out


def as_tuple(bucket: Bucket) -> tuple[Any, ...]:
    """A Bucket in brute_buckets' shape."""
    return (bucket.count, bucket.min, bucket.max, bucket.mean, bucket.first, bucket.last, bucket.twa)


def assert_buckets_match(got: list[Bucket], expected: dict[int, tuple[Any, ...]], what: str = "") -> None:
    """Same buckets, same counts and first/last, floats equal to 1e-9 relative."""
    got_map = {b.start: as_tuple(b) for b in got}
    assert sorted(got_map) == sorted(expected), f"{what}: bucket starts differ"
    names = ("count", "min", "max", "mean", "first", "last", "twa")
    for start, want in expected.items():
        have = got_map[start]
        for name, h, w in zip(names, have, want, strict=True):
            if isinstance(w, float) and isinstance(h, float):
                assert math.isclose(h, w, rel_tol=1e-9, abs_tol=1e-9), f"{what}: bucket {start} {name}: {h} != {w}"
            else:
                assert h == w, f"{what}: bucket {start} {name}: {h!r} != {w!r}"


def messy_series(rng: random.Random, start: int, span: int, n: int) -> dict[int, float]:
    """`n` values at random ms inside [start, start + span): bursts and gaps, so many slots stay empty."""
    times: set[int] = set()
    while len(times) < n:
        centre = rng.randrange(start, start + span)
        for _ in range(rng.randint(1, 12)):
            t = centre + rng.randint(0, 20_000)
            if start <= t < start + span:
                times.add(t)
    return {t: round(rng.uniform(-50, 150), 3) for t in sorted(times)[:n]}


def arrival_batches(rng: random.Random, points: Mapping[int, float], late_share: float = 0.2) -> list[list[int]]:
    """The order a store-and-forward plant delivers `points` in: mostly in time order, a share late and
    shuffled, and some batches replayed (duplicates) — as timestamp lists."""
    times = sorted(points)
    late = set(rng.sample(times, int(len(times) * late_share)))
    on_time = [t for t in times if t not in late]
    batches: list[list[int]] = []
    i = 0
    while i < len(on_time):
        size = rng.randint(5, 80)
        batches.append(on_time[i : i + size])
        i += size
    late_list = list(late)
    rng.shuffle(late_list)
    for j in range(0, len(late_list), 25):
        # a late batch arrives after the on-time batches have moved past it
        batches.insert(rng.randint(len(batches) // 2, len(batches)), late_list[j : j + 25])
    batches += [rng.sample(times, min(30, len(times))) for _ in range(4)]
    return batches
