"""What the primary host hands to the rest of Plantbus: immutable metric samples and online-state changes.

A `Sample` is one value of one metric at one time, already resolved to its UNS path; the mirror,
the historian and the plugins all consume the same objects, so they stay small and frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from hub.sparkplug.payload import DataType


class Quality(str, Enum):
    """Data quality as Sparkplug defines it (Quality property codes 192, 500, 0)."""

    GOOD = "GOOD"
    STALE = "STALE"
    BAD = "BAD"

    @classmethod
    def from_code(cls, code: int | None) -> Quality:
        """Map a Sparkplug 'Quality' property value; unknown codes read as BAD."""
        if code is None or code == 192:
            return cls.GOOD
        if code == 500:
            return cls.STALE
        return cls.BAD


@dataclass(frozen=True, slots=True)
class Sample:
    """One metric value: its UNS path, value, metric timestamp (ms), quality and Sparkplug address."""

    path: str
    value: Any
    timestamp: int
    quality: Quality
    datatype: DataType
    group: str
    edge_node: str
    device: str | None
    metric: str
    is_historical: bool = False


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """An edge node (device None) or device went online or offline, as the primary host saw it."""

    path: str
    group: str
    edge_node: str
    device: str | None
    online: bool
    timestamp: int
    bd_seq: int | None = None
    reason: str = ""
