"""The durable outbox in front of every historian sink: nothing the hub accepted is lost to an outage.

`put(records)` returns once the batch is committed to an SQLite file (WAL; with `fsync=True`, the default,
every commit is fsync'd, so it survives a crash of the process, the OS or the power). A drain task sends
the oldest batches to the sink, in order, combining small batches up to `batch_points`; it deletes them
only after the sink acknowledged. While the sink fails it retries the same batches with jittered
exponential backoff, logging the failure once when it starts and once on recovery. A batch the sink
refuses for good (`BatchRejected`) is moved to a dead-letter table, counted, and never silently dropped.

Delivery is at least once; sinks make it exactly once by being idempotent on (path, timestamp): the SQL
historian skips stored keys, InfluxDB overwrites a point with the same series and time.

Batches are stored as pickles of plain tuples, read back with an unpickler that refuses every class,
so a tampered file cannot run code.
"""

from __future__ import annotations

import asyncio
import io
import logging
import pickle
import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from hub.historian import BatchRejected, HistorianError, Record, run_exclusive
from hub.sparkplug.payload import now_ms

log = logging.getLogger(__name__)

Send = Callable[[Sequence[Record]], Awaitable[Any]]


class _TuplesOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"outbox batches hold plain tuples only, not {module}.{name}")


def _encode(records: Sequence[Record]) -> bytes:
    return pickle.dumps([tuple(r) for r in records], protocol=5)


def _decode(blob: bytes) -> list[Record]:
    return list(map(Record._make, _TuplesOnly(io.BytesIO(blob)).load()))


class Outbox:
    """A durable FIFO of record batches with a drain task that delivers them to one sink."""

    def __init__(
        self,
        path: Path,
        send: Send,
        *,
        name: str = "outbox",
        batch_points: int = 20_000,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        fsync: bool = True,
    ) -> None:
        if batch_points < 1:
            raise HistorianError(f"outbox {name}: batch_points must be at least 1, got {batch_points}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise HistorianError(f"outbox {name}: need 0 < backoff_initial_s <= backoff_max_s")
        self.path = Path(path)
        self.name = name
        self._send = send
        self.batch_points = batch_points
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.fsync = fsync
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self.pending_batches = 0
        self.pending_points = 0
        self.sent_batches = 0
        self.sent_points = 0
        self.sends = 0
        self.retries = 0
        self.dead_batches = 0
        self.dead_points = 0
        self.last_error: str | None = None
        self.last_error_ms: int | None = None
        self.last_sent_ms: int | None = None
        self.failing_since_ms: int | None = None

    # ------------------------------------------------------------------ storage (worker threads)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            # AUTOINCREMENT: ids never come back, so "the oldest batch" is always the smallest id.
            db.execute(
                "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT, points INTEGER NOT NULL,"
                " created_ms INTEGER NOT NULL, payload BLOB NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS dead (id INTEGER PRIMARY KEY, points INTEGER NOT NULL,"
                " created_ms INTEGER NOT NULL, failed_ms INTEGER NOT NULL, error TEXT NOT NULL, payload BLOB NOT NULL)"
            )
            batches, points = db.execute("SELECT COUNT(*), COALESCE(SUM(points), 0) FROM batches").fetchone()
            dead_batches, dead_points = db.execute("SELECT COUNT(*), COALESCE(SUM(points), 0) FROM dead").fetchone()
        except sqlite3.Error as exc:
            raise HistorianError(
                f"cannot open the historian outbox {self.path}: {exc}; check state_dir permissions and free disk space"
            ) from None
        self._db = db
        self.pending_batches, self.pending_points = batches, points
        self.dead_batches, self.dead_points = dead_batches, dead_points

    def _put_sync(self, blob: bytes, points: int) -> None:
        assert self._db is not None
        try:
            self._db.execute(
                "INSERT INTO batches (points, created_ms, payload) VALUES (?, ?, ?)", (points, now_ms(), blob)
            )
        except sqlite3.Error as exc:
            raise HistorianError(
                f"cannot write the historian outbox {self.path}: {exc}; check free disk space"
            ) from None

    def _oldest_sync(self) -> tuple[list[int], list[Record], str | None]:
        """The oldest batches up to `batch_points`; a batch that cannot be read comes alone, with the reason."""
        assert self._db is not None
        ids: list[int] = []
        records: list[Record] = []
        points = 0
        cursor = self._db.execute("SELECT id, points, payload FROM batches ORDER BY id")
        try:
            for batch_id, count, blob in cursor:
                if ids and points + count > self.batch_points:
                    break
                try:
                    decoded = _decode(blob)
                except Exception as exc:  # noqa: BLE001 — a damaged row must not stop the rows behind it
                    if ids:
                        break
                    return [batch_id], [], f"unreadable outbox batch: {exc}"
                ids.append(batch_id)
                records.extend(decoded)
                points += count
        finally:
            cursor.close()
        return ids, records, None

    def _delete_sync(self, ids: list[int]) -> None:
        assert self._db is not None
        marks = ",".join("?" * len(ids))
        self._db.execute(f"DELETE FROM batches WHERE id IN ({marks})", ids)

    def _dead_letter_sync(self, ids: list[int], error: str) -> int:
        assert self._db is not None
        marks = ",".join("?" * len(ids))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                f"INSERT INTO dead (id, points, created_ms, failed_ms, error, payload) SELECT id, points, created_ms,"
                f" ?, ?, payload FROM batches WHERE id IN ({marks})",
                [now_ms(), error, *ids],
            )
            (points,) = self._db.execute(
                f"SELECT COALESCE(SUM(points), 0) FROM batches WHERE id IN ({marks})", ids
            ).fetchone()
            self._db.execute(f"DELETE FROM batches WHERE id IN ({marks})", ids)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return points

    def _close_sync(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    # ------------------------------------------------------------------ public API

    async def open(self) -> None:
        """Open (or create) the file; batches left from an earlier run are pending again."""
        await run_exclusive(self._lock, self._open_sync)
        if self.pending_batches:
            log.info(
                "historian outbox %s: %d points from an earlier run are waiting to be sent",
                self.name,
                self.pending_points,
            )
            self._wakeup.set()

    async def close(self) -> None:
        """Close the file; what is pending stays for the next run."""
        await run_exclusive(self._lock, self._close_sync)

    async def put(self, records: Sequence[Record]) -> None:
        """Append one batch; returns once it is durable on disk."""
        if not records:
            return
        if self._db is None:
            raise HistorianError(f"historian outbox {self.name} is not open")
        blob = _encode(records)
        try:
            await run_exclusive(self._lock, self._put_sync, blob, len(records))
        except asyncio.CancelledError:
            # The insert ran to its end in its thread, so the batch is most likely stored: count it. If it was
            # not, the drain finds fewer rows than counted and corrects the counters.
            self._count_put(len(records))
            raise
        self._count_put(len(records))

    def _pending_sync(self) -> tuple[int, int]:
        assert self._db is not None
        batches, points = self._db.execute("SELECT COUNT(*), COALESCE(SUM(points), 0) FROM batches").fetchone()
        return int(batches), int(points)

    def _count_put(self, points: int) -> None:
        self.pending_batches += 1
        self.pending_points += points
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver pending batches forever, oldest first; cancel to stop (pending batches stay on disk)."""
        backoff = self.backoff_initial_s
        while True:
            if not self.pending_batches:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                ids, records, unreadable = await run_exclusive(self._lock, self._oldest_sync)
            except sqlite3.Error as exc:
                # The outbox file itself fails (disk, permissions): keep trying, the batches are still there.
                self._note_error(exc)
                log.error("historian outbox %s cannot be read: %s — check %s", self.name, exc, self.path)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            if not ids:
                # The counters ran ahead of the rows (a put was counted after its row had already been sent).
                # Recount from disk instead of zeroing: a put counted while this read was returning must not
                # be forgotten, or its batch would wait for the next put (the newest values missing in trends).
                self.pending_batches, self.pending_points = await run_exclusive(self._lock, self._pending_sync)
                continue
            self.sends += 1
            try:
                if unreadable:
                    raise BatchRejected(unreadable)
                await self._send(records)
            except asyncio.CancelledError:
                raise
            except BatchRejected as exc:
                points = await run_exclusive(self._lock, self._dead_letter_sync, ids, str(exc))
                self._forget(len(ids), points)
                self.dead_batches += len(ids)
                self.dead_points += points
                self._note_error(exc)
                log.error(
                    "historian sink %s refused %d points for good: %s — they are kept in the dead-letter table of %s",
                    self.name, points, exc, self.path,
                )
                continue
            except Exception as exc:  # noqa: BLE001 — any failure of the sink means: keep the batch, retry later
                self.retries += 1
                self._note_error(exc)
                if self.failing_since_ms is None:
                    self.failing_since_ms = now_ms()
                    log.warning(
                        "historian sink %s is failing: %s — retrying with backoff; %d points wait in %s",
                        self.name, exc, self.pending_points, self.path,
                    )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            try:
                await run_exclusive(self._lock, self._delete_sync, ids)
            except sqlite3.Error as exc:
                # Delivered but not forgotten: they go again later, which idempotent sinks absorb.
                self._note_error(exc)
                log.error("historian outbox %s cannot remove delivered batches: %s", self.name, exc)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            self._forget(len(ids), len(records))
            self.sent_batches += len(ids)
            self.sent_points += len(records)
            self.last_sent_ms = now_ms()
            backoff = self.backoff_initial_s
            if self.failing_since_ms is not None:
                log.warning(
                    "historian sink %s recovered after %.1f s (%d retries so far); %d points still to send",
                    self.name, (now_ms() - self.failing_since_ms) / 1000, self.retries, self.pending_points,
                )
                self.failing_since_ms = None

    def _forget(self, batches: int, points: int) -> None:
        self.pending_batches = max(0, self.pending_batches - batches)
        self.pending_points = max(0, self.pending_points - points)
        self._progress.set()

    def _note_error(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_ms = now_ms()
        self._progress.set()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything pending was delivered (the drain must be running); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.pending_batches:
            self._progress.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def diagnostics(self) -> dict[str, Any]:
        """Pending, sent, retries, dead letters and the last error, for the console and the status topic."""
        return {
            "file": str(self.path),
            "pending_batches": self.pending_batches,
            "pending_points": self.pending_points,
            "sent_batches": self.sent_batches,
            "sent_points": self.sent_points,
            "sends": self.sends,
            "retries": self.retries,
            "dead_batches": self.dead_batches,
            "dead_points": self.dead_points,
            "last_error": self.last_error,
            "last_error_ms": self.last_error_ms,
            "last_sent_ms": self.last_sent_ms,
            "failing_since_ms": self.failing_since_ms,
        }
