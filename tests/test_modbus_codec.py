"""Register encodings (every datatype, byte order, word order, scale) and read planning, as pure functions."""

from __future__ import annotations

import math
import struct

import pytest

from connectors.modbus.codec import decode, decode_raw, encode, encode_bit, plan_reads
from connectors.modbus.config import ModbusTag
from hub.errors import WriteError


def tag(**kw) -> ModbusTag:
    return ModbusTag.model_validate({"name": kw.pop("name", "t"), "address": kw.pop("address", 0), **kw})


ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize(
    ("datatype", "value"),
    [("int16", -1234), ("uint16", 65000), ("int32", -123456789), ("uint32", 4_000_000_000), ("float32", 21.5), ("float64", -1e-300)],
)
def test_every_numeric_datatype_round_trips_in_every_order(datatype, value, byte_order, word_order):
    t = tag(datatype=datatype, byte_order=byte_order, word_order=word_order)
    registers = encode(t, value)
    assert len(registers) == t.width
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode(t, registers) == value


def test_known_layouts_abcd_cdab_badc_dcba():
    # 0x41A40000 is float32 20.5: bytes A=41 B=A4 C=00 D=00.
    assert decode(tag(datatype="float32"), [0x41A4, 0x0000]) == 20.5
    assert decode(tag(datatype="float32", word_order="little"), [0x0000, 0x41A4]) == 20.5
    assert decode(tag(datatype="float32", byte_order="little"), [0xA441, 0x0000]) == 20.5
    assert decode(tag(datatype="float32", byte_order="little", word_order="little"), [0x0000, 0xA441]) == 20.5
    assert decode(tag(datatype="uint32"), [0x0001, 0x0002]) == 0x00010002
    assert decode(tag(datatype="uint32", word_order="little"), [0x0001, 0x0002]) == 0x00020001
    assert decode(tag(datatype="int16"), [0xFFFF]) == -1
    assert decode(tag(datatype="uint16", byte_order="little"), [0x0102]) == 0x0201


def test_scale_and_offset_apply_and_invert_with_rounding():
    t = tag(datatype="int16", scale=0.1, offset=-40.0)
    assert decode(t, [615]) == pytest.approx(21.5)
    assert encode(t, 21.5) == [615]
    assert encode(t, 21.56) == [616]  # rounded to the nearest raw step
    with pytest.raises(WriteError, match="outside int16 range"):
        encode(t, 4000.0)
    with pytest.raises(WriteError, match="integer register"):
        encode(t, math.nan)


def test_strings_by_byte_order_strip_padding():
    t = tag(datatype="string", length=4)
    regs = encode(t, "SB-300")
    assert regs == [0x5342, 0x2D33, 0x3030, 0x0000]
    assert decode(t, regs) == "SB-300"
    swapped = tag(datatype="string", length=4, byte_order="little")
    assert decode(swapped, [0x4253, 0x332D, 0x3030, 0]) == "SB-300"
    assert decode(swapped, encode(swapped, "GR-12")) == "GR-12"
    with pytest.raises(WriteError, match="holds 8 characters"):
        encode(t, "too long for it")


def test_bit_in_word_reads_and_sets_one_bit():
    t = tag(datatype="bit", bit=3)
    assert decode_raw(t, [0b1000]) is True
    assert decode_raw(t, [0b0111]) is False
    assert encode_bit(t, 0b0001, True) == 0b1001
    assert encode_bit(t, 0xFFFF, False) == 0xFFF7
    assert decode_raw(tag(datatype="bit", bit=15), [0x8000]) is True


def test_float32_loses_only_float32_precision():
    t = tag(datatype="float32")
    assert decode(t, encode(t, 0.1)) == struct.unpack(">f", struct.pack(">f", 0.1))[0]


def test_contiguous_tags_share_one_read_and_gaps_split_unless_allowed():
    tags = [
        tag(name="a", address=0, datatype="uint16"),
        tag(name="b", address=1, datatype="float32"),
        tag(name="c", address=3, datatype="int16"),
        tag(name="d", address=10, datatype="uint16"),
        tag(name="e", table="coil", address=0),
        tag(name="f", table="coil", address=5),
        tag(name="g", table="input", address=0, datatype="uint16"),
    ]
    blocks = plan_reads(tags, max_registers=125, max_bits=2000, max_gap=0)
    shape = [(b.table, b.start, b.count, [t.name for t in b.tags]) for b in blocks]
    assert shape == [
        ("coil", 0, 1, ["e"]),
        ("coil", 5, 1, ["f"]),
        ("holding", 0, 4, ["a", "b", "c"]),
        ("holding", 10, 1, ["d"]),
        ("input", 0, 1, ["g"]),
    ]
    merged = plan_reads(tags, max_registers=125, max_bits=2000, max_gap=6)
    assert [(b.table, b.start, b.count) for b in merged] == [("coil", 0, 6), ("holding", 0, 11), ("input", 0, 1)]


def test_blocks_respect_the_request_limits():
    tags = [tag(name=f"r{i}", address=i * 2, datatype="float32") for i in range(200)]  # 400 registers
    blocks = plan_reads(tags, max_registers=125, max_bits=2000, max_gap=0)
    assert all(b.count <= 125 for b in blocks)
    assert sum(len(b.tags) for b in blocks) == 200
    assert len(blocks) == 4  # 62 float32 (124 registers) per read
    coils = [tag(name=f"c{i}", table="coil", address=i) for i in range(4500)]
    bit_blocks = plan_reads(coils, max_registers=125, max_bits=2000, max_gap=0)
    assert [b.count for b in bit_blocks] == [2000, 2000, 500]


def test_block_values_decode_each_tag_at_its_offset():
    tags = [
        tag(name="speed", address=100, datatype="int16", scale=0.1),
        tag(name="count", address=101, datatype="uint32", word_order="little"),
        tag(name="fault", address=103, datatype="bit", bit=0),
        tag(name="guard", address=103, datatype="bit", bit=1),
    ]
    (block,) = plan_reads(tags, max_registers=125, max_bits=2000, max_gap=0)
    assert (block.start, block.count) == (100, 4)
    values = block.values([300, 7, 1, 0b10])
    assert values == {"speed": pytest.approx(30.0), "count": 65543, "fault": False, "guard": True}
