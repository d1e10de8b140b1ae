"""Derived values back onto the broker: the hub's own Sparkplug edge node, one device per plugin.

A plugin that computes something (OEE, counts, a forecast) calls `await hub.publish_derived(name, values)`.
The values go out through a Sparkplug B edge node the hub owns (`hub.sparkplug.edge.EdgeNode`, group and
edge node id from the `derived` configuration section, by default `Plantbus/analytics`), with the plugin's
name as the device id. A metric is declared the first time it is published (its datatype inferred from
the value, or given), which makes the engine publish a new DBIRTH describing it; later values are DDATA by
exception. The hub's own primary host then hosts this node like any other, so a derived value appears on
the UNS mirror (`uns/Plantbus/analytics/<plugin>/<metric>` by default, or wherever `uns.mappings` put it),
flows back through the bus to the historian and other plugins, and SCADA sees it as a Sparkplug tag.

The edge node is created, and connects, on the first publish, so a hub whose plugins derive nothing opens
no second MQTT connection. It waits for the hub's STATE before its birth, like any edge node bound to a
primary host, and stores DATA while the broker or host is away (store and forward).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.config import DerivedConfig
from hub.errors import PlantbusError
from hub.mqtt import BrokerUrl
from hub.samples import Quality, Sample
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.edge import Quality as EdgeQuality
from hub.sparkplug.payload import DataSet, DataType

log = logging.getLogger(__name__)

_QUALITY = {Quality.GOOD: EdgeQuality.GOOD, Quality.STALE: EdgeQuality.STALE, Quality.BAD: EdgeQuality.BAD}


@dataclass(frozen=True, slots=True)
class DerivedValue:
    """One value to publish, when a plain `{name: value}` mapping does not say enough."""

    name: str
    value: Any
    datatype: DataType | str | None = None
    timestamp: int | None = None
    quality: Quality = Quality.GOOD


def infer_datatype(value: Any) -> DataType:
    """The Sparkplug datatype for a Python value (bool, int, float, str, bytes, datetime, DataSet)."""
    if isinstance(value, bool):
        return DataType.Boolean
    if isinstance(value, int):
        return DataType.Int64
    if isinstance(value, float):
        return DataType.Double
    if isinstance(value, str):
        return DataType.String
    if isinstance(value, (bytes, bytearray)):
        return DataType.Bytes
    if isinstance(value, _dt.datetime):
        return DataType.DateTime
    if isinstance(value, DataSet):
        return DataType.DataSet
    raise PlantbusError(
        f"cannot infer a Sparkplug datatype for {type(value).__name__} value {value!r}; "
        "give it with datatypes={name: 'Double'} or a DerivedValue(..., datatype=...)"
    )


class DerivedValues:
    """The hub's derived-values edge node: `publish(plugin, values)` declares and reports metrics."""

    def __init__(
        self,
        config: DerivedConfig,
        broker: BrokerUrl,
        *,
        host_id: str,
        state_dir: Path,
        client_id: str | None = None,
    ) -> None:
        self.group = config.group
        self.edge_node = config.edge_node
        self.broker = broker
        self.host_id = host_id
        self.state_dir = Path(state_dir)
        self.client_id = client_id or f"plantbus-{host_id}-{config.edge_node}"
        self.node: EdgeNode | None = None
        self._start: Callable[[EdgeNode], Any] | None = None
        self._lock = asyncio.Lock()
        self.published = 0

    def attach(self, start: Callable[[EdgeNode], Any] | None) -> None:
        """Let the node run: `start(node)` starts `node.run()` under the hub's TaskGroup (None: hub stopped)."""
        self._start = start

    def owns(self, sample: Sample) -> bool:
        """Whether a sample came from this edge node (a derived value), e.g. to not count one's own output."""
        return sample.group == self.group and sample.edge_node == self.edge_node

    def _ensure_node(self) -> EdgeNode:
        if self.node is None:
            if self._start is None:
                raise PlantbusError("derived values can be published only while the hub runs (from hub_startup on)")
            self.node = EdgeNode(self.broker, self.group, self.edge_node, state_dir=self.state_dir,
                                 primary_host_id=self.host_id, client_id=self.client_id)
            self._start(self.node)
            log.info("derived values: edge node %s/%s started for plugin values", self.group, self.edge_node)
        return self.node

    async def publish(
        self,
        plugin: str,
        values: Mapping[str, Any] | Iterable[DerivedValue | Sample],
        *,
        timestamp: int | None = None,
        datatypes: Mapping[str, DataType | str] | None = None,
    ) -> int:
        """Publish values as metrics of device `plugin`; returns how many were declared or changed."""
        items = _normalise(values, timestamp, datatypes or {})
        if not items:
            return 0
        # Check what can be checked before anything is declared or sent.
        node = self.node
        known = node.device(plugin).metrics if node is not None and plugin in node.devices else {}
        items = [i if i.name in known or i.datatype is not None else
                 DerivedValue(i.name, i.value, infer_datatype(i.value), i.timestamp, i.quality) for i in items]
        async with self._lock:  # declaring metrics and reporting them must not interleave between plugins
            node = self._ensure_node()
            device = node.device(plugin) if plugin in node.devices else node.add_device(plugin)
            count = 0
            pending: dict[tuple[int | None, Quality], dict[str, Any]] = {}
            for item in items:
                if item.name not in device.metrics:
                    datatype = item.datatype if item.datatype is not None else infer_datatype(item.value)
                    device.add_metric(item.name, datatype, item.value, timestamp=item.timestamp)
                    count += 1
                    if item.quality is not Quality.GOOD:
                        # A birth says GOOD; the quality follows as DATA right after it.
                        pending.setdefault((item.timestamp, item.quality), {})[item.name] = item.value
                else:
                    pending.setdefault((item.timestamp, item.quality), {})[item.name] = item.value
            for (ts, quality), group in pending.items():
                count += await node.update(plugin, group, ts, quality=_QUALITY[quality])
            self.published += count
            return count

    async def stop(self) -> None:
        """Send NDEATH and disconnect (the node's values turn STALE at the host)."""
        node = self.node
        if node is not None:
            await node.stop()
            node.close()
            self.node = None

    def diagnostics(self) -> dict[str, Any] | None:
        """The edge node's counters, or None while no plugin has published."""
        node = self.node
        if node is None:
            return None
        return {
            "group": self.group,
            "edge_node": self.edge_node,
            "online": node.online,
            "devices": node.devices,
            "published": self.published,
            "data_messages": node.stats.data_messages,
            "births": node.stats.births,
            "stored": node.stats.stored,
            "dropped": node.stats.dropped,
        }


def _normalise(
    values: Mapping[str, Any] | Iterable[DerivedValue | Sample],
    timestamp: int | None,
    datatypes: Mapping[str, DataType | str],
) -> list[DerivedValue]:
    if isinstance(values, Mapping):
        return [DerivedValue(name, value, datatypes.get(name), timestamp) for name, value in values.items()]
    out = []
    for item in values:
        if isinstance(item, DerivedValue):
            dt = item.datatype if item.datatype is not None else datatypes.get(item.name)
            out.append(DerivedValue(item.name, item.value, dt, item.timestamp if item.timestamp is not None
                                    else timestamp, item.quality))
        elif isinstance(item, Sample):
            out.append(DerivedValue(item.metric, item.value, item.datatype, item.timestamp, item.quality))
        else:
            raise PlantbusError(f"publish_derived takes a mapping of name -> value, DerivedValue or Sample items; "
                                f"got {type(item).__name__}")
    return out
