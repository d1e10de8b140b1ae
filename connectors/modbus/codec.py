"""Register encodings and read planning: pure functions, no I/O.

A 16-bit register travels as two bytes. `byte_order` says which byte of each register comes first
(Modbus says big endian); `word_order` says which register of a 32/64-bit value comes first (big: the most
significant, as in the common "ABCD" layout; little: "CDAB"). Both little give "DCBA", little bytes with big
words "BADC".
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from connectors.modbus.config import BIT_TABLES, ModbusTag
from hub.errors import WriteError

_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}
_INT_LIMITS = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
}


def _registers_to_bytes(tag: ModbusTag, registers: list[int]) -> bytes:
    """Big-endian bytes of the value, undoing the tag's byte and word order."""
    words = list(registers) if tag.word_order == "big" else list(reversed(registers))
    if tag.byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return b"".join(w.to_bytes(2, "big") for w in words)


def _bytes_to_registers(tag: ModbusTag, data: bytes) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if tag.byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words if tag.word_order == "big" else list(reversed(words))


def decode_raw(tag: ModbusTag, registers: list[int]) -> Any:
    """The raw value of a register tag from its registers (before scaling)."""
    kind = tag.datatype
    if kind == "bit":
        return bool((registers[0] >> (tag.bit or 0)) & 1)
    if kind == "string":
        # Strings are a sequence of characters, so word order does not reorder them; byte order swaps pairs.
        words = [((w & 0xFF) << 8) | (w >> 8) if tag.byte_order == "little" else w for w in registers]
        data = b"".join(w.to_bytes(2, "big") for w in words)
        return data.split(b"\x00", 1)[0].decode("latin-1").rstrip(" ")
    return struct.unpack(">" + _STRUCT[kind or "uint16"], _registers_to_bytes(tag, registers))[0]


def decode(tag: ModbusTag, registers: list[int]) -> Any:
    """The engineering value of a register tag: decoded, then raw * scale + offset."""
    raw = decode_raw(tag, registers)
    if tag.scaled:
        return raw * tag.scale + tag.offset
    if tag.datatype == "float64" or tag.datatype == "float32":
        return float(raw)
    return raw


def encode(tag: ModbusTag, value: Any) -> list[int]:
    """The registers to write for an engineering value (inverse scaling, rounding, range check); not for bits."""
    kind = tag.datatype
    if kind == "string":
        data = str(value).encode("latin-1", errors="replace")
        size = 2 * (tag.length or 1)
        if len(data) > size:
            raise WriteError(f"tag {tag.name!r} holds {size} characters; {value!r} is {len(data)} long")
        data = data.ljust(size, b"\x00")
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, size, 2)]
        return [((w & 0xFF) << 8) | (w >> 8) if tag.byte_order == "little" else w for w in words]
    if kind in ("bit", "bool", None):
        raise WriteError(f"tag {tag.name!r} is a bit: write it with encode_bit()")
    raw: float | int = (float(value) - tag.offset) / tag.scale if tag.scaled else value
    if kind in _INT_LIMITS:
        if isinstance(raw, float):
            if not math.isfinite(raw):
                raise WriteError(f"tag {tag.name!r} is an integer register; cannot write {value!r}")
            raw = round(raw)
        low, high = _INT_LIMITS[kind]
        if not low <= raw <= high:
            raise WriteError(
                f"tag {tag.name!r}: {value!r} becomes raw {raw}, outside {kind} range {low}..{high}"
                + (" (after inverse scaling)" if tag.scaled else "")
            )
        data = struct.pack(">" + _STRUCT[kind], int(raw))
    else:
        data = struct.pack(">" + _STRUCT[kind], float(raw))
    return _bytes_to_registers(tag, data)


def encode_bit(tag: ModbusTag, word: int, value: bool) -> int:
    """The register `word` with the tag's bit set to `value` (read-modify-write of a bit-in-word tag)."""
    mask = 1 << (tag.bit or 0)
    return (word | mask) if value else (word & ~mask & 0xFFFF)


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: a contiguous range of one table and the tags it feeds."""

    table: str
    start: int
    count: int
    tags: tuple[ModbusTag, ...]

    def values(self, data: list[int] | list[bool]) -> dict[str, Any]:
        """Engineering values of the block's tags from what the request returned."""
        out: dict[str, Any] = {}
        for tag in self.tags:
            at = tag.address - self.start
            if self.table in BIT_TABLES:
                out[tag.name] = bool(data[at])
            else:
                out[tag.name] = decode(tag, list(data[at : at + tag.width]))
        return out


def plan_reads(tags: list[ModbusTag], *, max_registers: int, max_bits: int, max_gap: int) -> list[ReadBlock]:
    """Group tags into as few read requests as the limits allow, per table, spanning gaps up to `max_gap`."""
    blocks: list[ReadBlock] = []
    for table in ("coil", "discrete", "holding", "input"):
        chosen = sorted((t for t in tags if t.table == table), key=lambda t: (t.address, t.width))
        limit = max_bits if table in BIT_TABLES else max_registers
        current: list[ModbusTag] = []
        start = end = 0  # end is exclusive
        for tag in chosen:
            tag_end = tag.address + tag.width
            if current and tag.address - end <= max_gap and max(end, tag_end) - start <= limit:
                current.append(tag)
                end = max(end, tag_end)
                continue
            if current:
                blocks.append(ReadBlock(table, start, end - start, tuple(current)))
            current, start, end = [tag], tag.address, tag_end
        if current:
            blocks.append(ReadBlock(table, start, end - start, tuple(current)))
    return blocks
