"""The edge node's store-and-forward outbox: DATA that could not be delivered, in an SQLite file.

Each row is one stored DATA message: the device id (NULL for the edge node itself) and a Sparkplug
payload whose metrics carry *names* and datatypes, not aliases, because aliases are only valid for
the session that announced them and a replay may happen in a later process.

WAL mode with synchronous=NORMAL makes every committed row survive a crash of the process (only a
power loss may lose the last commits), at the cost of a write(2) per append and no fsync.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from hub.errors import PlantbusError

DEFAULT_MAX_MESSAGES = 1_000_000


class Outbox:
    """Durable FIFO of stored DATA payloads with a cap; the oldest rows are dropped (and counted) past it."""

    def __init__(self, path: Path, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise PlantbusError(f"outbox cap must be at least 1 message, got {max_messages}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.dropped = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # AUTOINCREMENT: ids are never reused, so a replay cursor and in-flight ids stay unambiguous.
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT, payload BLOB NOT NULL)"
            )
            (self._count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            raise PlantbusError(
                f"cannot open the store-and-forward outbox {self.path}: {exc}; "
                "check the state_dir permissions and free disk space"
            ) from None

    def __len__(self) -> int:
        return self._count

    def append(self, device_id: str | None, payload: bytes) -> int:
        """Store one DATA payload; returns how many old rows the cap dropped to make room."""
        return self.append_many([(device_id, payload)])

    def append_many(self, rows: Sequence[tuple[str | None, bytes]]) -> int:
        """Store several payloads in one transaction; returns how many old rows the cap dropped."""
        if not rows:
            return 0
        dropped = 0
        try:
            with self._transaction():
                excess = self._count + len(rows) - self.max_messages
                if excess > 0:
                    cur = self._db.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
                    )
                    dropped = cur.rowcount
                # Rows beyond the cap on their own (a batch larger than the whole outbox) keep only the newest.
                keep = rows[-self.max_messages :]
                dropped += len(rows) - len(keep)
                self._db.executemany("INSERT INTO outbox (device, payload) VALUES (?, ?)", keep)
        except sqlite3.Error as exc:
            raise PlantbusError(f"cannot write the outbox {self.path}: {exc}; check free disk space") from None
        self._count = self._count + len(rows) - dropped
        self.dropped += dropped
        return dropped

    def read_after(self, after_id: int, limit: int) -> list[tuple[int, str | None, bytes]]:
        """Up to `limit` rows with id > after_id, oldest first."""
        return self._db.execute(
            "SELECT id, device, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        ).fetchall()

    def delete(self, ids: Iterable[int]) -> None:
        """Forget rows the broker has acknowledged."""
        ids = list(ids)
        if not ids:
            return
        try:
            with self._transaction():
                removed = 0
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    removed += self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk).rowcount
        except sqlite3.Error as exc:
            raise PlantbusError(f"cannot update the outbox {self.path}: {exc}") from None
        self._count -= removed

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
