"""The InfluxDB historian: writes through the v2 write API, reads with InfluxQL on the v1-compatible `/query`.

Writes use influxdb-client's synchronous `write_api` on `/api/v2/write` (InfluxDB 2.x and 3.x, and
servers that speak it such as VictoriaMetrics); batching and retries are the outbox's job, so a failure
reaches it at once instead of hiding in the client's own buffer. Reads use InfluxQL over `/query`, which
InfluxDB 1.x answers natively, 2.x through a DBRP mapping (`database`, by default the bucket's name) and
3.x directly.

Schema, one measurement (default `plantbus`):

* tag `path` — the full UNS path, the only tag. Series cardinality is the number of metrics, which the
  plant bounds; path segments as separate tags would not lower it and depend on how deep a mapping is
  (`"path" =~ /^zdorovo\\/plant1\\/packaging\\//` selects an area). Values are never tags: a marking code
  or a serial number as a tag would create a series per code and exhaust the index;
* fields `value` (float: numbers, booleans as 0/1), `value_str` (strings, JSON of arrays and data sets,
  exact digits of integers beyond 2**53), `quality` (Sparkplug code, integer) and `datatype` (Sparkplug
  datatype id, integer) — `quality` is always written, so `count(quality)` counts every sample.

A point is identified by series and time, so a replayed batch overwrites itself (idempotent). Retention
and downsampling are InfluxDB's own (bucket retention, tasks or continuous queries); `apply_retention`
does nothing here. Bucket queries aggregate on the server; only the time-weighted mean is computed here,
from the raw `value`s of the range and the sample before it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from hub.historian import (
    BatchRejected,
    Bucket,
    BucketSeries,
    HistorianError,
    Point,
    Record,
    SinkUnavailable,
    Tier,
    bucket_range,
    buckets_from_samples,
    decode_value,
    paths_arg,
    quality_from_code,
    run_exclusive,
    to_records,
)
from hub.samples import Sample
from hub.sparkplug.payload import STRING_TYPES, DataType, now_ms

log = logging.getLogger(__name__)

_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_ESCAPE_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_ESCAPE_FIELD_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})
_PATHS_PER_QUERY = 200


def _escape_tag(value: str) -> str:
    escaped = value.translate(_ESCAPE_TAG)
    # A trailing backslash would escape the separator after it.
    return escaped + " " if escaped.endswith("\\") else escaped


def to_line_protocol(records: Iterable[Record], measurement: str = "plantbus") -> list[str]:
    """Records as InfluxDB line protocol at millisecond precision: tag `path`, everything else fields."""
    meas = measurement.translate(_ESCAPE_MEASUREMENT)
    tags: dict[str, str] = {}
    out: list[str] = []
    append = out.append
    for path, ts, num, text, quality, datatype in records:
        tag = tags.get(path)
        if tag is None:
            tag = tags[path] = f"{meas},path={_escape_tag(path)} "
        if text is None:
            if num is None:
                append(f"{tag}quality={quality}i,datatype={datatype}i {ts}")
            else:
                append(f"{tag}value={num!r},quality={quality}i,datatype={datatype}i {ts}")
        else:
            value = f'value_str="{text.translate(_ESCAPE_FIELD_STRING)}"'
            if num is not None:
                value = f"value={num!r},{value}"
            append(f"{tag}{value},quality={quality}i,datatype={datatype}i {ts}")
    return out


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _path_filter(paths: Sequence[str]) -> str:
    return "(" + " OR ".join(f'"path" = {_literal(p)}' for p in paths) + ")"


class InfluxHistorian:
    """Samples as points in one InfluxDB measurement (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        bucket: str,
        org: str = "",
        token: str | None = None,
        database: str | None = None,
        retention_policy: str | None = None,
        measurement: str = "plantbus",
        timeout_s: float = 10.0,
        name: str = "influxdb",
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise HistorianError(
                f"InfluxDB URL {url!r} must start with http:// or https:// (e.g. http://influxdb:8086)"
            )
        if not bucket:
            raise HistorianError("InfluxDB historian needs a bucket (the database name on InfluxDB 1.x)")
        self.name = name
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.org = org
        self.database = database or bucket
        self.retention_policy = retention_policy
        self.measurement = measurement
        self.timeout_s = timeout_s
        self._token = token
        self._client: Any = None
        self._write_api: Any = None
        self._http: Any = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self.sent_points = 0
        self.batches = 0
        self.last_write_ms: int | None = None

    async def open(self) -> None:
        """Create the clients; nothing is contacted until the first write or query."""
        import urllib3
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        if self._client is None:
            # retries=False: the outbox owns retrying, and must see each failure.
            self._client = InfluxDBClient(
                url=self.url, token=self._token or "", org=self.org, timeout=int(self.timeout_s * 1000), retries=False
            )
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
            self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=self.timeout_s), retries=False)

    async def close(self) -> None:
        """Close the clients."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
        if self._http is not None:
            self._http.clear()
            self._http = None

    # ------------------------------------------------------------------ writing

    async def write(self, samples: Sequence[Sample]) -> int:
        """Write samples directly (no outbox); returns how many were sent."""
        return await self.write_records(to_records(samples))

    async def write_records(self, records: Sequence[Record]) -> int:
        """Write records as line protocol through `/api/v2/write`; returns how many were sent."""
        if not records:
            return 0
        if self._client is None:
            await self.open()
        lines = to_line_protocol(records, self.measurement)
        await run_exclusive(self._write_lock, self._write_sync, lines)
        self.sent_points += len(lines)
        self.batches += 1
        self.last_write_ms = now_ms()
        return len(lines)

    def _write_sync(self, lines: list[str]) -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=lines, write_precision=WritePrecision.MS)
        except ApiException as exc:
            raw = exc.body or b""
            body = raw.decode("utf-8", "replace")[:300] if isinstance(raw, bytes) else str(raw)[:300]
            if exc.status in (400, 413, 422):
                raise BatchRejected(
                    f"InfluxDB {self.url} refused {len(lines)} points (HTTP {exc.status}): {body}"
                    + (" — lower the backend's outbox batch_points" if exc.status == 413 else "")
                ) from None
            hint = " — check the token (token_env) and the org" if exc.status in (401, 403) else ""
            hint = hint or (" — check that the bucket exists" if exc.status == 404 else "")
            raise SinkUnavailable(f"InfluxDB {self.url} answered HTTP {exc.status}: {body}{hint}") from None
        except Exception as exc:  # noqa: BLE001 — connection refused, timeouts, DNS: all mean "not now"
            raise SinkUnavailable(f"InfluxDB {self.url} is unreachable: {type(exc).__name__}: {exc}") from None

    # ------------------------------------------------------------------ reading

    def _query_sync(self, statement: str) -> list[dict[str, Any]]:
        """Run one InfluxQL statement; the series of its result, chunks joined."""
        fields = {"q": statement, "db": self.database, "epoch": "ms", "chunked": "true", "chunk_size": "10000"}
        if self.retention_policy:
            fields["rp"] = self.retention_policy
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Token {self._token}"
        try:
            response = self._http.request_encode_body(
                "POST", f"{self.url}/query", fields=fields, headers=headers, encode_multipart=False
            )
        except Exception as exc:  # noqa: BLE001 — connection refused, timeouts
            raise SinkUnavailable(
                f"InfluxDB {self.url} is unreachable for queries: {type(exc).__name__}: {exc}"
            ) from None
        text = response.data.decode("utf-8", errors="replace")
        if response.status != 200:
            raise HistorianError(
                f"InfluxDB {self.url} /query answered HTTP {response.status}: {text[:300]} — check `database` "
                "(on InfluxDB 2.x a DBRP mapping of the bucket) and the token"
            )
        series: dict[tuple[str, str], dict[str, Any]] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            for result in json.loads(line).get("results", []):
                if "error" in result:
                    raise HistorianError(f"InfluxDB query failed: {result['error']} (query: {statement[:200]})")
                for item in result.get("series", []):
                    key = (item.get("name", ""), json.dumps(item.get("tags", {}), sort_keys=True))
                    if key in series:
                        series[key]["values"].extend(item.get("values", []))
                    else:
                        series[key] = {**item, "values": list(item.get("values", []))}
        return list(series.values())

    async def _query(self, statements: list[str]) -> list[dict[str, Any]]:
        if self._client is None:
            await self.open()
        out: list[dict[str, Any]] = []
        for statement in statements:
            out += await run_exclusive(self._read_lock, self._query_sync, statement)
        return out

    def _chunks(self, paths: list[str]) -> list[list[str]]:
        return [paths[i : i + _PATHS_PER_QUERY] for i in range(0, len(paths), _PATHS_PER_QUERY)]

    @staticmethod
    def _rows(item: dict[str, Any]) -> list[dict[str, Any]]:
        columns = item["columns"]
        return [dict(zip(columns, values, strict=True)) for values in item["values"]]

    async def query_raw(
        self, paths: str | Sequence[str], start_ms: int, end_ms: int, *, limit: int | None = None
    ) -> dict[str, list[Point]]:
        """Stored points of each path with start <= ts < end, oldest first."""
        wanted = paths_arg(paths)
        meas = _identifier(self.measurement)
        statements = [
            f'SELECT "value", "value_str", "quality", "datatype" FROM {meas} WHERE {_path_filter(chunk)}'
            f" AND time >= {int(start_ms)}ms AND time < {int(end_ms)}ms GROUP BY \"path\" ORDER BY time ASC"
            + (f" LIMIT {int(limit)}" if limit is not None else "")
            for chunk in self._chunks(wanted)
        ]
        out: dict[str, list[Point]] = {path: [] for path in wanted}
        for item in await self._query(statements):
            path = item.get("tags", {}).get("path")
            if path not in out:
                continue
            out[path] = [
                Point(
                    row["time"],
                    decode_value(row["datatype"], _float(row["value"]), row["value_str"]),
                    quality_from_code(row["quality"]),
                )
                for row in self._rows(item)
            ]
        return out

    async def query_buckets(
        self,
        paths: str | Sequence[str],
        start_ms: int,
        end_ms: int,
        bucket_ms: int,
        *,
        tier: Tier | None = None,
        twa: bool = True,
    ) -> dict[str, BucketSeries]:
        """Aggregates per bucket from InfluxQL `GROUP BY time()`; the time-weighted mean from raw values."""
        if tier not in (None, Tier.RAW):
            raise HistorianError("the InfluxDB historian keeps no rollup tiers of its own; leave `tier` unset")
        if bucket_ms <= 0:
            raise HistorianError(f"bucket size must be a positive number of milliseconds, got {bucket_ms}")
        wanted = paths_arg(paths)
        start, end = bucket_range(start_ms, end_ms, bucket_ms)
        meas = _identifier(self.measurement)
        window = f"time >= {start}ms AND time < {end}ms"
        statements = [
            'SELECT count("quality") AS n, count("value") AS n_num, min("value") AS vmin, max("value") AS vmax,'
            ' mean("value") AS vmean, first("value") AS fv, last("value") AS lv, first("value_str") AS fs,'
            f' last("value_str") AS ls, last("datatype") AS dt FROM {meas} WHERE {_path_filter(chunk)} AND {window}'
            f' GROUP BY time({int(bucket_ms)}ms), "path" fill(none)'
            for chunk in self._chunks(wanted)
        ]
        aggregated: dict[str, list[dict[str, Any]]] = {}
        for item in await self._query(statements):
            path = item.get("tags", {}).get("path")
            if path in wanted:
                aggregated[path] = self._rows(item)
        weighted: dict[str, dict[int, float | None]] = {}
        if twa and aggregated:
            weighted = await self._time_weighted(list(aggregated), start, end, bucket_ms)
        out: dict[str, BucketSeries] = {}
        for path in wanted:
            rows = aggregated.get(path, [])
            datatype = next((DataType(r["dt"]) for r in reversed(rows) if r.get("dt") is not None), None)
            textual = datatype in STRING_TYPES
            buckets = []
            for r in rows:
                if not r["n"]:
                    continue
                # Exact big integers live in value_str, but first/last of two fields may come from different
                # points, so numeric series decode from `value` alone.
                if textual:
                    first, last = decode_value(datatype, None, r["fs"]), decode_value(datatype, None, r["ls"])
                else:
                    first = decode_value(datatype, _float(r["fv"]), None)
                    last = decode_value(datatype, _float(r["lv"]), None)
                buckets.append(
                    Bucket(
                        r["time"],
                        int(r["n"]),
                        _float(r["vmin"]),
                        _float(r["vmax"]),
                        _float(r["vmean"]) if r["n_num"] else None,
                        first,
                        last,
                        weighted.get(path, {}).get(r["time"]),
                    )
                )
            out[path] = BucketSeries(path, datatype, bucket_ms, Tier.RAW, buckets)
        return out

    async def _time_weighted(
        self, paths: list[str], start: int, end: int, bucket_ms: int
    ) -> dict[str, dict[int, float | None]]:
        meas = _identifier(self.measurement)
        raw_statements = []
        carry_statements = []
        for chunk in self._chunks(paths):
            raw_statements.append(
                f'SELECT "value", "quality" FROM {meas} WHERE {_path_filter(chunk)} AND time >= {start}ms'
                f' AND time < {end}ms GROUP BY "path" ORDER BY time ASC'
            )
            carry_statements.append(
                f'SELECT "value", "quality" FROM {meas} WHERE {_path_filter(chunk)} AND time < {start}ms'
                ' GROUP BY "path" ORDER BY time DESC LIMIT 1'
            )
        carry: dict[str, float | None] = {}
        for item in await self._query(carry_statements):
            rows = self._rows(item)
            if rows:
                carry[item["tags"]["path"]] = _float(rows[0]["value"])
        out: dict[str, dict[int, float | None]] = {}
        for item in await self._query(raw_statements):
            path = item["tags"]["path"]
            samples = [(row["time"], _float(row["value"]), None) for row in self._rows(item)]
            out[path] = {b.start: b.twa for b in buckets_from_samples(samples, carry.get(path), bucket_ms, None)}
        return out

    async def latest(self, paths: str | Sequence[str] | None = None) -> dict[str, Point]:
        """The newest point of each path (of every path when None)."""
        meas = _identifier(self.measurement)
        if paths is None:
            statements = [f'SELECT * FROM {meas} GROUP BY "path" ORDER BY time DESC LIMIT 1']
        else:
            statements = [
                f'SELECT * FROM {meas} WHERE {_path_filter(chunk)} GROUP BY "path" ORDER BY time DESC LIMIT 1'
                for chunk in self._chunks(paths_arg(paths))
            ]
        out: dict[str, Point] = {}
        for item in await self._query(statements):
            rows = self._rows(item)
            if rows:
                row = rows[0]
                out[item["tags"]["path"]] = Point(
                    row["time"],
                    decode_value(row.get("datatype"), _float(row.get("value")), row.get("value_str")),
                    quality_from_code(row.get("quality")),
                )
        return out

    async def list_paths(self, prefix: str = "") -> dict[str, DataType | None]:
        """Every path in the measurement starting with `prefix`, with its latest datatype."""
        meas = _identifier(self.measurement)
        out: dict[str, DataType | None] = {}
        for item in await self._query([f'SELECT last("datatype") FROM {meas} GROUP BY "path"']):
            path = item["tags"]["path"]
            if path.startswith(prefix):
                rows = self._rows(item)
                out[path] = DataType(rows[0]["last"]) if rows and rows[0]["last"] is not None else None
        return dict(sorted(out.items()))

    async def apply_retention(self, now_ms: int | None = None) -> dict[Tier, int]:
        """Nothing to do: InfluxDB applies its bucket's retention itself."""
        return {}

    def diagnostics(self) -> dict[str, Any]:
        """Write counters and where the data goes."""
        return {
            "type": "influxdb",
            "url": self.url,
            "bucket": self.bucket,
            "org": self.org,
            "measurement": self.measurement,
            "sent_points": self.sent_points,
            "batches": self.batches,
            "last_write_ms": self.last_write_ms,
        }


def _float(value: Any) -> float | None:
    # InfluxDB's JSON prints whole floats without a fraction (10 for 10.0).
    return None if value is None else float(value)
