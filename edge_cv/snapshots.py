"""Event snapshots on disk: one JPEG per event, `<camera>/<YYYY-MM-DD>/<event id>.jpg`, with retention.

The same store serves the edge computer (which writes the snapshots it takes, faces already blurred) and the hub
(which writes the copies it receives over the broker into its state folder, and which the console reads). A
*reference* is the relative path above, and it is the same on both machines, so the `snapshot` field of an event
names the file on either. `path_for(reference)` is the only way from a reference to a file: it accepts nothing but
that shape and checks that the result stays inside the store, so a reference from the network or from a URL can
never reach another file.

Retention runs by age (the day folder and the file's time) and by total size (oldest files first). Saves keep a
running total so a pass runs as soon as the size budget is exceeded, not only on the timer. Nothing here imports
OpenCV: the hub stores bytes it receives without decoding them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hub.errors import PlantbusError

log = logging.getLogger(__name__)

SUFFIX = ".jpg"
_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_REFERENCE = re.compile(
    r"(?P<camera>[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127})/(?P<day>\d{4}-\d{2}-\d{2})/"
    r"(?P<name>[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127})\.jpg"
)
DAY_S = 86_400.0


class SnapshotError(PlantbusError):
    """A snapshot reference is not one this store issues, or the file cannot be written."""


def safe_name(text: str) -> str:
    """A file-name-safe form of a camera or event id; ids that had to change get a short hash, so two never meet."""
    if _SAFE.fullmatch(text) and not text.endswith(".") and ".." not in text:
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip(".")[:100].replace("..", "_") or "_"
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def day_of(time_ms: int) -> str:
    """The UTC date of a millisecond timestamp, as the day folder name."""
    return datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%d")


def reference_for(camera: str, event_id: str, time_ms: int) -> str:
    """The reference a snapshot of event `event_id` of `camera` at `time_ms` gets."""
    return f"{safe_name(camera)}/{day_of(time_ms)}/{safe_name(event_id)}{SUFFIX}"


def is_reference(text: object) -> bool:
    """Whether `text` has the shape of a reference (no check of the file)."""
    return isinstance(text, str) and _REFERENCE.fullmatch(text) is not None and ".." not in text


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass did and what is left."""

    deleted_files: int
    deleted_bytes: int
    kept_files: int
    kept_bytes: int


class SnapshotStore:
    """JPEG files per camera and day under `root`, at most `retention_days` old and `max_mb` in total."""

    def __init__(self, root: Path, *, retention_days: float = 7.0, max_mb: float = 2048.0) -> None:
        if retention_days <= 0 or max_mb <= 0:
            raise SnapshotError(f"snapshot retention must be positive (got {retention_days} days, {max_mb} MB)")
        self.root = Path(root)
        self.retention_s = retention_days * DAY_S
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.saved = 0
        self.rejected = 0
        self.deleted = 0
        self._lock = threading.Lock()
        self._bytes: int | None = None  # running total, known after the first retention pass

    # ------------------------------------------------------------------ references and paths

    def path_for(self, reference: str) -> Path:
        """The file a reference names; SnapshotError for anything but a reference this store issues."""
        if not is_reference(reference):
            raise SnapshotError(f"{str(reference)[:200]!r} is not a snapshot reference (camera/YYYY-MM-DD/id.jpg)")
        root = self.root.resolve()
        path = (root / reference).resolve()
        # A symlinked camera or day folder could still lead out of the store: check the real path.
        if not path.is_relative_to(root):
            raise SnapshotError(f"snapshot reference {reference!r} leads outside the snapshot folder")
        return path

    # ------------------------------------------------------------------ writing (blocking: call from a thread)

    def save(self, camera: str, event_id: str, time_ms: int, data: bytes) -> str:
        """Store the JPEG bytes of one event's snapshot; returns its reference."""
        reference = reference_for(camera, event_id, time_ms)
        self.save_reference(reference, data)
        return reference

    def save_reference(self, reference: str, data: bytes) -> Path:
        """Store bytes under a reference received from elsewhere (the hub's copy of an edge snapshot)."""
        try:
            path = self.path_for(reference)
        except SnapshotError:
            self.rejected += 1
            raise
        if not data.startswith(b"\xff\xd8"):
            self.rejected += 1
            raise SnapshotError(f"snapshot {reference} is not a JPEG (it does not start with FF D8)")
        old = 0
        for attempt in range(2):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                old = path.stat().st_size if path.exists() else 0
                # Written aside and renamed, so a reader (the console) never sees half a file.
                tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                break
            except FileNotFoundError:
                if attempt:
                    raise SnapshotError(f"cannot write snapshot {path}: its folder keeps disappearing") from None
                # A retention pass in another thread removed the (then empty) day folder: make it again.
            except OSError as exc:
                raise SnapshotError(
                    f"cannot write snapshot {path}: {exc}; check free disk space and permissions"
                ) from None
        over = False
        with self._lock:
            self.saved += 1
            if self._bytes is not None:
                self._bytes += len(data) - old
                over = self._bytes > self.max_bytes
        if over:
            self.enforce_retention()
        return path

    def read(self, reference: str) -> bytes:
        """The bytes of a stored snapshot (SnapshotError when it is not a reference, OSError when it is gone)."""
        return self.path_for(reference).read_bytes()

    # ------------------------------------------------------------------ retention (blocking: call from a thread)

    def enforce_retention(self, now: float | None = None) -> RetentionReport:
        """Delete snapshots older than the retention age, then the oldest until the folder fits its size budget."""
        now = time.time() if now is None else now
        cutoff = now - self.retention_s
        files: list[tuple[float, int, Path]] = []
        deleted_files = deleted_bytes = 0
        if self.root.is_dir():
            for camera_dir in self.root.iterdir():
                if not camera_dir.is_dir() or camera_dir.is_symlink():
                    continue
                for day_dir in camera_dir.iterdir():
                    if not day_dir.is_dir() or day_dir.is_symlink() or not _DAY.fullmatch(day_dir.name):
                        continue
                    for path in day_dir.iterdir():
                        if path.suffix != SUFFIX or not path.is_file():
                            continue
                        try:
                            st = path.stat()
                        except FileNotFoundError:
                            continue
                        if st.st_mtime < cutoff:
                            deleted_files += 1
                            deleted_bytes += self._unlink(path, st.st_size)
                        else:
                            files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        if total > self.max_bytes:
            files.sort()
            keep_from = 0
            while total > self.max_bytes and keep_from < len(files):
                _, size, path = files[keep_from]
                total -= size
                deleted_files += 1
                deleted_bytes += self._unlink(path, size)
                keep_from += 1
            files = files[keep_from:]
        self._prune_empty_dirs()
        with self._lock:
            self._bytes = total
            self.deleted += deleted_files
        if deleted_files:
            log.info("snapshots in %s: retention deleted %d file(s), %.1f MB; %d kept (%.1f MB)", self.root,
                     deleted_files, deleted_bytes / 1e6, len(files), total / 1e6)
        return RetentionReport(deleted_files, deleted_bytes, len(files), total)

    @staticmethod
    def _unlink(path: Path, size: int) -> int:
        try:
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def _prune_empty_dirs(self) -> None:
        if not self.root.is_dir():
            return
        for camera_dir in self.root.iterdir():
            if not camera_dir.is_dir() or camera_dir.is_symlink():
                continue
            for day_dir in camera_dir.iterdir():
                if day_dir.is_dir() and not day_dir.is_symlink():
                    try:
                        day_dir.rmdir()  # only succeeds when empty
                    except OSError:
                        pass

    def usage(self) -> tuple[int, int]:
        """(files, bytes) stored now; walks the folder."""
        files = size = 0
        if self.root.is_dir():
            for path in self.root.glob(f"*/*/*{SUFFIX}"):
                try:
                    size += path.stat().st_size
                    files += 1
                except FileNotFoundError:
                    continue
        return files, size

    def diagnostics(self) -> dict[str, int | None]:
        """Counters, JSON-friendly."""
        return {"saved": self.saved, "rejected": self.rejected, "deleted": self.deleted, "bytes": self._bytes}
