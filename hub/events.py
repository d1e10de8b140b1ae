"""Events: discrete happenings (a node went offline, an alarm changed state, a camera saw something)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Severity(IntEnum):
    """ISA-18.2-style priorities, most severe last so comparisons read naturally."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


@dataclass(frozen=True, slots=True)
class Event:
    """Immutable. `kind` says what happened (`node_status`, `alarm`, `cv_detection`, `downtime`, ...),
    `path` where in the UNS, `time` when (ms since the epoch), `payload` the details as JSON-friendly data,
    `attachments` references to stored files (a snapshot image), never the bytes themselves."""

    kind: str
    path: str
    time: int
    severity: Severity = Severity.INFO
    payload: dict[str, Any] = field(default_factory=dict)
    attachments: tuple[str, ...] = ()
    source: str = "hub"
