"""The in-process bus: the primary host's samples and events, fanned out to each plugin through its own queue.

Every plugin hook that consumes data (`on_samples`, `on_events`) gets a `Consumer`: a bounded memory
queue and a task of its own (`plantbus[plugin:<name>].on_samples`). The host's listener only appends a
batch to each queue, so a slow or broken plugin never delays the host or another plugin.

* Backpressure without loss: when a consumer's memory queue is full, further batches spill, in order, to
  an SQLite file `<state_dir>/bus/<plugin>.sqlite` (written by a second task, through `asyncio.to_thread`,
  so the event loop never waits on the disk). The plugin gets the memory queue first, then the disk rows,
  then the memory queue again once it has caught up. The lag (batches and items waiting in memory and on
  disk) is in `diagnostics()`.
* Failures: a hookimpl that raises is counted, its plugin marked failing with the error, and the same
  batch retried after 0.5 s, 1 s, 2 s, ... (up to `retry_max_s`); after `max_attempts` failures the batch
  is written to `<state_dir>/bus/<plugin>.dead.jsonl` (counted) and delivery goes on with the next one.
* Shutdown: `Bus.close()` lets every consumer catch up until a deadline, then writes what is left (the
  batch in delivery included) to the overflow file; the next start delivers it first. Delivery is at least
  once: a batch read back from disk may be delivered again after a crash, never skipped.

Samples are stored with the Sparkplug protobuf codec (values exactly as on the wire, every datatype) plus a
small JSON list of their addresses; events as JSON (their payloads are JSON-friendly by contract).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hub.config import BusConfig
from hub.errors import PlantbusError
from hub.events import Event, Severity
from hub.samples import NodeStatus, Quality, Sample
from hub.sparkplug import sparkplug_b_pb2 as pb
from hub.sparkplug.payload import Metric, decode_metric, encode_metric, now_ms, to_json_value

log = logging.getLogger(__name__)

SAMPLES = "samples"
EVENTS = "events"
STREAMS = (SAMPLES, EVENTS)

Deliver = Callable[[list[Any]], Any]


# ---------------------------------------------------------------------------- codecs


def encode_samples(samples: Sequence[Sample]) -> bytes:
    """Samples as one protobuf Payload (values, datatypes, timestamps) after a JSON header of addresses."""
    msg = pb.Payload()
    addresses = []
    for s in samples:
        encode_metric(msg.metrics.add(), Metric(s.metric, s.datatype, s.value, timestamp=s.timestamp,
                                                is_historical=s.is_historical))
        addresses.append([s.path, s.quality.value, s.group, s.edge_node, s.device])
    header = json.dumps(addresses, separators=(",", ":")).encode()
    return len(header).to_bytes(4, "big") + header + msg.SerializeToString()


def decode_samples(blob: bytes) -> list[Sample]:
    """The inverse of `encode_samples`."""
    size = int.from_bytes(blob[:4], "big")
    addresses = json.loads(blob[4 : 4 + size])
    msg = pb.Payload()
    msg.ParseFromString(blob[4 + size :])
    out = []
    for (path, quality, group, edge_node, device), raw in zip(addresses, msg.metrics, strict=True):
        m = decode_metric(raw)
        out.append(Sample(path, m.value, m.timestamp or 0, Quality(quality), m.datatype, group, edge_node, device,
                          m.name or "", m.is_historical))
    return out


def event_json(event: Event) -> dict[str, Any]:
    """An event as a JSON-friendly mapping."""
    return {
        "kind": event.kind, "path": event.path, "time": event.time, "severity": event.severity.name,
        "payload": event.payload, "attachments": list(event.attachments), "source": event.source,
    }  # fmt: skip


def event_from_json(data: dict[str, Any]) -> Event:
    """The inverse of `event_json`."""
    return Event(data["kind"], data["path"], data["time"], Severity[data["severity"]], data["payload"],
                 tuple(data["attachments"]), data["source"])


def encode_events(events: Sequence[Event]) -> bytes:
    """Events as a JSON list (values that are not JSON become strings)."""
    return json.dumps([event_json(e) for e in events], separators=(",", ":"), default=str).encode()


def decode_events(blob: bytes) -> list[Event]:
    """The inverse of `encode_events`."""
    return [event_from_json(d) for d in json.loads(blob)]


def sample_json(sample: Sample) -> dict[str, Any]:
    """A sample as a readable JSON mapping (dead-letter files)."""
    value = to_json_value(sample.datatype, sample.value)
    return {
        "path": sample.path, "value": value, "timestamp": sample.timestamp, "quality": sample.quality.value,
        "datatype": sample.datatype.name, "group": sample.group, "edge_node": sample.edge_node,
        "device": sample.device, "metric": sample.metric, "historical": sample.is_historical,
    }  # fmt: skip


_CODECS: dict[str, tuple[Callable[[Sequence[Any]], bytes], Callable[[bytes], list[Any]]]] = {
    SAMPLES: (encode_samples, decode_samples),
    EVENTS: (encode_events, decode_events),
}


def status_event(status: NodeStatus) -> Event:
    """A node or device online change as an Event of kind `node_status`."""
    return Event(
        "node_status",
        status.path,
        status.timestamp,
        Severity.INFO if status.online else Severity.MEDIUM,
        {"online": status.online, "group": status.group, "edge_node": status.edge_node, "device": status.device,
         "bd_seq": status.bd_seq, "reason": status.reason},
        source="hub",
    )


# ---------------------------------------------------------------------------- the overflow file


class Overflow:
    """One plugin's overflow: batches per stream, in order, in an SQLite file opened when first needed.

    All access goes through the async methods, one at a time (a lock), each in a worker thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def exists(self) -> bool:
        """Whether the file is there (a previous run left batches, or this one spilled)."""
        return self._db is not None or self.path.exists()

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The connection is used from worker threads, one at a time under the lock.
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # AUTOINCREMENT: ids are never reused, even after the table emptied, so a reader that
            # remembers the last id it read never skips a row appended later.
            db.execute("CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                       "stream TEXT NOT NULL, items INTEGER NOT NULL, data BLOB NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS batches_stream ON batches (stream, id)")
            self._db = db
        return self._db

    def _counts(self, stream: str) -> tuple[int, int]:
        if not self.exists():
            return 0, 0
        row = self._open().execute("SELECT count(*), coalesce(sum(items), 0) FROM batches WHERE stream = ?",
                                   (stream,)).fetchone()
        return int(row[0]), int(row[1])

    def _append(self, stream: str, batches: list[list[Any]], head: bool) -> None:
        encode = _CODECS[stream][0]
        rows = [(stream, len(b), encode(b)) for b in batches]
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        try:
            if head:
                # Before everything already there: ids below the smallest (SQLite ids may be negative).
                low = db.execute("SELECT min(id) FROM batches").fetchone()[0]
                start = (low if low is not None else 1) - len(rows)
                db.executemany("INSERT INTO batches (id, stream, items, data) VALUES (?, ?, ?, ?)",
                               [(start + i, *row) for i, row in enumerate(rows)])
            else:
                db.executemany("INSERT INTO batches (stream, items, data) VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _head(self, stream: str, after: int | None, limit: int) -> list[tuple[int, int, list[Any]]]:
        decode = _CODECS[stream][1]
        query = "SELECT id, items, data FROM batches WHERE stream = ?"
        args: list[Any] = [stream]
        if after is not None:
            query += " AND id > ?"
            args.append(after)
        rows = self._open().execute(query + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [(row_id, items, decode(data)) for row_id, items, data in rows]

    def _delete(self, ids: list[int]) -> None:
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        db.executemany("DELETE FROM batches WHERE id = ?", [(i,) for i in ids])
        db.execute("COMMIT")

    async def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._lock:
            work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                # A worker thread cannot be stopped: hold the lock until it is done with the connection.
                await asyncio.wait({work})
                raise

    async def counts(self, stream: str) -> tuple[int, int]:
        """(batches, items) on disk for `stream`."""
        return await self._locked(self._counts, stream)

    async def append(self, stream: str, batches: list[list[Any]], *, head: bool = False) -> None:
        """Store batches after (or, with head=True, before) those already on disk."""
        await self._locked(self._append, stream, batches, head)

    async def head(self, stream: str, after: int | None, limit: int) -> list[tuple[int, int, list[Any]]]:
        """The oldest batches of `stream` (after row id `after`): (row id, items, batch)."""
        return await self._locked(self._head, stream, after, limit)

    async def delete(self, ids: list[int]) -> None:
        """Forget delivered (or dead-lettered) rows."""
        if ids:
            await self._locked(self._delete, ids)

    def close(self) -> None:
        """Close the file (it stays on disk)."""
        if self._db is not None:
            self._db.close()
            self._db = None


# ---------------------------------------------------------------------------- one consumer


class Consumer:
    """One plugin hook fed by the bus: memory queue, overflow, retries, dead letters, counters."""

    def __init__(
        self,
        plugin: str,
        stream: str,
        deliver: Deliver,
        *,
        config: BusConfig,
        overflow: Overflow,
        dead_letter_path: Path,
        on_failure: Callable[[str, BaseException], None] | None = None,
        on_recovery: Callable[[str], None] | None = None,
        read_chunk: int = 100,
    ) -> None:
        self.plugin = plugin
        self.stream = stream
        self.hook = f"on_{stream}"
        self.task_name = f"plantbus[plugin:{plugin}].{self.hook}"
        self._deliver = deliver
        self._config = config
        self._overflow = overflow
        self._dead_path = dead_letter_path
        self._on_failure = on_failure
        self._on_recovery = on_recovery
        self._read_chunk = read_chunk

        self._memory: collections.deque[list[Any]] = collections.deque()
        self._memory_items = 0
        # Newest batches on their way to disk (taken by the spill task a list at a time).
        self._spill: list[list[Any]] = []
        self._spill_items = 0
        self._writing: list[list[Any]] | None = None
        self._writing_items = 0
        # On disk: rows not yet read, and rows read but not yet delivered.
        self._disk_batches = 0
        self._disk_items = 0
        self._disk_head: collections.deque[tuple[int, int, list[Any]]] = collections.deque()
        self._head_items = 0
        self._last_read_id: int | None = None
        self._delivered_ids: list[int] = []
        self._spilling = False
        self._inflight: tuple[list[Any], int | None] | None = None

        self._wake = asyncio.Event()
        self._spill_wake = asyncio.Event()
        self._landed = asyncio.Event()
        self._closing = False
        self._closed = False
        self._run_task: asyncio.Task[None] | None = None
        self._spill_task: asyncio.Task[None] | None = None

        # Counters (diagnostics).
        self.offered_batches = 0
        self.offered_items = 0
        self.delivered_batches = 0
        self.delivered_items = 0
        self.failures = 0
        self.retries = 0
        self.dead_letters = 0
        self.dead_letter_items = 0
        self.spilled_batches = 0
        self.spilled_items = 0
        self.spill_errors = 0
        self.refused_after_close = 0
        self.max_lag_items = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.busy_s = 0.0

    # ------------------------------------------------------------------ the host side (synchronous, cheap)

    def offer(self, batch: list[Any]) -> None:
        """Queue a batch; never blocks. Full memory queue: the batch goes to the overflow file, in order."""
        n = len(batch)
        if self._closed:
            self.refused_after_close += 1
            if self.refused_after_close == 1:
                log.error("bus: %s got a batch after the hub stopped; %d items not delivered", self.task_name, n)
            return
        self.offered_batches += 1
        self.offered_items += n
        if not self._spilling and (
            not self._memory
            or (len(self._memory) < self._config.queue_batches and self._memory_items + n <= self._config.queue_samples)
        ):
            self._memory.append(batch)
            self._memory_items += n
            self._wake.set()
        else:
            if not self._spilling:
                log.warning("bus: plugin %s is behind on %s (%d batches, %d items queued); spilling to %s",
                            self.plugin, self.hook, len(self._memory), self._memory_items, self._overflow.path)
            self._spilling = True
            self._spill.append(batch)
            self._spill_items += n
            self.spilled_batches += 1
            self.spilled_items += n
            self._spill_wake.set()
        lag = self.lag_items()
        if lag > self.max_lag_items:
            self.max_lag_items = lag

    # ------------------------------------------------------------------ lag

    def lag_items(self) -> int:
        """Samples (or events) not yet delivered: queued, on disk, or in delivery."""
        inflight = len(self._inflight[0]) if self._inflight is not None else 0
        return (self._memory_items + self._spill_items + self._writing_items + self._disk_items + self._head_items
                + inflight)

    def lag(self) -> dict[str, int]:
        """The lag in batches and items, split into memory and disk (a batch in delivery counts where it came from)."""
        inflight = self._inflight
        from_memory = inflight is not None and inflight[1] is None
        from_disk = inflight is not None and inflight[1] is not None
        n = len(inflight[0]) if inflight is not None else 0
        mem_b = len(self._memory) + from_memory
        mem_i = self._memory_items + (n if from_memory else 0)
        disk_b = len(self._spill) + len(self._writing or ()) + self._disk_batches + len(self._disk_head) + from_disk
        disk_i = (self._spill_items + self._writing_items + self._disk_items + self._head_items
                  + (n if from_disk else 0))
        return {"batches": mem_b + disk_b, "items": mem_i + disk_i, "memory_batches": mem_b, "memory_items": mem_i,
                "disk_batches": disk_b, "disk_items": disk_i}

    def stored(self) -> tuple[int, int]:
        """(batches, items) written to the overflow file and not yet delivered."""
        return self._disk_batches + len(self._disk_head), self._disk_items + self._head_items

    def diagnostics(self) -> dict[str, Any]:
        """Counters and lag, JSON-friendly."""
        return {
            "hook": self.hook,
            "lag": self.lag(),
            "max_lag_items": self.max_lag_items,
            "offered_batches": self.offered_batches,
            "offered_items": self.offered_items,
            "delivered_batches": self.delivered_batches,
            "delivered_items": self.delivered_items,
            "spilled_batches": self.spilled_batches,
            "spilled_items": self.spilled_items,
            "spill_errors": self.spill_errors,
            "failures": self.failures,
            "retries": self.retries,
            "dead_letters": self.dead_letters,
            "dead_letter_items": self.dead_letter_items,
            "failing": self.failing_since is not None,
            "last_error": self.last_error,
            "busy_s": round(self.busy_s, 3),
        }

    # ------------------------------------------------------------------ tasks

    async def resume(self) -> None:
        """Pick up batches a previous run left in the overflow file (they are delivered first)."""
        if self._overflow.exists():
            self._disk_batches, self._disk_items = await self._overflow.counts(self.stream)
            if self._disk_batches:
                self._spilling = True
                log.info("bus: plugin %s has %d batches (%d items) waiting on disk for %s from an earlier run",
                         self.plugin, self._disk_batches, self._disk_items, self.hook)

    def start(self, create_task: Callable[..., asyncio.Task[Any]]) -> None:
        """Start the delivery and spill tasks with `create_task(coro, name=...)` (a TaskGroup's)."""
        self._run_task = create_task(self._run(), name=self.task_name)
        self._spill_task = create_task(self._spill_loop(), name=f"{self.task_name}.spill")

    async def _next(self) -> tuple[list[Any], int | None] | None:
        while True:
            if self._memory:
                batch = self._memory.popleft()
                self._memory_items -= len(batch)
                return batch, None
            if self._disk_head:
                row_id, items, batch = self._disk_head.popleft()
                self._head_items -= items
                return batch, row_id
            if self._disk_batches:
                rows = await self._overflow.head(self.stream, self._last_read_id, self._read_chunk)
                if not rows:
                    # The counters disagree with the file (edited by hand?): trust the file, loudly.
                    log.error("bus: %s expected %d more batches in %s but found none; continuing",
                              self.task_name, self._disk_batches, self._overflow.path)
                    self._disk_batches = self._disk_items = 0
                    continue
                self._disk_head.extend(rows)
                self._head_items += sum(r[1] for r in rows)
                self._last_read_id = rows[-1][0]
                self._disk_batches -= len(rows)
                self._disk_items -= sum(r[1] for r in rows)
                continue
            if self._delivered_ids:
                await self._flush_deleted()
                continue  # rows may have landed on disk meanwhile: look again from the top
            if self._spill and self._writing is None:
                # Nothing older is waiting (checked above, with no await since): take the spill buffer
                # straight into memory, without a disk round trip.
                moved = self._spill[: self._config.queue_batches]
                del self._spill[: len(moved)]
                count = sum(len(b) for b in moved)
                self._spill_items -= count
                self._memory.extend(moved)
                self._memory_items += count
                continue
            if self._writing is not None:
                self._landed.clear()
                await self._landed.wait()
                continue
            self._spilling = False
            if self._closing:
                return None
            self._wake.clear()
            await self._wake.wait()

    async def _run(self) -> None:
        while True:
            item = await self._next()
            if item is None:
                return
            self._inflight = item
            batch, row_id = item
            await self._deliver_with_retries(batch)
            self._inflight = None
            if row_id is not None:
                self._delivered_ids.append(row_id)
                if len(self._delivered_ids) >= self._read_chunk or not self._disk_head:
                    await self._flush_deleted()

    async def _deliver_with_retries(self, batch: list[Any]) -> None:
        attempts = 0
        while True:
            started = time.perf_counter()
            try:
                result = self._deliver(batch)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - a plugin's failure is counted, never fatal to the hub
                self.busy_s += time.perf_counter() - started
                attempts += 1
                self._failed(exc, attempts)
                if attempts >= self._config.max_attempts:
                    await self._dead_letter(batch, exc, attempts)
                    return
                self.retries += 1
                delay = min(self._config.retry_max_s, self._config.retry_initial_s * 2 ** (attempts - 1))
                await asyncio.sleep(delay)
                continue
            self.busy_s += time.perf_counter() - started
            self.delivered_batches += 1
            self.delivered_items += len(batch)
            if self.failing_since is not None:
                log.info("bus: plugin %s %s works again after %.1f s of failures", self.plugin, self.hook,
                         time.monotonic() - self.failing_since)
                self.failing_since = None
                if self._on_recovery is not None:
                    self._on_recovery(self.plugin)
            return

    def _failed(self, exc: Exception, attempts: int) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failing_since is None:
            # Logged when the trouble starts, with the traceback; later failures only count.
            self.failing_since = time.monotonic()
            log.error("bus: plugin %s failed in %s (attempt %d); retrying with backoff", self.plugin, self.hook,
                      attempts, exc_info=exc)
        if self._on_failure is not None:
            self._on_failure(self.plugin, exc)

    async def _dead_letter(self, batch: list[Any], exc: Exception, attempts: int) -> None:
        record = {
            "time": now_ms(),
            "plugin": self.plugin,
            "hook": self.hook,
            "attempts": attempts,
            "error": f"{type(exc).__name__}: {exc}",
            "items": len(batch),
            "batch": [sample_json(x) if isinstance(x, Sample) else event_json(x) for x in batch],
        }
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"

        def write() -> None:
            self._dead_path.parent.mkdir(parents=True, exist_ok=True)
            with self._dead_path.open("a", encoding="utf-8") as f:
                f.write(line)

        await asyncio.to_thread(write)
        self.dead_letters += 1
        self.dead_letter_items += len(batch)
        log.error("bus: plugin %s failed %d times on one batch of %d items (%s); set it aside in %s",
                  self.plugin, attempts, len(batch), record["error"], self._dead_path)

    async def _flush_deleted(self) -> None:
        if self._delivered_ids:
            ids = list(self._delivered_ids)
            await self._overflow.delete(ids)
            # Only now: interrupted before, the ids stay and the delete is tried again on close.
            del self._delivered_ids[: len(ids)]

    async def _spill_loop(self) -> None:
        backoff = 0.5
        while True:
            await self._spill_wake.wait()
            self._spill_wake.clear()
            while self._spill:
                batches, items = self._spill, self._spill_items
                self._spill, self._spill_items = [], 0
                self._writing, self._writing_items = batches, items
                try:
                    await self._overflow.append(self.stream, batches)
                except (sqlite3.Error, OSError) as exc:
                    # Kept in memory, in order, and retried: a full disk must not lose data.
                    self.spill_errors += 1
                    log.error("bus: cannot write %s's overflow %s (%s); keeping %d batches in memory and retrying",
                              self.plugin, self._overflow.path, exc, len(batches))
                    self._spill[:0] = batches
                    self._spill_items += items
                    self._writing, self._writing_items = None, 0
                    self._landed.set()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 0.5
                self._disk_batches += len(batches)
                self._disk_items += items
                self._writing, self._writing_items = None, 0
                self._landed.set()
                self._wake.set()

    # ------------------------------------------------------------------ shutdown

    async def close(self, deadline: float) -> None:
        """Deliver until empty or `deadline` (loop time); keep what is left in the overflow file."""
        self._closing = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        run = self._run_task
        if run is not None and not run.done():
            done, _ = await asyncio.wait({run}, timeout=max(0.0, deadline - loop.time()))
            if not done:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        self._closed = True
        # Let a write in progress land (a worker thread cannot be cancelled), then stop the spill task.
        while self._writing is not None:
            self._landed.clear()
            await self._landed.wait()
        if self._spill_task is not None:
            self._spill_task.cancel()
            await asyncio.gather(self._spill_task, return_exceptions=True)
        await self._persist_rest()

    async def _persist_rest(self) -> None:
        head: list[list[Any]] = []
        if self._inflight is not None and self._inflight[1] is None:
            head.append(self._inflight[0])  # interrupted while delivering from memory: it goes first
        self._inflight = None
        head.extend(self._memory)
        self._memory.clear()
        self._memory_items = 0
        tail, self._spill, self._spill_items = self._spill, [], 0
        try:
            await self._flush_deleted()
            if head:
                await self._overflow.append(self.stream, head, head=True)
            if tail:
                await self._overflow.append(self.stream, tail)
        except (sqlite3.Error, OSError) as exc:
            lost = sum(len(b) for b in head + tail)
            log.error("bus: could not keep %d undelivered %s of plugin %s in %s: %s", lost, self.stream, self.plugin,
                      self._overflow.path, exc)
            return
        kept = len(head) + len(tail)
        if kept or self._disk_batches or self._disk_head:
            log.info("bus: plugin %s: %d batches of %s wait in %s for the next start", self.plugin,
                     kept + self._disk_batches + len(self._disk_head), self.stream, self._overflow.path)


# ---------------------------------------------------------------------------- the bus


class Bus:
    """Fans samples and events out to plugin consumers; owns their overflow files."""

    def __init__(self, config: BusConfig, directory: Path) -> None:
        self.config = config
        self.directory = Path(directory)
        self._consumers: dict[tuple[str, str], Consumer] = {}
        self._by_stream: dict[str, list[Consumer]] = {SAMPLES: [], EVENTS: []}
        self._overflows: dict[str, Overflow] = {}
        self._started = False
        self.published_batches = 0
        self.published_items = 0

    def overflow_path(self, plugin: str) -> Path:
        """The overflow file of `plugin`."""
        return self.directory / f"{_safe(plugin)}.sqlite"

    def dead_letter_path(self, plugin: str) -> Path:
        """The dead-letter file of `plugin` (JSON lines)."""
        return self.directory / f"{_safe(plugin)}.dead.jsonl"

    def add_consumer(
        self,
        plugin: str,
        stream: str,
        deliver: Deliver,
        *,
        on_failure: Callable[[str, BaseException], None] | None = None,
        on_recovery: Callable[[str], None] | None = None,
    ) -> Consumer:
        """Give `plugin` a queue on `stream` ("samples" or "events"); `deliver(batch)` may be async."""
        if stream not in STREAMS:
            raise PlantbusError(f"bus stream {stream!r}: use 'samples' or 'events'")
        if (plugin, stream) in self._consumers:
            raise PlantbusError(f"plugin {plugin!r} already has a consumer for {stream}")
        overflow = self._overflows.get(plugin)
        if overflow is None:
            overflow = self._overflows[plugin] = Overflow(self.overflow_path(plugin))
        consumer = Consumer(plugin, stream, deliver, config=self.config, overflow=overflow,
                            dead_letter_path=self.dead_letter_path(plugin), on_failure=on_failure,
                            on_recovery=on_recovery)
        self._consumers[(plugin, stream)] = consumer
        self._by_stream[stream].append(consumer)
        return consumer

    def consumer(self, plugin: str, stream: str) -> Consumer | None:
        """The consumer of `plugin` on `stream`, if any."""
        return self._consumers.get((plugin, stream))

    def consumers(self) -> list[Consumer]:
        """Every consumer, in the order they were added."""
        return list(self._consumers.values())

    async def start(self, create_task: Callable[..., asyncio.Task[Any]]) -> None:
        """Resume what earlier runs left on disk, then start every consumer's tasks."""
        for consumer in self._consumers.values():
            await consumer.resume()
        for consumer in self._consumers.values():
            consumer.start(create_task)
        self._started = True

    # ------------------------------------------------------------------ publishing (synchronous, cheap)

    def publish_samples(self, samples: list[Sample]) -> None:
        """Host listener: hand a batch of samples to every `on_samples` consumer."""
        if not samples:
            return
        self.published_batches += 1
        self.published_items += len(samples)
        for consumer in self._by_stream[SAMPLES]:
            consumer.offer(samples)

    def publish_events(self, events: list[Event]) -> None:
        """Hand a batch of events to every `on_events` consumer."""
        if not events:
            return
        for consumer in self._by_stream[EVENTS]:
            consumer.offer(events)

    def publish_status(self, status: NodeStatus) -> None:
        """Host status listener: a node or device online change becomes a `node_status` event."""
        self.publish_events([status_event(status)])

    # ------------------------------------------------------------------ shutdown and diagnostics

    async def close(self, timeout: float | None = None) -> None:
        """Let consumers catch up for up to `timeout` s (config drain_timeout_s), then keep the rest on disk."""
        timeout = self.config.drain_timeout_s if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + timeout
        await asyncio.gather(*(c.close(deadline) for c in self._consumers.values()))
        for overflow in self._overflows.values():
            overflow.close()

    def lag(self) -> dict[str, int]:
        """Total lag over every consumer."""
        total = {"batches": 0, "items": 0, "memory_batches": 0, "memory_items": 0, "disk_batches": 0, "disk_items": 0}
        for consumer in self._consumers.values():
            for key, value in consumer.lag().items():
                total[key] += value
        return total

    def diagnostics(self) -> dict[str, Any]:
        """Totals over the bus, JSON-friendly (per-plugin figures come with each plugin's status)."""
        consumers = self._consumers.values()
        return {
            "published_batches": self.published_batches,
            "published_samples": self.published_items,
            "consumers": len(self._consumers),
            "lag": self.lag(),
            "failures": sum(c.failures for c in consumers),
            "dead_letters": sum(c.dead_letters for c in consumers),
            "spilled_batches": sum(c.spilled_batches for c in consumers),
        }


def _safe(name: str) -> str:
    # Plugin names come from entry points; keep them from escaping the bus folder.
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".") or "_"


__all__ = [
    "Bus", "Consumer", "Overflow", "SAMPLES", "EVENTS", "encode_samples", "decode_samples", "encode_events",
    "decode_events", "status_event", "sample_json", "event_json",
]  # fmt: skip
