"""Helpers for the plugin, bus and derived-value tests: fake installed distributions, recording plugins."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from pathlib import Path
from typing import Any

from hub.config import PlantbusConfig, parse_config
from hub.plugins import hookimpl
from hub.samples import Quality, Sample
from hub.sparkplug.payload import DataType


def fake_distribution(
    root: Path, dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]
) -> Path:
    """Write modules and a `<dist>-<version>.dist-info` with `plantbus` entry points under `root`.

    That is what `pip install` leaves in site-packages; with `root` on sys.path, importlib.metadata
    finds the distribution exactly as it finds an installed one. Nothing is installed.
    """
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[plantbus]\n{lines}")
    return root


def unique(prefix: str) -> str:
    """A module name no other test has imported."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def config(tmp_path: Path, broker_url: str = "mqtt://127.0.0.1:1", **sections: Any) -> PlantbusConfig:
    """A hub configuration with its state in `tmp_path` and quick diagnostics."""
    data: dict[str, Any] = {
        "broker": {"url": broker_url},
        "state_dir": str(tmp_path / "state"),
        "host": {"host_id": "plant", "diagnostics_interval_s": 0.2, "reorder_timeout_ms": 200},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


def samples(n: int, start: int = 0, path: str = "uns/g/n/d/m") -> list[Sample]:
    """`n` samples whose values count up from `start` (so order and completeness can be checked)."""
    return [Sample(path, start + i, 1_700_000_000_000 + start + i, Quality.GOOD, DataType.Int64, "g", "n", "d", "m")
            for i in range(n)]


class Recorder:
    """A plugin that keeps every batch it is given (async hookimpls)."""

    def __init__(self) -> None:
        self.batches: list[list[Sample]] = []
        self.events: list[Any] = []
        self.changed = asyncio.Event()

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.batches for s in b]

    def values(self, path: str | None = None) -> list[Any]:
        return [s.value for s in self.samples if path is None or s.path == path]

    @hookimpl
    async def on_samples(self, samples: list[Sample]) -> None:
        self.batches.append(samples)

    @hookimpl
    async def on_events(self, events: list[Any]) -> None:
        self.events.extend(events)


class Gate:
    """A plugin that blocks in on_samples until opened: the slowest consumer there is."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.batches: list[list[Sample]] = []
        self.entered = asyncio.Event()

    @hookimpl
    async def on_samples(self, samples: list[Sample]) -> None:
        self.entered.set()
        await self.open.wait()
        self.batches.append(samples)

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.batches for s in b]
