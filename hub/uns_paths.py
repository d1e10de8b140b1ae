"""ISA-95 unified-namespace paths as typed values, and the Sparkplug-address -> path mapping."""

from __future__ import annotations

import string
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import TYPE_CHECKING

from hub.errors import ConfigError, TopicError

if TYPE_CHECKING:
    from hub.config import UnsConfig

_PLACEHOLDERS = frozenset({"group", "edge_node", "device"})
_FORBIDDEN = frozenset("+#\x00")


def check_template(template: str) -> None:
    """Raise ValueError (pydantic turns it into a located message) for a bad path template."""
    if not template or template.startswith("/") or template.endswith("/"):
        raise ValueError("a path template must not be empty or start/end with '/'")
    if _FORBIDDEN.intersection(template):
        raise ValueError("a path template must not contain MQTT wildcards (+, #)")
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in _PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{name}}}; use {{group}}, {{edge_node}} or {{device}}")


@dataclass(frozen=True, slots=True)
class UnsPath:
    """A `/`-separated ISA-95 path such as zdorovo/plant1/packaging/salad/sleever/sleeves_scrapped."""

    levels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.levels:
            raise TopicError("a UNS path needs at least one level")
        for level in self.levels:
            if not level:
                raise TopicError(f"UNS path {'/'.join(self.levels)!r} has an empty level")
            if _FORBIDDEN.intersection(level):
                raise TopicError(f"UNS path level {level!r} contains an MQTT wildcard or NUL")

    @classmethod
    def parse(cls, text: str) -> UnsPath:
        return cls(tuple(text.strip("/").split("/")))

    def child(self, *more: str) -> UnsPath:
        levels = list(self.levels)
        for part in more:
            levels.extend(p for p in part.split("/") if p)
        return UnsPath(tuple(levels))

    def __str__(self) -> str:
        return "/".join(self.levels)


class UnsMapper:
    """Turns (group, edge node, device, metric) into UNS paths; results are cached."""

    def __init__(self, config: UnsConfig) -> None:
        self._mappings = list(config.mappings)
        self._default = config.prefix + "/{group}/{edge_node}/{device}"
        self.device_path = lru_cache(maxsize=65536)(self._device_path)
        self.metric_path = lru_cache(maxsize=262144)(self._metric_path)

    def _template_for(self, group: str, edge_node: str, device: str | None) -> str:
        for m in self._mappings:
            if (
                fnmatchcase(group, m.group)
                and fnmatchcase(edge_node, m.edge_node)
                and (fnmatchcase(device, m.device) if device is not None else m.device in ("*", ""))
            ):
                return m.path
        return self._default

    def _device_path(self, group: str, edge_node: str, device: str | None) -> UnsPath:
        """The path of a node (device None) or device: the parent of its metrics."""
        template = self._template_for(group, edge_node, device)
        if device is None:
            # "{edge_node}/{device}" -> "{edge_node}": drop the device level and its slash.
            template = template.replace("/{device}", "").replace("{device}/", "").replace("{device}", "")
        try:
            text = template.format(group=group, edge_node=edge_node, device=device or "")
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"uns mapping template {template!r}: {exc}") from None
        return UnsPath.parse(text)

    def _metric_path(self, group: str, edge_node: str, device: str | None, metric: str) -> str:
        return str(self.device_path(group, edge_node, device).child(metric))


# CV snapshot JPEGs: bytes, so outside the UNS tree (which carries JSON only), next to the hub's plantbus/status.
SNAPSHOTS_ROOT = UnsPath(("plantbus", "cv", "snapshots"))


def snapshot_topic(device_path: UnsPath, event_id: str) -> UnsPath:
    """Where the JPEG of an event is published: `plantbus/cv/snapshots/<camera device path>/<event id>`."""
    return SNAPSHOTS_ROOT.child(*device_path.levels, event_id)


def parse_snapshot_topic(topic: str) -> tuple[str, str] | None:
    """(camera device path, event id) of a snapshot topic; None for a topic outside `plantbus/cv/snapshots`."""
    root = f"{SNAPSHOTS_ROOT}/"
    if not topic.startswith(root):
        return None
    device_path, _, event_id = topic[len(root):].rpartition("/")
    return (device_path, event_id) if device_path and event_id else None
