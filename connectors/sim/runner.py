"""Runs the plant model against a clock and keeps both protocol servers in step with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from connectors.sim.layout import MODBUS_UNIT_ID, OPCUA_NAMESPACE
from connectors.sim.model import DEFAULT_START, PlantModel
from connectors.sim.modbus_server import SaladModbusServer
from connectors.sim.opcua_server import OatbarOpcUaServer

log = logging.getLogger(__name__)

# Cap on simulated seconds per tick, so a huge time factor never blocks the event loop for long.
MAX_STEP_S = 3600


class SimulatedPlant:
    """The simulated plant: model + OPC UA server (oatbar) + Modbus server (salad), advanced `time_factor` x real time."""

    def __init__(
        self,
        seed: int = 1,
        *,
        opcua_port: int = 4840,
        modbus_port: int = 5020,
        host: str = "127.0.0.1",
        time_factor: float = 1.0,
        tick_s: float = 0.2,
        start: datetime = DEFAULT_START,
        autorun: bool = True,
    ) -> None:
        if time_factor <= 0:
            raise ValueError(f"time_factor must be positive, got {time_factor}; use 1 for real time")
        self.model = PlantModel(seed, start)
        self.time_factor = time_factor
        self.tick_s = tick_s
        self.opcua = OatbarOpcUaServer(host, opcua_port)
        self.modbus = SaladModbusServer(self._write, host, modbus_port)
        # autorun=False leaves the clock to the caller (`await plant.tick(s)`), for exact tests and replays.
        self.autorun = autorun
        self._task: asyncio.Task[None] | None = None

    def _write(self, path: str, value: float) -> float:
        kept = self.model.write(path, value)
        log.info("setpoint %s written: %s (kept %s)", path, value, kept)
        return kept

    def endpoints(self) -> dict[str, Any]:
        """Where the servers listen, as the JSON line `python -m connectors.sim` prints."""
        return {
            "opcua": {"endpoint": self.opcua.endpoint, "namespace": OPCUA_NAMESPACE, "line": "oatbar"},
            "modbus": {"host": self.modbus.host, "port": self.modbus.port, "unit": MODBUS_UNIT_ID, "line": "salad"},
            "seed": self.model.seed,
            "time_factor": self.time_factor,
            "sim_start": self.model.start.isoformat(),
        }

    async def start(self) -> None:
        """Start both servers and the clock task."""
        snapshot = self.model.snapshot()
        await self.opcua.start(snapshot)
        try:
            await self.modbus.start(snapshot)
        except BaseException:
            await self.opcua.stop()
            raise
        if self.autorun:
            self._task = asyncio.create_task(self._clock(), name="plantbus[sim].clock")

    async def tick(self, sim_elapsed_s: float) -> None:
        """Apply client writes, advance the model to `sim_elapsed_s` and publish the new values to both servers."""
        for path, value in self.opcua.take_writes().items():
            try:
                self._write(path, value)
            except ValueError as exc:
                log.warning("refused OPC UA write to %s: %s", path, exc)
        self.model.advance_to(min(sim_elapsed_s, self.model.elapsed_s + MAX_STEP_S))
        snapshot = self.model.snapshot()
        self.modbus.publish(snapshot)
        await self.opcua.publish(snapshot)

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            await self.tick((loop.time() - t0) * self.time_factor)
            await asyncio.sleep(self.tick_s)

    async def stop(self) -> None:
        """Stop the clock and both servers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.modbus.stop()
        await self.opcua.stop()

    async def __aenter__(self) -> SimulatedPlant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
