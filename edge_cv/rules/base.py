"""What every rule shares: the config base with its zone/line references, K-of-N debouncing per track, cooldowns,
and small helpers for crops and track filtering. Kept apart from `edge_cv/rules/__init__.py` so rule modules can
import it without importing the registry (which imports them)."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Hashable, Iterable

import numpy as np
from pydantic import BaseModel, ConfigDict

from edge_cv.types import Box, Track
from hub.errors import ConfigError


class RuleSettings(BaseModel):
    """Base of rule config models: forbids unknown keys and names the zones and lines the rule needs, so the
    camera config (edge_cv/config.py) can check them against the camera's geometry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def referenced_zones(self) -> set[str]:
        """Names of the camera zones this rule reads."""
        return set()

    def referenced_lines(self) -> set[str]:
        """Names of the camera count lines this rule reads."""
        return set()


def referenced_zones(config: BaseModel) -> set[str]:
    """Zones a rule config names (none for a model without `referenced_zones`)."""
    fn = getattr(config, "referenced_zones", None)
    return set(fn()) if fn is not None else set()


def referenced_lines(config: BaseModel) -> set[str]:
    """Count lines a rule config names (none for a model without `referenced_lines`)."""
    fn = getattr(config, "referenced_lines", None)
    return set(fn()) if fn is not None else set()


def check_references(name: str, config: BaseModel, zones: Collection[str], lines: Collection[str]) -> None:
    """Raise ConfigError when rule `name` names a zone or line the camera lacks (`zones`/`lines`: names or dicts)."""
    for what, wanted, have in (
        ("zone", referenced_zones(config), zones),
        ("line", referenced_lines(config), lines),
    ):
        missing = sorted(n for n in wanted if n not in have)
        if missing:
            known = ", ".join(sorted(have)) or "none"
            raise ConfigError(
                f"rule {name!r} ({getattr(config, 'type', '?')}) names {what} {missing[0]!r}, which this camera "
                f"does not define (its {what}s: {known}); add it under the camera's {what}s or fix the name"
            )


class Votes:
    """K-of-N debouncing: the last `window` verdicts per key (a track, or a track and attribute)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._votes: dict[Hashable, deque[bool]] = {}

    def add(self, key: Hashable, bad: bool) -> int:
        """Record one verdict; returns how many of the key's last `window` verdicts were bad."""
        q = self._votes.get(key)
        if q is None:
            q = self._votes[key] = deque(maxlen=self.window)
        q.append(bad)
        return sum(q)

    def count(self, key: Hashable) -> int:
        """Bad verdicts in the key's window (0 for an unknown key)."""
        q = self._votes.get(key)
        return sum(q) if q else 0

    def clear(self, key: Hashable) -> None:
        self._votes.pop(key, None)

    def drop_tracks(self, gone: set[int]) -> None:
        """Forget the keys of tracks that are gone (a key is a track id or a tuple starting with one)."""
        for key in [k for k in self._votes if (k[0] if isinstance(k, tuple) else k) in gone]:
            del self._votes[key]

    def __len__(self) -> int:
        return len(self._votes)


class Cooldown:
    """At most one event per key per `seconds` of frame time."""

    def __init__(self, seconds: float) -> None:
        self.ms = int(seconds * 1000)
        self._last: dict[Hashable, int] = {}

    def ready(self, key: Hashable, time_ms: int) -> bool:
        last = self._last.get(key)
        return last is None or time_ms - last >= self.ms

    def fire(self, key: Hashable, time_ms: int) -> None:
        self._last[key] = time_ms

    def forget_older_than(self, time_ms: int) -> None:
        """Drop keys whose cooldown ended before `time_ms` (they would be ready anyway)."""
        for key in [k for k, t in self._last.items() if time_ms - t >= self.ms]:
            del self._last[key]


class TrackClock:
    """When each track was last given to the rule, so per-track state can be dropped once a track is gone."""

    def __init__(self, forget_ms: int = 5_000) -> None:
        self.forget_ms = forget_ms
        self._seen: dict[int, int] = {}

    def see(self, tracks: Iterable[Track], time_ms: int) -> None:
        for t in tracks:
            self._seen[t.id] = time_ms

    def expire(self, time_ms: int) -> set[int]:
        """Remove and return the ids not seen for `forget_ms`."""
        gone = {tid for tid, t in self._seen.items() if time_ms - t > self.forget_ms}
        for tid in gone:
            del self._seen[tid]
        return gone

    @property
    def live(self) -> set[int]:
        return set(self._seen)


def select(tracks: Iterable[Track], labels: Iterable[str]) -> list[Track]:
    """Tracks whose label is one of `labels` (all tracks when `labels` is empty)."""
    wanted = set(labels)
    return [t for t in tracks if not wanted or t.label in wanted]


def crop(image: np.ndarray, box: Box, margin: float = 0.1) -> np.ndarray:
    """A copy of the box's region, grown by `margin` of its size on each side and clipped to the image."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    a, b = max(0, int(x1 - mx)), max(0, int(y1 - my))
    c, d = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    if c <= a or d <= b:
        return image[0:0, 0:0].copy()
    return image[b:d, a:c].copy()
