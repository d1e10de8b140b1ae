"""plantbus-example: counts the samples the hub receives per UNS subtree and publishes the counts back onto
the broker as derived values, so SCADA, the UNS and the historian see them like any other tag.

With the default `depth: 3` the subtree of `uns/Bakery/Line1_Oven/Zone1/Temperature` is
`uns/Bakery/Line1_Oven`, and its count is published as metric `samples/uns/Bakery/Line1_Oven` of device
`example` on the hub's derived-values edge node, which the UNS mirror shows at
`uns/Plantbus/analytics/example/samples/uns/Bakery/Line1_Oven`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from hub.plugins import hookimpl

if TYPE_CHECKING:
    from hub.app import Hub
    from hub.samples import Sample

NAME = "example"


class Settings(BaseModel):
    """The `plugins.example` section of the hub's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    depth: int = Field(3, ge=1, le=16, description="path levels that name a subtree (uns/<group>/<edge node> is 3)")
    interval_s: float = Field(10.0, gt=0, description="how often changed counts are published")


class SampleCounts:
    """The plugin. The hub creates one instance per hub, so the counts belong to that hub."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._changed: set[str] = set()

    @hookimpl
    def register_settings(self, register: Any) -> None:
        register(NAME, Settings)

    @hookimpl
    def hub_startup(self, hub: Hub) -> None:
        hub.start_task(NAME, self._publish_every(hub), "publish")

    @hookimpl
    def on_samples(self, samples: list[Sample], hub: Hub) -> None:
        # Synchronous and quick: counting only. Publishing happens in the background task.
        depth = hub.plugin_settings(NAME).depth  # type: ignore[attr-defined]
        for sample in samples:
            if hub.derived.owns(sample):
                continue  # our own counts (and other plugins' results) come back through the bus too
            subtree = "/".join(sample.path.split("/")[:depth])
            self.counts[subtree] += 1
            self._changed.add(subtree)

    async def _publish_every(self, hub: Hub) -> None:
        interval = hub.plugin_settings(NAME).interval_s  # type: ignore[attr-defined]
        while True:
            await asyncio.sleep(interval)
            await self.publish(hub)

    async def publish(self, hub: Hub) -> int:
        """Publish the counts that changed since the last call; returns how many."""
        if not self._changed:
            return 0
        changed, self._changed = self._changed, set()
        values = {f"samples/{subtree}": self.counts[subtree] for subtree in sorted(changed)}
        await hub.publish_derived(NAME, values, datatypes=dict.fromkeys(values, "UInt64"))
        return len(values)
