"""The edge node's birth/death sequence number (bdSeq), kept on disk so a restarted process continues it."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from hub.errors import PlantbusError

log = logging.getLogger(__name__)


class BdSeqStore:
    """bdSeq 0..255, stepped on every MQTT CONNECT attempt and written atomically before the CONNECT goes out.

    Hosts tell an old Will NDEATH from the current session by bdSeq, so a restart must never reuse the
    number of the session before it: the file holds the last number used and is replaced with rename(2).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def last(self) -> int | None:
        """The bdSeq of the latest CONNECT attempt, or None when this edge node has never connected."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PlantbusError(f"cannot read bdSeq file {self.path}: {exc}; check the state_dir permissions") from None
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= 255:
            # A damaged file must not stop the edge node; the next number restarts at 0.
            log.warning("bdSeq file %s holds %r, not 0-255; starting the sequence again at 0", self.path, text)
            return None
        return value

    def next(self) -> int:
        """Step to the next bdSeq (255 wraps to 0), persist it, and return it."""
        last = self.last()
        value = 0 if last is None else (last + 1) % 256
        self._write(value)
        return value

    def _write(self, value: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".bdseq-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(f"{value}\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise PlantbusError(f"cannot write bdSeq file {self.path}: {exc}; check the state_dir permissions") from None
