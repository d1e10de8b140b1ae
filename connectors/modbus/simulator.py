"""A simulated Modbus TCP server (pymodbus) for the tests, the benchmark and the demo; counts the requests it serves."""

from __future__ import annotations

from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from hub.broker import free_port

_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


class ModbusSimulator:
    """Modbus TCP server on a loopback port with `size` zeroed registers and bits per table for each unit id."""

    def __init__(self, unit_ids: tuple[int, ...] = (1,), *, size: int = 1000, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.requests = 0  # requests received, all function codes
        self._server: ModbusTcpServer | None = None
        # The SimData/SimDevice datastore (pymodbus 3.16, the v4 model) numbers from protocol address 0; the
        # older ModbusSequentialDataBlock numbers from 1 and warns that it goes away (ENVIRONMENT-NOTES).
        def bits() -> list[SimData]:
            return [SimData(0, count=size, values=False, datatype=DataType.BITS)]

        def registers() -> list[SimData]:
            return [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)]

        self._devices = [SimDevice(unit, simdata=(bits(), bits(), registers(), registers())) for unit in unit_ids]
        # One memory for the simulator's whole life, so a restarted server serves what the stopped one held.
        self.core = SimCore(self._devices)

    def _trace(self, sending: bool, pdu: Any) -> Any:
        if not sending:
            self.requests += 1
        return pdu

    async def start(self) -> None:
        """Listen (again) on the simulator's port."""
        self._server = ModbusTcpServer(self._devices, address=(self.host, self.port), trace_pdu=self._trace)
        self._server.context = self.core
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        """Stop listening and drop every client connection; the data stays for the next start()."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def get(self, table: str, address: int, count: int = 1, unit: int = 1) -> list[Any]:
        """Values at zero-based protocol addresses."""
        result = await self.core.async_getValues(unit, _FUNCTION[table], address, count)
        if not isinstance(result, list):
            raise ValueError(f"simulator: {table} {address}..{address + count - 1} of unit {unit}: {result!r}")
        return result

    async def set(self, table: str, address: int, values: list[Any], unit: int = 1) -> None:
        """Put values at zero-based protocol addresses, as the PLC program would."""
        fc = {"coil": 5, "discrete": 2, "holding": 16, "input": 4}[table]
        error = await self.core.async_setValues(unit, fc, address, values)
        if error is not None:
            raise ValueError(f"simulator: cannot set {table} {address} of unit {unit}: {error!r}")
