"""The SQL historian, Plantbus's default: an SQLite file (WAL) or a PostgreSQL database.

Tables (prefixed `historian_` so they can share a database with the relational model):

* `historian_paths` — path -> id and the path's latest datatype;
* `historian_samples` — one row per (path_id, ts), the primary key (a clustered WITHOUT ROWID B-tree in
  SQLite), so a path's time range is one index range and a replayed sample is a key conflict;
* `historian_rollup_1m`, `historian_rollup_1h` — per (path_id, bucket): count, numeric count, min, max,
  sum, first and last (time and value) and the time-weighted integral with the time it covers.

Rollups are maintained in the same transaction as the raw insert, incrementally: each new sample changes
its own bucket's counters and the step function from its timestamp to the next sample's (possibly in a
later bucket, for a late sample). Only samples that are really new are rolled up: the writer knows each
path's newest stored sample, so a batch that lies entirely after it (the normal case) needs no lookups, and
anything else (late, store-and-forward, replayed) is checked against the stored rows of its time range
first. The raw insert's row count proves which case held; a mismatch (another writer, a commit whose
acknowledgement was lost) rolls back and redoes the batch the careful way. So a replay never counts twice.

One process should write a given path (several hubs sharing PostgreSQL write disjoint Sparkplug groups).
Blocking database work runs in worker threads (`asyncio.to_thread`), one writer and one reader connection.
"""

from __future__ import annotations

import abc

import asyncio
import bisect
import logging
import sqlite3
import time
from collections.abc import Sequence
from operator import itemgetter, mul, sub
from pathlib import Path
from typing import Any

from hub.historian import (
    HOUR_MS,
    MINUTE_MS,
    BatchRejected,
    BucketSeries,
    HistorianError,
    Point,
    Record,
    Retention,
    RollupRow,
    SinkUnavailable,
    Tier,
    bucket_range,
    buckets_from_rollups,
    buckets_from_samples,
    choose_tier,
    decode_value,
    paths_arg,
    quality_from_code,
    run_exclusive,
    to_records,
)
from hub.samples import Sample
from hub.sparkplug.payload import DataType, now_ms

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
ROLLUP_TABLES = {Tier.MINUTE: "historian_rollup_1m", Tier.HOUR: "historian_rollup_1h"}
_ROLLUP_COLUMNS = (
    "path_id, bucket, n, n_num, vmin, vmax, vsum, first_ts, first_num, first_text, "
    "last_ts, last_num, last_text, tw_int, tw_dur"
)
_UNKNOWN = object()
_TS = itemgetter(1)


class _Inconsistent(Exception):
    """The raw insert stored fewer rows than the writer expected: its view of the table was stale."""


# ---------------------------------------------------------------------------- rollup arithmetic


def _accumulate(
    deltas: dict[tuple[int, int], list[Any]],
    pid: int,
    size: int,
    ts: int,
    num: float | None,
    text: str | None,
    p_ts: int | None,
    p_num: float | None,
    n_ts: int | None,
) -> None:
    """Fold one new sample into the pending rollup deltas of one tier.

    `p_ts`/`p_num` is the path's stored sample just before `ts` (None if none), `n_ts` the one just after.
    Before the insert, the step function held `p_num` on [ts, n_ts); afterwards it holds `num` there. That
    interval touches the new sample's bucket and, when the next sample lies in a later bucket, the start of
    that bucket (buckets in between hold no samples and are not stored). A bucket is already stored exactly
    when the previous or the next sample lies in it.
    """
    bucket = ts - ts % size
    end = bucket + size
    key = (pid, bucket)
    d = deltas.get(key)
    if d is None:
        # n, n_num, vmin, vmax, vsum, first_ts, first_num, first_text, last_ts, last_num, last_text, tw_int, tw_dur
        d = deltas[key] = [0, 0, None, None, 0.0, None, None, None, None, None, None, 0.0, 0]
    if n_ts is not None and n_ts < end:
        seg = n_ts - ts
        stored = True
    else:
        seg = end - ts
        stored = p_ts is not None and p_ts >= bucket
    if stored:
        if num is not None:
            d[11] += num * seg
            d[12] += seg
        if p_num is not None:
            d[11] -= p_num * seg
            d[12] -= seg
    else:
        # A bucket appears: its start holds the value carried in from the previous sample.
        if p_num is not None:
            d[11] += p_num * (ts - bucket)
            d[12] += ts - bucket
        if num is not None:
            d[11] += num * seg
            d[12] += seg
    d[0] += 1
    if num is not None:
        d[1] += 1
        d[4] += num
        if d[2] is None or num < d[2]:
            d[2] = num
        if d[3] is None or num > d[3]:
            d[3] = num
    if d[5] is None or ts < d[5]:
        d[5], d[6], d[7] = ts, num, text
    if d[8] is None or ts > d[8]:
        d[8], d[9], d[10] = ts, num, text
    if n_ts is not None and n_ts >= end:
        nb = n_ts - n_ts % size
        key = (pid, nb)
        d = deltas.get(key)
        if d is None:
            d = deltas[key] = [0, 0, None, None, 0.0, None, None, None, None, None, None, 0.0, 0]
        seg = n_ts - nb
        if num is not None:
            d[11] += num * seg
            d[12] += seg
        if p_num is not None:
            d[11] -= p_num * seg
            d[12] -= seg


def _fold_appended(
    deltas: dict[tuple[int, int], list[Any]],
    pid: int,
    size: int,
    group: list[Record],
    tss: list[int],
    nums: list[float | None],
    p_ts: int | None,
    p_num: float | None,
) -> None:
    """`_accumulate` for a run of samples that all follow the stored ones, a bucket at a time (the hot path).

    Within a bucket the new samples tile [first, end) between them; before them only `p_num` held there,
    and only if the bucket already existed (else the bucket is new and its start carries `p_num` in).
    """
    total = len(tss)
    i = 0
    while i < total:
        t0 = tss[i]
        bucket = t0 - t0 % size
        end = bucket + size
        j = bisect.bisect_left(tss, end, i + 1)
        run_num = nums[i:j]
        if None in run_num:
            # Text or null values: the general path, sample by sample.
            for k in range(i, j):
                r = group[k]
                _accumulate(deltas, pid, size, r[1], r[2], r[3], p_ts, p_num, None)
                p_ts, p_num = r[1], r[2]
            i = j
            continue
        key = (pid, bucket)
        d = deltas.get(key)
        if d is None:
            d = deltas[key] = [0, 0, None, None, 0.0, None, None, None, None, None, None, 0.0, 0]
        run_ts = tss[i:j]
        integral = sum(map(mul, run_num, map(sub, run_ts[1:], run_ts))) + run_num[-1] * (end - run_ts[-1])
        covered = end - t0
        if p_num is not None:
            if p_ts is not None and p_ts >= bucket:
                integral -= p_num * covered
                covered = 0
            else:
                integral += p_num * (t0 - bucket)
                covered += t0 - bucket
        d[11] += integral
        d[12] += covered
        d[0] += j - i
        d[1] += j - i
        d[4] += sum(run_num)
        low, high = min(run_num), max(run_num)
        if d[2] is None or low < d[2]:
            d[2] = low
        if d[3] is None or high > d[3]:
            d[3] = high
        if d[5] is None or t0 < d[5]:
            d[5], d[6], d[7] = t0, run_num[0], group[i][3]
        if d[8] is None or run_ts[-1] > d[8]:
            d[8], d[9], d[10] = run_ts[-1], run_num[-1], group[j - 1][3]
        p_ts, p_num = run_ts[-1], run_num[-1]
        i = j


def _newest_per_timestamp(group: list[Record]) -> list[Record]:
    """A sorted batch with one record per timestamp: the one that arrived last, the newest reading of that ms."""
    if len(group) < 2 or len(set(map(_TS, group))) == len(group):
        return group  # the hot path: no timestamp twice, checked at C speed
    out: list[Record] = []
    for record in group:
        if out and out[-1][1] == record[1]:
            out[-1] = record
        else:
            out.append(record)
    return out


def _bucket_from_samples(
    bucket: int, size: int, samples: list[tuple[int, float | None, str | None]], carried: float | None
) -> list[Any]:
    """One rollup row (without path and bucket) computed from all raw samples of the bucket, oldest first, and
    the value carried in from the sample before it; the same figures `_accumulate` builds up incrementally."""
    nums = [s[1] for s in samples if s[1] is not None]
    tw_int, tw_dur = 0.0, 0
    if carried is not None:
        tw_int += carried * (samples[0][0] - bucket)
        tw_dur += samples[0][0] - bucket
    for i, (ts, num, _) in enumerate(samples):
        if num is not None:
            seg = (samples[i + 1][0] if i + 1 < len(samples) else bucket + size) - ts
            tw_int += num * seg
            tw_dur += seg
    first, last = samples[0], samples[-1]
    return [
        len(samples), len(nums), min(nums, default=None), max(nums, default=None), float(sum(nums)),
        first[0], first[1], first[2], last[0], last[1], last[2], tw_int, tw_dur,
    ]


def _rollup_rows(deltas: dict[tuple[int, int], list[Any]]) -> list[tuple[Any, ...]]:
    return [(pid, bucket, *d) for (pid, bucket), d in deltas.items()]


# ---------------------------------------------------------------------------- dialects


class _Store(abc.ABC):
    """What differs between SQLite and PostgreSQL: connections, DDL, bulk paths and error classes."""

    kind = ""
    ph = "?"

    @abc.abstractmethod
    def connect(self, *, reader: bool) -> Any:
        """A new DB-API connection (read-only where the backend allows it when `reader`)."""

    @abc.abstractmethod
    def create_schema(self, conn: Any) -> None:
        """Create the tables and indexes if they are missing."""

    def begin(self, conn: Any) -> None:
        """Start a write transaction."""

    @abc.abstractmethod
    def insert_samples(self, conn: Any, rows: list[tuple[Any, ...]]) -> int:
        """Insert raw rows, skipping (path, ts) already stored; return how many were new."""

    @abc.abstractmethod
    def upsert_rollups(self, conn: Any, tier: Tier, rows: list[tuple[Any, ...]]) -> None:
        """Merge partial aggregates into a rollup tier."""

    @abc.abstractmethod
    def classify(self, exc: BaseException) -> BaseException:
        """Map a driver error to SinkUnavailable (retry) or BatchRejected (dead-letter)."""

    def is_broken(self, conn: Any) -> bool:
        return False

    @abc.abstractmethod
    def describe(self) -> str:
        """The store for logs and diagnostics, password hidden."""

    def sql(self, statement: str) -> str:
        """Write statements with `?` placeholders; PostgreSQL gets `%s`."""
        return statement if self.ph == "?" else statement.replace("?", "%s")


def _upsert_sql(table: str, least: str, greatest: str, ph: str) -> str:
    t = table
    marks = ", ".join([ph] * 15)
    return (
        f"INSERT INTO {t} ({_ROLLUP_COLUMNS}) VALUES ({marks}) ON CONFLICT (path_id, bucket) DO UPDATE SET "
        f"n = {t}.n + excluded.n, n_num = {t}.n_num + excluded.n_num, "
        f"vmin = {least.format(a=f'{t}.vmin', b='excluded.vmin')}, "
        f"vmax = {greatest.format(a=f'{t}.vmax', b='excluded.vmax')}, "
        f"vsum = {t}.vsum + excluded.vsum, "
        + ", ".join(
            f"first_{c} = CASE WHEN {t}.first_ts IS NULL OR excluded.first_ts < {t}.first_ts "
            f"THEN excluded.first_{c} ELSE {t}.first_{c} END"
            for c in ("num", "text", "ts")
        )
        + ", "
        + ", ".join(
            f"last_{c} = CASE WHEN {t}.last_ts IS NULL OR excluded.last_ts > {t}.last_ts "
            f"THEN excluded.last_{c} ELSE {t}.last_{c} END"
            for c in ("num", "text", "ts")
        )
        + f", tw_int = {t}.tw_int + excluded.tw_int, tw_dur = {t}.tw_dur + excluded.tw_dur"
    )


class _SqliteStore(_Store):
    kind = "sqlite"
    ph = "?"

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        # SQLite's scalar min()/max() return NULL if any argument is NULL; the coalesces make NULL mean "none".
        self._upserts = {
            tier: _upsert_sql(
                table, "min(coalesce({b}, {a}), coalesce({a}, {b}))", "max(coalesce({b}, {a}), coalesce({a}, {b}))", "?"
            )
            for tier, table in ROLLUP_TABLES.items()
        }

    def connect(self, *, reader: bool) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the outbox forgets the batch, so a power loss cannot lose it.
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA cache_size=-65536")
        if reader:
            conn.execute("PRAGMA query_only=1")
        return conn

    def create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS historian_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS historian_paths ("
                " id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, datatype INTEGER NOT NULL)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS historian_samples ("
                " path_id INTEGER NOT NULL, ts INTEGER NOT NULL, num REAL, txt TEXT, quality INTEGER NOT NULL,"
                " PRIMARY KEY (path_id, ts)) WITHOUT ROWID"
            )
            for table in ROLLUP_TABLES.values():
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} ("
                    " path_id INTEGER NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL, n_num INTEGER NOT NULL,"
                    " vmin REAL, vmax REAL, vsum REAL NOT NULL, first_ts INTEGER, first_num REAL, first_text TEXT,"
                    " last_ts INTEGER, last_num REAL, last_text TEXT, tw_int REAL NOT NULL, tw_dur INTEGER NOT NULL,"
                    " PRIMARY KEY (path_id, bucket)) WITHOUT ROWID"
                )
            conn.execute("INSERT OR IGNORE INTO historian_meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def insert_samples(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        cur = conn.executemany(
            "INSERT INTO historian_samples (path_id, ts, num, txt, quality) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (path_id, ts) DO NOTHING",
            rows,
        )
        return cur.rowcount

    def upsert_rollups(self, conn: sqlite3.Connection, tier: Tier, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            conn.executemany(self._upserts[tier], rows)

    def classify(self, exc: BaseException) -> BaseException:
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError)):
            return BatchRejected(f"SQLite historian {self.path} refused a batch: {exc}")
        if isinstance(exc, sqlite3.Error):
            return SinkUnavailable(
                f"SQLite historian {self.path} cannot write: {exc} — check free disk space and file permissions"
            )
        return exc

    def describe(self) -> str:
        return f"sqlite:///{self.path}"


class _PostgresStore(_Store):
    kind = "postgresql"
    ph = "%s"

    def __init__(self, url: Any, password: str | None) -> None:
        from psycopg.conninfo import make_conninfo

        self.url = url
        params: dict[str, Any] = {
            "host": url.host or "127.0.0.1",
            "port": url.port or 5432,
            "dbname": url.database or "postgres",
            "connect_timeout": 5,
            "application_name": "plantbus-historian",
        }
        if url.username:
            params["user"] = url.username
        if password or url.password:
            params["password"] = password or url.password
        params.update({k: v for k, v in url.query.items() if isinstance(v, str)})
        self.conninfo = make_conninfo(**params)
        self._upserts = {
            tier: _upsert_sql(table, "LEAST({a}, {b})", "GREATEST({a}, {b})", "%s").replace(
                f"VALUES ({', '.join(['%s'] * 15)})",
                f"SELECT {_ROLLUP_COLUMNS} FROM historian_stage_{tier.name.lower()}",
            )
            for tier, table in ROLLUP_TABLES.items()
        }

    def connect(self, *, reader: bool) -> Any:
        import psycopg

        conn = psycopg.connect(self.conninfo, autocommit=reader)
        if not reader:
            with conn.cursor() as cur:
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS historian_stage_samples (path_id INTEGER, ts BIGINT,"
                    " num DOUBLE PRECISION, txt TEXT, quality SMALLINT) ON COMMIT DELETE ROWS"
                )
                for tier in ROLLUP_TABLES:
                    cur.execute(
                        f"CREATE TEMP TABLE IF NOT EXISTS historian_stage_{tier.name.lower()} ("
                        " path_id INTEGER, bucket BIGINT, n INTEGER, n_num INTEGER, vmin DOUBLE PRECISION,"
                        " vmax DOUBLE PRECISION, vsum DOUBLE PRECISION, first_ts BIGINT, first_num DOUBLE PRECISION,"
                        " first_text TEXT, last_ts BIGINT, last_num DOUBLE PRECISION, last_text TEXT,"
                        " tw_int DOUBLE PRECISION, tw_dur BIGINT) ON COMMIT DELETE ROWS"
                    )
            conn.commit()
        return conn

    def create_schema(self, conn: Any) -> None:
        with conn.cursor() as cur:
            # Two hubs creating the schema at once must not both try: serialise on an advisory lock.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('plantbus-historian-schema'))")
            cur.execute("CREATE TABLE IF NOT EXISTS historian_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS historian_paths ("
                " id INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, path TEXT NOT NULL UNIQUE,"
                " datatype SMALLINT NOT NULL)"
            )
            cur.execute(
                "CREATE TABLE IF NOT EXISTS historian_samples ("
                " path_id INTEGER NOT NULL, ts BIGINT NOT NULL, num DOUBLE PRECISION, txt TEXT,"
                " quality SMALLINT NOT NULL, PRIMARY KEY (path_id, ts))"
            )
            for table in ROLLUP_TABLES.values():
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} ("
                    " path_id INTEGER NOT NULL, bucket BIGINT NOT NULL, n INTEGER NOT NULL, n_num INTEGER NOT NULL,"
                    " vmin DOUBLE PRECISION, vmax DOUBLE PRECISION, vsum DOUBLE PRECISION NOT NULL, first_ts BIGINT,"
                    " first_num DOUBLE PRECISION, first_text TEXT, last_ts BIGINT, last_num DOUBLE PRECISION,"
                    " last_text TEXT, tw_int DOUBLE PRECISION NOT NULL, tw_dur BIGINT NOT NULL,"
                    " PRIMARY KEY (path_id, bucket))"
                )
            cur.execute(
                "INSERT INTO historian_meta VALUES ('schema', %s) ON CONFLICT (key) DO NOTHING", (SCHEMA_VERSION,)
            )
        conn.commit()

    @staticmethod
    def _clean(value: Any) -> Any:
        # PostgreSQL text cannot hold NUL; it becomes U+FFFD rather than failing the whole batch.
        return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value

    def insert_samples(self, conn: Any, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        clean = self._clean
        with conn.cursor() as cur:
            with cur.copy("COPY historian_stage_samples (path_id, ts, num, txt, quality) FROM STDIN") as copy:
                for row in rows:
                    if row[3] is not None:
                        row = (row[0], row[1], row[2], clean(row[3]), row[4])
                    copy.write_row(row)
            cur.execute(
                "INSERT INTO historian_samples SELECT * FROM historian_stage_samples"
                " ON CONFLICT (path_id, ts) DO NOTHING"
            )
            return cur.rowcount

    def upsert_rollups(self, conn: Any, tier: Tier, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        clean = self._clean
        with conn.cursor() as cur:
            with cur.copy(f"COPY historian_stage_{tier.name.lower()} ({_ROLLUP_COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    if row[9] is not None or row[12] is not None:
                        row = (*row[:9], clean(row[9]), *row[10:12], clean(row[12]), *row[13:])
                    copy.write_row(row)
            cur.execute(self._upserts[tier])

    def classify(self, exc: BaseException) -> BaseException:
        import psycopg

        where = self.describe()
        if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)):
            return BatchRejected(f"PostgreSQL historian {where} refused a batch: {exc}")
        if isinstance(exc, psycopg.Error):
            return SinkUnavailable(
                f"PostgreSQL historian {where} is unavailable: {str(exc).strip()} — check that the server runs "
                "and accepts connections"
            )
        return exc

    def is_broken(self, conn: Any) -> bool:
        return conn.closed or conn.broken

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)


def _parse_url(url: str) -> tuple[str, Any]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise HistorianError(
            f"historian URL {url!r} is not a database URL; use sqlite:///path/history.sqlite or "
            "postgresql+psycopg://user@host:5432/dbname"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise HistorianError(
                f"historian URL {url!r} names no file; the SQL historian needs a file: sqlite:///var/history.sqlite"
            )
        return "sqlite", parsed
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return "postgresql", parsed
    raise HistorianError(
        f"historian URL {url!r}: unsupported database {parsed.drivername!r}; "
        "use sqlite:///... or postgresql+psycopg://..."
    )


def check_url(url: str) -> None:
    """Raise HistorianError unless `url` names an SQLite file or a PostgreSQL database (psycopg)."""
    _parse_url(url)


def _make_store(url: str, password: str | None, synchronous: str) -> _Store:
    kind, parsed = _parse_url(url)
    if kind == "sqlite":
        return _SqliteStore(Path(parsed.database), synchronous)
    return _PostgresStore(parsed, password)


# ---------------------------------------------------------------------------- the historian


class SqlHistorian:
    """Raw samples plus 1-minute and 1-hour rollups in SQLite or PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "sql",
        retention: Retention | None = None,
        password: str | None = None,
        synchronous: str = "FULL",
    ) -> None:
        self.name = name
        self.url = url
        self.retention = retention or Retention()
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise HistorianError(f"SQLite synchronous must be FULL or NORMAL, got {synchronous!r}")
        self._store = _make_store(url, password, synchronous.upper())
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._writer: Any = None
        self._reader: Any = None
        self._schema_ready = False
        # Writer-side caches, only trusted inside a transaction and dropped on any failure.
        self._path_ids: dict[str, tuple[int, int]] = {}
        self._last: dict[int, tuple[int, float | None] | None] = {}
        self.stored = 0
        self.duplicates = 0
        self.replaced = 0
        self.batches = 0
        self.careful_redos = 0
        self.last_write_ms: int | None = None
        self.retention_deleted: dict[str, int] = {tier.value: 0 for tier in Tier}

    @property
    def kind(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._store.kind

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the tables if needed (connects now; raises SinkUnavailable if the database is down)."""
        await run_exclusive(self._write_lock, self._writer_conn)

    async def close(self) -> None:
        """Close both connections."""
        await run_exclusive(self._write_lock, self._drop_writer)
        await run_exclusive(self._read_lock, self._drop_reader)

    def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 — closing a broken connection may fail; it is gone either way
                pass

    def _writer_conn(self) -> Any:
        if self._writer is not None and self._store.is_broken(self._writer):
            self._drop_writer()
        if self._writer is None:
            conn = None
            try:
                conn = self._store.connect(reader=False)
                if not self._schema_ready:
                    self._store.create_schema(conn)
                    self._check_schema(conn)
                    if self._store.kind == "postgresql":
                        conn.commit()
                    self._schema_ready = True
            except Exception as exc:
                if conn is not None:
                    conn.close()
                mapped = self._store.classify(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
            self._writer = conn
        return self._writer

    def _check_schema(self, conn: Any) -> None:
        row = conn.execute("SELECT value FROM historian_meta WHERE key = 'schema'").fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            raise HistorianError(
                f"historian database {self._store.describe()} has schema version {row and row[0]}, this Plantbus "
                f"expects {SCHEMA_VERSION}; point the historian at a new database or upgrade Plantbus"
            )

    def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        self._path_ids.clear()
        self._last.clear()
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 — a broken connection may fail to close; it is gone either way
                pass

    def _reader_conn(self) -> Any:
        if self._reader is not None and self._store.is_broken(self._reader):
            self._reader = None
        if self._reader is None:
            try:
                self._reader = self._store.connect(reader=True)
            except Exception as exc:
                mapped = self._store.classify(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
        return self._reader

    # ------------------------------------------------------------------ writing

    async def write(self, samples: Sequence[Sample]) -> int:
        """Store samples directly; returns how many were new."""
        return await self.write_records(to_records(samples))

    async def write_records(self, records: Sequence[Record]) -> int:
        """Store records and maintain the rollups; a (path, ts) already stored is skipped. Returns how many were new."""
        if not records:
            return 0
        return await run_exclusive(self._write_lock, self._write_sync, records)

    def _write_sync(self, records: Sequence[Record]) -> int:
        careful = False
        while True:
            conn = self._writer_conn()
            try:
                inserted = self._write_transaction(conn, records, careful)
            except _Inconsistent:
                self._rollback(conn)
                if careful:
                    raise HistorianError(
                        f"historian {self.name}: stored rows changed while writing; is another process writing "
                        "the same paths into this database?"
                    ) from None
                careful = True
                self.careful_redos += 1
                continue
            except BaseException as exc:
                self._rollback(conn)
                if self._store.is_broken(conn):
                    self._drop_writer()
                mapped = self._store.classify(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
            self.batches += 1
            self.stored += inserted
            self.duplicates += len(records) - inserted
            self.last_write_ms = now_ms()
            return inserted

    def _rollback(self, conn: Any) -> None:
        # Whatever the caches learnt in a failed transaction may be false; they reload on demand.
        self._path_ids.clear()
        self._last.clear()
        try:
            conn.rollback() if self._store.kind == "postgresql" else conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 — no transaction open, or the connection is gone
            pass

    def _write_transaction(self, conn: Any, records: Sequence[Record], careful: bool) -> int:
        store = self._store
        store.begin(conn)
        groups: dict[str, list[Record]] = {}
        for record in records:
            group = groups.get(record[0])
            if group is None:
                groups[record[0]] = [record]
            else:
                group.append(record)
        ids = self._resolve_paths(conn, groups)
        rows: list[tuple[Any, ...]] = []
        minute: dict[tuple[int, int], list[Any]] = {}
        hour: dict[tuple[int, int], list[Any]] = {}
        new_last: dict[int, Any] = {}
        replaced: list[tuple[int, int, Any, Any, Any]] = []
        for path, group in groups.items():
            pid = ids[path]
            group.sort(key=_TS)
            group = _newest_per_timestamp(group)
            last = self._last.get(pid, _UNKNOWN)
            if last is _UNKNOWN:
                last = self._load_last(conn, pid)
            if not careful and (last is None or group[0][1] > last[0]):
                new_last[pid] = self._append(pid, group, last, rows, minute, hour)
            else:
                new_last[pid] = self._merge(conn, pid, group, rows, minute, hour, replaced)
        inserted = store.insert_samples(conn, rows)
        if inserted != len(rows):
            raise _Inconsistent
        store.upsert_rollups(conn, Tier.MINUTE, _rollup_rows(minute))
        store.upsert_rollups(conn, Tier.HOUR, _rollup_rows(hour))
        if replaced:
            self._replace(conn, replaced)
        inserted += len(replaced)
        conn.commit() if store.kind == "postgresql" else conn.execute("COMMIT")
        for pid, last in new_last.items():
            if last is _UNKNOWN:
                self._last.pop(pid, None)
            else:
                self._last[pid] = last
        return inserted

    def _resolve_paths(self, conn: Any, groups: dict[str, list[Record]]) -> dict[str, int]:
        ids: dict[str, int] = {}
        sql = self._store.sql
        for path, group in groups.items():
            datatype = group[-1][5]
            known = self._path_ids.get(path)
            if known is None:
                conn.execute(
                    sql("INSERT INTO historian_paths (path, datatype) VALUES (?, ?) ON CONFLICT (path) DO NOTHING"),
                    (path, datatype),
                )
                row = conn.execute(sql("SELECT id, datatype FROM historian_paths WHERE path = ?"), (path,)).fetchone()
                known = (row[0], row[1])
            if known[1] != datatype:
                # A rebirth may change a metric's type; reads decode with the newest one.
                conn.execute(sql("UPDATE historian_paths SET datatype = ? WHERE id = ?"), (datatype, known[0]))
                known = (known[0], datatype)
            self._path_ids[path] = known
            ids[path] = known[0]
        return ids

    def _load_last(self, conn: Any, pid: int) -> tuple[int, float | None] | None:
        row = conn.execute(
            self._store.sql("SELECT ts, num FROM historian_samples WHERE path_id = ? ORDER BY ts DESC LIMIT 1"), (pid,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    @staticmethod
    def _append(
        pid: int,
        group: list[Record],
        last: tuple[int, float | None] | None,
        rows: list[tuple[Any, ...]],
        minute: dict[tuple[int, int], list[Any]],
        hour: dict[tuple[int, int], list[Any]],
    ) -> tuple[int, float | None]:
        """The normal case: every sample is newer than the path's newest stored one."""
        p_ts, p_num = last if last is not None else (None, None)
        if len(group) == 1:
            _, ts, num, text, quality, _ = group[0]
            rows.append((pid, ts, num, text, quality))
            _accumulate(minute, pid, MINUTE_MS, ts, num, text, p_ts, p_num, None)
            _accumulate(hour, pid, HOUR_MS, ts, num, text, p_ts, p_num, None)
            return ts, num
        tss = [r[1] for r in group]
        rows.extend([(pid, r[1], r[2], r[3], r[4]) for r in group])
        nums = [r[2] for r in group]
        _fold_appended(minute, pid, MINUTE_MS, group, tss, nums, p_ts, p_num)
        _fold_appended(hour, pid, HOUR_MS, group, tss, nums, p_ts, p_num)
        return tss[-1], nums[-1]

    def _merge(
        self,
        conn: Any,
        pid: int,
        group: list[Record],
        rows: list[tuple[Any, ...]],
        minute: dict[tuple[int, int], list[Any]],
        hour: dict[tuple[int, int], list[Any]],
        replaced: list[tuple[int, int, Any, Any, Any]],
    ) -> Any:
        """Late or replayed samples: place each between the stored samples around it.

        A sample whose (path, ts) is stored with the same value is a replay and skipped; with another value
        or quality it is a newer reading of the same millisecond (a value changed twice within 1 ms): it
        replaces the stored one, see `_replace`."""
        sql = self._store.sql
        lo, hi = group[0][1], group[-1][1]
        stored_rows = conn.execute(
            sql(
                "SELECT ts, num, txt, quality FROM historian_samples WHERE path_id = ? AND ts >= ? AND ts <= ? "
                "ORDER BY ts"
            ),
            (pid, lo, hi),
        ).fetchall()
        stored_values = {row[0]: tuple(row[1:]) for row in stored_rows}
        stored = [(row[0], row[1]) for row in stored_rows]
        before = conn.execute(
            sql("SELECT ts, num FROM historian_samples WHERE path_id = ? AND ts < ? ORDER BY ts DESC LIMIT 1"),
            (pid, lo),
        ).fetchone()
        after = conn.execute(
            sql("SELECT ts, num FROM historian_samples WHERE path_id = ? AND ts > ? ORDER BY ts LIMIT 1"), (pid, hi)
        ).fetchone()
        existing = {row[0] for row in stored}
        line_ts = ([before[0]] if before else []) + [row[0] for row in stored] + ([after[0]] if after else [])
        line_num = ([before[1]] if before else []) + [row[1] for row in stored] + ([after[1]] if after else [])
        append = rows.append
        for _, ts, num, text, quality, _ in group:
            if ts in existing:
                if ts in stored_values and stored_values[ts] != (num, text, quality):
                    replaced.append((pid, ts, num, text, quality))
                    line_num[bisect.bisect_left(line_ts, ts)] = num
                continue
            existing.add(ts)
            i = bisect.bisect_left(line_ts, ts)
            p_ts, p_num = (line_ts[i - 1], line_num[i - 1]) if i else (None, None)
            n_ts = line_ts[i] if i < len(line_ts) else None
            append((pid, ts, num, text, quality))
            _accumulate(minute, pid, MINUTE_MS, ts, num, text, p_ts, p_num, n_ts)
            _accumulate(hour, pid, HOUR_MS, ts, num, text, p_ts, p_num, n_ts)
            line_ts.insert(i, ts)
            line_num.insert(i, num)
        if after is None and line_ts:
            return line_ts[-1], line_num[-1]
        return _UNKNOWN

    def _replace(self, conn: Any, replaced: list[tuple[int, int, Any, Any, Any]]) -> None:
        """Overwrite stored samples with newer readings of the same millisecond, then rebuild from the raw rows
        every rollup bucket they shaped: their own, and the next sample's when that lies in a later bucket
        (whose start carries the replaced value in)."""
        sql = self._store.sql
        buckets: set[tuple[Tier, int, int]] = set()
        for pid, ts, num, text, quality in replaced:
            conn.execute(
                sql("UPDATE historian_samples SET num = ?, txt = ?, quality = ? WHERE path_id = ? AND ts = ?"),
                (num, text, quality, pid, ts),
            )
            after = conn.execute(
                sql("SELECT ts FROM historian_samples WHERE path_id = ? AND ts > ? ORDER BY ts LIMIT 1"), (pid, ts)
            ).fetchone()
            for tier, size in ((Tier.MINUTE, MINUTE_MS), (Tier.HOUR, HOUR_MS)):
                buckets.add((tier, pid, ts - ts % size))
                if after is not None:
                    buckets.add((tier, pid, after[0] - after[0] % size))
        for tier, pid, bucket in sorted(buckets):
            size = MINUTE_MS if tier is Tier.MINUTE else HOUR_MS
            samples = conn.execute(
                sql("SELECT ts, num, txt FROM historian_samples WHERE path_id = ? AND ts >= ? AND ts < ? ORDER BY ts"),
                (pid, bucket, bucket + size),
            ).fetchall()
            before = conn.execute(
                sql("SELECT num FROM historian_samples WHERE path_id = ? AND ts < ? ORDER BY ts DESC LIMIT 1"),
                (pid, bucket),
            ).fetchone()
            table = ROLLUP_TABLES[tier]
            conn.execute(sql(f"DELETE FROM {table} WHERE path_id = ? AND bucket = ?"), (pid, bucket))
            if samples:
                row = _bucket_from_samples(bucket, size, samples, before[0] if before else None)
                marks = ", ".join(["?"] * 15)
                conn.execute(sql(f"INSERT INTO {table} ({_ROLLUP_COLUMNS}) VALUES ({marks})"), (pid, bucket, *row))
        self.replaced += len(replaced)

    # ------------------------------------------------------------------ reading

    async def _read(self, fn: Any, *args: Any) -> Any:
        if not self._schema_ready:
            await self.open()  # the tables must exist before a reader looks at them
        return await run_exclusive(self._read_lock, self._read_sync, fn, *args)

    def _read_sync(self, fn: Any, *args: Any) -> Any:
        conn = self._reader_conn()
        try:
            return fn(conn, *args)
        except Exception as exc:
            if self._store.is_broken(conn):
                self._reader = None
            mapped = self._store.classify(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _lookup(self, conn: Any, paths: list[str]) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for start in range(0, len(paths), 500):
            chunk = paths[start : start + 500]
            marks = ", ".join([self._store.ph] * len(chunk))
            for path, pid, datatype in conn.execute(
                f"SELECT path, id, datatype FROM historian_paths WHERE path IN ({marks})", chunk
            ).fetchall():
                found[path] = (pid, datatype)
        return found

    async def query_raw(
        self, paths: str | Sequence[str], start_ms: int, end_ms: int, *, limit: int | None = None
    ) -> dict[str, list[Point]]:
        """Stored samples of each path with start <= ts < end, oldest first; unknown paths map to []."""
        return await self._read(self._query_raw_sync, paths_arg(paths), start_ms, end_ms, limit)

    def _query_raw_sync(
        self, conn: Any, paths: list[str], start_ms: int, end_ms: int, limit: int | None
    ) -> dict[str, list[Point]]:
        ids = self._lookup(conn, paths)
        sql = self._store.sql(
            "SELECT ts, num, txt, quality FROM historian_samples WHERE path_id = ? AND ts >= ? AND ts < ? ORDER BY ts"
            + (" LIMIT ?" if limit is not None else "")
        )
        out: dict[str, list[Point]] = {}
        for path in paths:
            if path not in ids:
                out[path] = []
                continue
            pid, datatype = ids[path]
            dt = DataType(datatype)
            args = (pid, start_ms, end_ms) + ((limit,) if limit is not None else ())
            out[path] = [
                Point(ts, decode_value(dt, num, txt), quality_from_code(q))
                for ts, num, txt, q in conn.execute(sql, args).fetchall()
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
    ) -> dict[str, BucketSeries]:
        """Aggregates per bucket; the coarsest rollup that tiles `bucket_ms` answers unless `tier` is given."""
        chosen = tier or choose_tier(bucket_ms)
        if chosen is not Tier.RAW and bucket_ms % chosen.bucket_ms:
            raise HistorianError(
                f"bucket of {bucket_ms} ms is not a whole number of {chosen.value} rollups; "
                f"use a multiple of {chosen.bucket_ms} ms or the raw tier"
            )
        start, end = bucket_range(start_ms, end_ms, bucket_ms)
        return await self._read(self._query_buckets_sync, paths_arg(paths), start, end, bucket_ms, chosen)

    def _query_buckets_sync(
        self, conn: Any, paths: list[str], start: int, end: int, bucket_ms: int, tier: Tier
    ) -> dict[str, BucketSeries]:
        ids = self._lookup(conn, paths)
        sql = self._store.sql
        out: dict[str, BucketSeries] = {}
        for path in paths:
            if path not in ids:
                out[path] = BucketSeries(path, None, bucket_ms, tier, [])
                continue
            pid, datatype = ids[path]
            dt = DataType(datatype)
            if tier is Tier.RAW:
                rows = conn.execute(
                    sql(
                        "SELECT ts, num, txt FROM historian_samples"
                        " WHERE path_id = ? AND ts >= ? AND ts < ? ORDER BY ts"
                    ),
                    (pid, start, end),
                ).fetchall()
                carry = conn.execute(
                    sql("SELECT num FROM historian_samples WHERE path_id = ? AND ts < ? ORDER BY ts DESC LIMIT 1"),
                    (pid, start),
                ).fetchone()
                buckets = buckets_from_samples(rows, carry[0] if carry else None, bucket_ms, dt)
            else:
                table = ROLLUP_TABLES[tier]
                rows = conn.execute(
                    sql(
                        "SELECT bucket, n, n_num, vmin, vmax, vsum, first_ts, first_num, first_text, last_ts,"
                        f" last_num, last_text, tw_int, tw_dur FROM {table}"
                        " WHERE path_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket"
                    ),
                    (pid, start, end),
                ).fetchall()
                carry = conn.execute(
                    sql(
                        f"SELECT last_num FROM {table}"
                        " WHERE path_id = ? AND bucket < ? AND n > 0 ORDER BY bucket DESC LIMIT 1"
                    ),
                    (pid, start),
                ).fetchone()
                buckets = buckets_from_rollups(
                    [RollupRow(*row) for row in rows], carry[0] if carry else None, bucket_ms, tier.bucket_ms, dt
                )
            out[path] = BucketSeries(path, dt, bucket_ms, tier, buckets)
        return out

    async def latest(self, paths: str | Sequence[str] | None = None) -> dict[str, Point]:
        """The newest stored sample of each path (every path when None); paths without samples are left out."""
        return await self._read(self._latest_sync, None if paths is None else paths_arg(paths))

    def _latest_sync(self, conn: Any, paths: list[str] | None) -> dict[str, Point]:
        base = (
            "SELECT p.path, p.datatype, s.ts, s.num, s.txt, s.quality FROM historian_paths p"
            " JOIN historian_samples s ON s.path_id = p.id"
            " AND s.ts = (SELECT max(ts) FROM historian_samples WHERE path_id = p.id)"
        )
        if paths is None:
            rows = conn.execute(base).fetchall()
        else:
            rows = []
            for start in range(0, len(paths), 500):
                chunk = paths[start : start + 500]
                marks = ", ".join([self._store.ph] * len(chunk))
                rows += conn.execute(f"{base} WHERE p.path IN ({marks})", chunk).fetchall()
        return {
            path: Point(ts, decode_value(DataType(dt), num, txt), quality_from_code(q))
            for path, dt, ts, num, txt, q in rows
        }

    async def list_paths(self, prefix: str = "") -> dict[str, DataType | None]:
        """Every stored path starting with `prefix`, with its latest datatype."""
        rows = await self._read(lambda conn: conn.execute("SELECT path, datatype FROM historian_paths").fetchall())
        return {path: DataType(dt) for path, dt in sorted(rows) if path.startswith(prefix)}

    # ------------------------------------------------------------------ retention

    async def apply_retention(self, now_ms: int | None = None) -> dict[Tier, int]:
        """Delete rows older than each tier keeps, path by path, letting writes in between.

        The newest row of a path older than the horizon stays: it is the value that still holds at the
        horizon (report-by-exception tags may not change for weeks), needed for the time-weighted mean.
        """
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        pids = await run_exclusive(self._write_lock, self._all_path_ids)
        deleted: dict[Tier, int] = {}
        for tier in Tier:
            keep = self.retention.keep_ms(tier)
            if keep is None:
                continue
            horizon = now - keep
            total = 0
            # Small chunks: a first pass over months of data must not hold the write lock for minutes.
            for start in range(0, len(pids), 20):
                chunk = pids[start : start + 20]
                total += await run_exclusive(self._write_lock, self._retention_sync, tier, chunk, horizon)
            deleted[tier] = total
            self.retention_deleted[tier.value] += total
        return deleted

    def _all_path_ids(self) -> list[int]:
        conn = self._writer_conn()
        try:
            ids = [row[0] for row in conn.execute("SELECT id FROM historian_paths ORDER BY id").fetchall()]
            if self._store.kind == "postgresql":
                conn.commit()  # leave no transaction open between the retention chunks
            return ids
        except Exception as exc:
            self._rollback(conn)
            raise self._store.classify(exc) from exc

    def _retention_sync(self, tier: Tier, pids: list[int], horizon: int) -> int:
        table, column = ("historian_samples", "ts") if tier is Tier.RAW else (ROLLUP_TABLES[tier], "bucket")
        sql = self._store.sql(
            f"DELETE FROM {table} WHERE path_id = ? AND {column} < "
            f"(SELECT max({column}) FROM {table} WHERE path_id = ? AND {column} < ?)"
        )
        conn = self._writer_conn()
        deleted = 0
        try:
            self._store.begin(conn)
            for pid in pids:
                deleted += conn.execute(sql, (pid, pid, horizon)).rowcount
            conn.commit() if self._store.kind == "postgresql" else conn.execute("COMMIT")
        except Exception as exc:
            self._rollback(conn)
            if self._store.is_broken(conn):
                self._drop_writer()
            raise self._store.classify(exc) from exc
        return deleted

    # ------------------------------------------------------------------ diagnostics

    def diagnostics(self) -> dict[str, Any]:
        """Write counters and where the data lives."""
        return {
            "type": "sql",
            "database": self._store.describe(),
            "stored": self.stored,
            "duplicates_skipped": self.duplicates,
            "replaced_same_ms": self.replaced,
            "batches": self.batches,
            "careful_redos": self.careful_redos,
            "last_write_ms": self.last_write_ms,
            "retention_deleted": dict(self.retention_deleted),
        }

