"""`plantbus sparkplug simulate`: simulated edge nodes with changing values, the load generator of the bench.

N edge nodes `sim-node-<i>`, each with D devices `dev-<j>` of M metrics. Every tick each device publishes one
DDATA with all M metrics (forced through report-by-exception, so the offered load is exactly
N x D x M x rate metric updates/s); with D = 0 each node publishes its M metrics as NDATA instead. Ticks follow
absolute deadlines, so a slow tick is caught up rather than stretching the period, and each node is offset
within the period so the load is spread instead of arriving in bursts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.errors import PlantbusError
from hub.mqtt import BrokerUrl
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.payload import DataType

log = logging.getLogger(__name__)

STATES = ("RUNNING", "IDLE", "CHANGEOVER", "CIP", "FAULT")
# The first four metrics give every device one of each kind; the rest cycle through the numeric ones.
_LEAD_KINDS = ("temperature", "good_count", "running", "state")
_NUMERIC_KINDS = ("pressure", "temperature", "speed", "weight", "reject_count", "good_count")
_TYPES = {
    "temperature": DataType.Double,
    "pressure": DataType.Double,
    "speed": DataType.Double,
    "weight": DataType.Double,
    "good_count": DataType.Int64,
    "reject_count": DataType.Int64,
    "running": DataType.Boolean,
    "state": DataType.String,
}
_UNITS = {"temperature": "degC", "pressure": "bar", "speed": "packs/min", "weight": "g"}


@dataclass
class SimStats:
    """What a simulation offered and achieved."""

    nodes: int
    devices: int
    metrics: int
    rate_hz: float
    offered_rate: float  # metric updates/s asked for
    elapsed_s: float = 0.0  # from the first tick to the end
    ticks: int = 0  # device (or node) ticks done
    data_messages: int = 0  # DATA messages handed to the broker connection
    metric_updates: int = 0  # metric values in those messages
    stored: int = 0  # DATA stored while offline (store and forward)
    late_ticks: int = 0  # ticks that started more than 1 ms after their deadline
    max_lag_ms: float = 0.0  # worst lateness of a tick
    per_node: dict[str, int] = field(default_factory=dict)  # metric updates per node

    @property
    def achieved_rate(self) -> float:
        """Metric updates per second actually published."""
        return self.metric_updates / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def message_rate(self) -> float:
        """DATA messages per second actually published."""
        return self.data_messages / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """One line for the log and the bench report."""
        return (
            f"{self.nodes} node(s) x {max(self.devices, 1)} device(s) x {self.metrics} metric(s) at {self.rate_hz:g} Hz: "
            f"offered {self.offered_rate:,.0f}/s, published {self.achieved_rate:,.0f} metric updates/s "
            f"({self.message_rate:,.0f} DATA/s) over {self.elapsed_s:.1f} s; "
            f"{self.late_ticks} late tick(s), worst lag {self.max_lag_ms:.1f} ms"
        )


class _Device:
    """Values of one simulated device: noisy drifting analogues, rising counters, rare flag and state flips."""

    def __init__(self, rng: random.Random, metrics: int) -> None:
        self.rng = rng
        self.kinds = [_LEAD_KINDS[i] if i < len(_LEAD_KINDS) else _NUMERIC_KINDS[i % len(_NUMERIC_KINDS)] for i in range(metrics)]
        self.names = [f"{kind}_{i:02d}" for i, kind in enumerate(self.kinds)]
        self.base = [self._base(kind) for kind in self.kinds]
        self.phase = [rng.uniform(0, 2 * math.pi) for _ in self.kinds]
        self.values: list[Any] = [self._initial(kind, base) for kind, base in zip(self.kinds, self.base)]

    def _base(self, kind: str) -> float:
        r = self.rng
        return {
            "temperature": r.choice((r.uniform(2, 6), r.uniform(60, 90), r.uniform(160, 190))),
            "pressure": r.uniform(1.5, 6.0),
            "speed": r.uniform(20, 120),
            "weight": r.choice((40.0, 250.0, 300.0, 450.0)),
        }.get(kind, 0.0)

    def _initial(self, kind: str, base: float) -> Any:
        if kind in ("good_count", "reject_count"):
            return self.rng.randrange(0, 100_000)
        if kind == "running":
            return True
        if kind == "state":
            return "RUNNING"
        return round(base, 3)

    def declare(self, add_metric: Any) -> None:
        for kind, name, value in zip(self.kinds, self.names, self.values):
            unit = _UNITS.get(kind)
            add_metric(name, _TYPES[kind], value, properties={"engUnit": unit} if unit else None)

    def tick(self, t: float) -> dict[str, Any]:
        """New values for every metric; numeric ones always move so none is an unchanged repeat."""
        r = self.rng
        values = self.values
        out = {}
        for i, kind in enumerate(self.kinds):
            if kind in ("temperature", "pressure", "speed", "weight"):
                base = self.base[i]
                drift = 0.02 * base * math.sin(t / 600 + self.phase[i])  # slow, ten-minute swing
                new = base + drift + r.gauss(0, 0.002 * base + 0.01)
                if new == values[i]:
                    new += 1e-9
            elif kind == "good_count":
                new = values[i] + r.randint(1, 5)
            elif kind == "reject_count":
                new = values[i] + (1 if r.random() < 0.05 else 0)
            elif kind == "running":
                new = values[i] if r.random() > 0.001 else not values[i]
            else:
                new = values[i] if r.random() > 0.001 else r.choice(STATES)
            values[i] = new
            out[self.names[i]] = new
        return out


class Simulator:
    """Simulated edge nodes on one broker; run() ticks them until the duration ends or it is cancelled."""

    def __init__(
        self,
        broker: BrokerUrl,
        group: str,
        nodes: int,
        devices: int,
        metrics: int,
        rate_hz: float,
        *,
        state_dir: Path,
        primary_host_id: str | None = None,
        seed: int = 0,
        wait_online: bool = True,
    ) -> None:
        if nodes < 1 or devices < 0 or metrics < 1 or not rate_hz > 0:
            raise PlantbusError("simulate needs nodes >= 1, devices >= 0, metrics >= 1 and a positive rate")
        self.rate_hz = rate_hz
        self.wait_online = wait_online
        self.stats = SimStats(nodes, devices, metrics, rate_hz, nodes * max(devices, 1) * metrics * rate_hz)
        rng = random.Random(seed)
        self.nodes: list[tuple[EdgeNode, list[tuple[str | None, _Device]]]] = []
        for i in range(nodes):
            node = EdgeNode(broker, group, f"sim-node-{i}", state_dir=state_dir, primary_host_id=primary_host_id)
            sims: list[tuple[str | None, _Device]] = []
            if devices == 0:
                sim = _Device(random.Random(rng.random()), metrics)
                sim.declare(node.add_node_metric)
                sims.append((None, sim))
            for j in range(devices):
                sim = _Device(random.Random(rng.random()), metrics)
                sim.declare(node.add_device(f"dev-{j}").add_metric)
                sims.append((f"dev-{j}", sim))
            self.nodes.append((node, sims))

    async def run(self, duration_s: float | None = None) -> SimStats:
        """Start the nodes, tick until `duration_s` has passed (None: until cancelled), stop them with NDEATH."""
        loop = asyncio.get_running_loop()
        start: float | None = None
        end: float | None = None
        for node, _ in self.nodes:
            node.start()
        try:
            if self.wait_online:
                log.info("simulator: waiting for %d edge node(s) to be online", len(self.nodes))
                await asyncio.gather(*(node.wait_online() for node, _ in self.nodes))
            start = loop.time()
            stop_at = None if duration_s is None else start + duration_s
            async with asyncio.TaskGroup() as tg:
                for index, (node, sims) in enumerate(self.nodes):
                    offset = index / len(self.nodes) / self.rate_hz
                    tg.create_task(
                        self._tick_node(node, sims, start + offset, stop_at), name=f"plantbus[simulate:{node.edge_node_id}]"
                    )
            end = stop_at  # every tick due before the end was done
        finally:
            if start is not None:
                self.stats.elapsed_s = (end if end is not None else loop.time()) - start
            self._collect()
            await asyncio.gather(*(node.stop() for node, _ in self.nodes), return_exceptions=True)
            for node, _ in self.nodes:
                node.close()
            log.info("simulator: %s", self.stats.summary())
        return self.stats

    async def _tick_node(
        self, node: EdgeNode, sims: list[tuple[str | None, _Device]], first: float, stop_at: float | None
    ) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.rate_hz
        stats = self.stats
        k = 0
        while True:
            deadline = first + k * period
            if stop_at is not None and deadline >= stop_at:
                return
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                if delay < -0.001:
                    stats.late_ticks += 1
                    stats.max_lag_ms = max(stats.max_lag_ms, -delay * 1000)
                await asyncio.sleep(0)  # behind schedule: still let the connection and other nodes run
            t = time.time()
            for device_id, sim in sims:
                await node.update(device_id, sim.tick(t), force=True)
                stats.ticks += 1
            k += 1

    def _collect(self) -> None:
        s = self.stats
        s.data_messages = sum(n.stats.data_messages for n, _ in self.nodes)
        s.metric_updates = sum(n.stats.metrics_published for n, _ in self.nodes)
        s.stored = sum(n.stats.stored for n, _ in self.nodes)
        s.per_node = {n.edge_node_id: n.stats.metrics_published for n, _ in self.nodes}


async def simulate(
    broker: BrokerUrl,
    group: str,
    nodes: int,
    devices: int,
    metrics: int,
    rate_hz: float,
    *,
    state_dir: Path,
    duration_s: float | None = None,
    primary_host_id: str | None = None,
    seed: int = 0,
) -> SimStats:
    """Run simulated edge nodes for `duration_s` (None: until cancelled) and return what they achieved."""
    sim = Simulator(
        broker, group, nodes, devices, metrics, rate_hz, state_dir=state_dir, primary_host_id=primary_host_id, seed=seed
    )
    return await sim.run(duration_s)
