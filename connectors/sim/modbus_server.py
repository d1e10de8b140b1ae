"""Modbus TCP server (pymodbus) exposing the simulated salad line exactly as connectors/sim/layout.py documents."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from connectors.sim.layout import (
    MODBUS_COIL_SIZE,
    MODBUS_DISCRETE_SIZE,
    MODBUS_HOLDING_SIZE,
    MODBUS_INPUT_SIZE,
    MODBUS_TAGS,
    MODBUS_UNIT_ID,
    ModbusTag,
)

log = logging.getLogger(__name__)

WriteCallback = Callable[[str, float], float]  # (model path, engineering value) -> value the model kept


def encode(tag: ModbusTag, value: Any) -> list[int]:
    """Raw register words (high word first) or one 0/1 for bits, for an engineering value."""
    if tag.datatype == "bool":
        return [1 if value else 0]
    if tag.datatype == "float32":
        return list(struct.unpack(">HH", struct.pack(">f", float(value))))
    raw = int(round(float(value) / tag.scale))
    if tag.datatype == "uint32":
        raw = min(max(raw, 0), 0xFFFFFFFF)
        return [raw >> 16, raw & 0xFFFF]
    return [min(max(raw, 0), 0xFFFF)]


def _pack_bits(bits: list[int]) -> list[int]:
    # pymodbus keeps bit tables as 16-bit words, bit 0 of word 0 first.
    words = [0] * ((len(bits) + 15) // 16)
    for i, bit in enumerate(bits):
        if bit:
            words[i // 16] |= 1 << (i % 16)
    return words


class SaladModbusServer:
    """The salad line's PLC as a Modbus TCP server: publish(snapshot) refreshes the image, writes go to `on_write`."""

    def __init__(self, on_write: WriteCallback, host: str = "127.0.0.1", port: int = 502) -> None:
        self.host = host
        self.port = port
        self._on_write = on_write
        self._tables: dict[str, list[int]] = {
            "input": [0] * MODBUS_INPUT_SIZE,
            "holding": [0] * MODBUS_HOLDING_SIZE,
            "discrete": [0] * MODBUS_DISCRETE_SIZE,
            "coil": [0] * MODBUS_COIL_SIZE,
        }
        self._writable: dict[tuple[str, int], ModbusTag] = {(t.table, t.address): t for t in MODBUS_TAGS if t.writable}
        self._server: ModbusTcpServer | None = None

    @property
    def endpoint(self) -> str:
        """Where clients connect."""
        return f"modbus+tcp://{self.host}:{self.port}?unit={MODBUS_UNIT_ID}"

    def publish(self, snapshot: dict[str, Any]) -> None:
        """Encode every mapped value of the snapshot into the register image clients read."""
        for tag in MODBUS_TAGS:
            words = encode(tag, snapshot[tag.path])
            self._tables[tag.table][tag.address : tag.address + len(words)] = words

    async def start(self, initial: dict[str, Any]) -> None:
        """Listen on host:port with the image filled from `initial`."""
        self.publish(initial)
        device = SimDevice(
            id=MODBUS_UNIT_ID,
            simdata=(
                [SimData(0, count=MODBUS_COIL_SIZE, values=False, datatype=DataType.BITS)],
                [SimData(0, count=MODBUS_DISCRETE_SIZE, values=False, datatype=DataType.BITS, readonly=True)],
                [SimData(0, count=MODBUS_HOLDING_SIZE, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=MODBUS_INPUT_SIZE, values=0, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=self._action,
        )
        self._server = ModbusTcpServer(device, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        log.info("simulated salad Modbus server listening at %s", self.endpoint)

    async def _action(
        self,
        function_code: int,
        _start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # pymodbus calls this on every request with its own backing list: refresh it from our image (reads) or
        # hand the write to the model first, so the value a client reads back is the one the model kept.
        table = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding", 16: "holding",
                 4: "input"}.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            result = self._apply_write(table, address, list(set_values))
            if result is not None:
                return result
        image = self._tables[table]
        packed = _pack_bits(image) if table in ("coil", "discrete") else image
        registers[: len(packed)] = packed
        if set_values is not None and table in ("coil", "holding"):
            written = image[address : address + len(set_values)]
            set_values[:] = [bool(v) for v in written] if table == "coil" else written
        return None

    def _apply_write(self, table: str, address: int, values: list[int] | list[bool]) -> ExcCodes | None:
        for offset, raw in enumerate(values):
            tag = self._writable.get((table, address + offset))
            if tag is None:
                return ExcCodes.ILLEGAL_ADDRESS
            value = bool(raw) if tag.datatype == "bool" else int(raw) * tag.scale
            try:
                kept = self._on_write(tag.path, value)
            except ValueError as exc:
                log.warning("refused Modbus write to %s: %s", tag.path, exc)
                return ExcCodes.ILLEGAL_VALUE
            self._tables[table][tag.address] = encode(tag, kept)[0]
        return None

    async def stop(self) -> None:
        """Stop listening and drop client connections."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
