"""A simulated Modbus server (pymodbus, TCP or RTU on a serial port) for the tests, the benchmark and the demo.

It counts the requests it serves. On a serial port it behaves like units on an RS-485 line: a request for a
unit id it does not have gets no answer at all (not an exception response), so the master times out.
"""

from __future__ import annotations

from typing import Any

from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from hub.broker import free_port

_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


class _LineCore(SimCore):
    """SimCore for a serial line: an unknown unit id is NoSuchIdException (silence), not unit 0's memory."""

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> Any:
        if device_id not in self.devices:
            raise NoSuchIdException(f"no unit {device_id} on this line")
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: Any) -> Any:
        if device_id not in self.devices:
            raise NoSuchIdException(f"no unit {device_id} on this line")
        return await super().async_setValues(device_id, func_code, address, values)


class ModbusSimulator:
    """Modbus server with `size` zeroed registers and bits per table for each unit id.

    TCP on a loopback port by default; with `serial_port` an RTU server on that port (e.g. one end of a
    socat pseudo-terminal pair) with the given line settings.
    """

    def __init__(
        self,
        unit_ids: tuple[int, ...] = (1,),
        *,
        size: int = 1000,
        port: int | None = None,
        serial_port: str | None = None,
        baudrate: int = 19200,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        self.serial_port = serial_port
        self.line = {"baudrate": baudrate, "parity": parity, "stopbits": stopbits}
        self.port = port or (0 if serial_port else free_port())
        self.host = "127.0.0.1"
        self.requests = 0  # requests received, all function codes
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        # The SimData/SimDevice datastore (pymodbus 3.16, the v4 model) numbers from protocol address 0; the
        # older ModbusSequentialDataBlock numbers from 1 and warns that it goes away (ENVIRONMENT-NOTES).
        def bits() -> list[SimData]:
            return [SimData(0, count=size, values=False, datatype=DataType.BITS)]

        def registers() -> list[SimData]:
            return [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)]

        self._devices = [SimDevice(unit, simdata=(bits(), bits(), registers(), registers())) for unit in unit_ids]
        # One memory for the simulator's whole life, so a restarted server serves what the stopped one held.
        self.core = (_LineCore if serial_port else SimCore)(self._devices)

    def _trace(self, sending: bool, pdu: Any) -> Any:
        if not sending:
            self.requests += 1
        return pdu

    async def start(self) -> None:
        """Listen (again) on the simulator's port."""
        if self.serial_port:
            self._server = ModbusSerialServer(
                self._devices, port=self.serial_port, ignore_missing_devices=True, trace_pdu=self._trace,
                **self.line,  # type: ignore[arg-type]
            )  # fmt: skip
        else:
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
