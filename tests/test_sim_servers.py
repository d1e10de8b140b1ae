"""The simulated plant's protocol servers: real asyncua and pymodbus clients read the documented tags and write setpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from connectors.sim.layout import MODBUS_TAGS, MODBUS_UNIT_ID, OPCUA_NAMESPACE, OPCUA_TAGS, ModbusTag
from connectors.sim.modbus_server import encode
from connectors.sim.model import LineState
from connectors.sim.runner import SimulatedPlant
from hub.broker import free_port

THREE_HOURS = 3 * 3600  # 05:50 + 3 h = 08:50: both lines inside shift A, past the first break


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll an async-free predicate until true or fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def plant() -> AsyncIterator[SimulatedPlant]:
    """A plant whose clock the test drives (`await plant.tick(s)`), so reads compare exactly with the model."""
    p = SimulatedPlant(seed=1, opcua_port=free_port(), modbus_port=free_port(), autorun=False)
    async with p:
        await p.tick(THREE_HOURS)
        yield p


def _decode(client: AsyncModbusTcpClient, tag: ModbusTag, words: list[int]) -> float | int:
    dtype = {"uint16": client.DATATYPE.UINT16, "uint32": client.DATATYPE.UINT32,
             "float32": client.DATATYPE.FLOAT32}[tag.datatype]
    raw = client.convert_from_registers(words, dtype, word_order="big")
    return raw * tag.scale if tag.scale != 1 else raw


async def test_opcua_server_exposes_every_documented_node_with_its_type_and_model_value(plant: SimulatedPlant) -> None:
    snapshot = plant.model.snapshot()
    async with Client(plant.opcua.endpoint) as client:
        idx = await client.get_namespace_index(OPCUA_NAMESPACE)
        for tag in OPCUA_TAGS:
            by_id = client.get_node(ua.NodeId(tag.node_id, idx))
            by_path = await client.nodes.objects.get_child([f"{idx}:{name}" for name in tag.browse_path])
            assert by_path.nodeid == by_id.nodeid, tag.path
            dv = await by_id.read_data_value()
            assert dv.Value.VariantType == getattr(ua.VariantType, tag.variant), tag.path
            expected = snapshot[tag.path]
            assert dv.Value.Value == (pytest.approx(expected) if isinstance(expected, float) else expected), tag.path
            access = await by_id.read_attribute(ua.AttributeIds.UserAccessLevel)
            assert bool(access.Value.Value & ua.AccessLevel.CurrentWrite.mask) == tag.writable, tag.path
        good = client.get_node(ua.NodeId("oatbar.filler.good_count", idx))
        before = await good.read_value()
        await plant.tick(THREE_HOURS + 600)
        assert await good.read_value() > before


async def test_opcua_setpoint_write_reaches_the_model_and_is_clamped(plant: SimulatedPlant) -> None:
    line = plant.model.lines["oatbar"]
    async with Client(plant.opcua.endpoint) as client:
        idx = await client.get_namespace_index(OPCUA_NAMESPACE)
        setpoint = client.get_node(ua.NodeId("oatbar.filler.speed_setpoint", idx))
        speed = client.get_node(ua.NodeId("oatbar.filler.speed", idx))
        await setpoint.write_value(ua.Variant(50.0, ua.VariantType.Double))
        await plant.tick(THREE_HOURS + 1)
        assert line.speed_setpoint == 50.0
        seen = []
        for step in range(2, 600, 20):
            await plant.tick(THREE_HOURS + step)
            if line.state == LineState.RUNNING:
                seen.append(await speed.read_value())
        assert seen and max(seen) <= 50.0
        await setpoint.write_value(ua.Variant(1000.0, ua.VariantType.Double))
        await plant.tick(THREE_HOURS + 601)
        assert await setpoint.read_value() == line.spec.max_speed == line.speed_setpoint


async def test_modbus_server_exposes_the_documented_map_and_it_decodes_to_model_values(plant: SimulatedPlant) -> None:
    snapshot = plant.model.snapshot()
    assert snapshot["salad/line/state"] in (int(LineState.RUNNING), int(LineState.STOPPED), int(LineState.IDLE))
    assert snapshot["salad/bowl_filler/good_count"] > 0
    client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus.port)
    await client.connect()
    try:
        for tag in MODBUS_TAGS:
            expected = snapshot[tag.path]
            if tag.table == "input":
                rr = await client.read_input_registers(tag.address, count=tag.count, device_id=MODBUS_UNIT_ID)
            elif tag.table == "holding":
                rr = await client.read_holding_registers(tag.address, count=tag.count, device_id=MODBUS_UNIT_ID)
            elif tag.table == "discrete":
                rr = await client.read_discrete_inputs(tag.address, count=1, device_id=MODBUS_UNIT_ID)
            else:
                rr = await client.read_coils(tag.address, count=1, device_id=MODBUS_UNIT_ID)
            assert not rr.isError(), tag.path
            if tag.datatype == "bool":
                assert rr.bits[0] == bool(expected), tag.path
            else:
                assert _decode(client, tag, rr.registers) == pytest.approx(expected, rel=1e-6, abs=tag.scale / 2), tag.path
        # The whole input block answers in one read, so a connector may batch.
        rr = await client.read_input_registers(0, count=120, device_id=MODBUS_UNIT_ID)
        assert not rr.isError() and len(rr.registers) == 120
        # 32-bit counters span two registers, high word first.
        uint32 = next(t for t in MODBUS_TAGS if t.datatype == "uint32")
        assert client.convert_from_registers(encode(uint32, 123_456_789), client.DATATYPE.UINT32) == 123_456_789
        # Holding registers outside the documented setpoints refuse writes (illegal address).
        wr = await client.write_register(5, 1, device_id=MODBUS_UNIT_ID)
        assert wr.isError()
    finally:
        client.close()


async def test_modbus_setpoint_and_run_enable_writes_change_the_salad_line(plant: SimulatedPlant) -> None:
    line = plant.model.lines["salad"]
    client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus.port)
    await client.connect()
    try:
        wr = await client.write_register(0, 150, device_id=MODBUS_UNIT_ID)  # 15.0 packs/min (scale 0.1)
        assert not wr.isError()
        assert line.speed_setpoint == 15.0
        seen = []
        for step in range(1, 900, 30):
            await plant.tick(THREE_HOURS + step)
            if line.state == LineState.RUNNING:
                rr = await client.read_input_registers(302, count=2, device_id=MODBUS_UNIT_ID)  # sleever speed
                seen.append(client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32))
        assert seen and max(seen) <= 15.0
        wr = await client.write_register(0, 9000, device_id=MODBUS_UNIT_ID)  # 900 packs/min: clamped
        assert not wr.isError()
        rr = await client.read_holding_registers(0, count=1, device_id=MODBUS_UNIT_ID)
        assert rr.registers[0] * 0.1 == pytest.approx(line.spec.max_speed)
        assert not (await client.write_coil(0, False, device_id=MODBUS_UNIT_ID)).isError()
        assert line.run_enabled is False
        await plant.tick(THREE_HOURS + 900 + 4000)  # long enough for any ongoing stop to end
        assert line.state in (LineState.IDLE, LineState.BREAK)
        rr = await client.read_discrete_inputs(0, count=1, device_id=MODBUS_UNIT_ID)
        assert rr.bits[0] is False
    finally:
        client.close()


async def test_free_running_clock_advances_the_plant_faster_than_real_time() -> None:
    async with SimulatedPlant(seed=4, opcua_port=free_port(), modbus_port=free_port(), time_factor=600) as p:
        async with Client(p.opcua.endpoint) as client:
            idx = await client.get_namespace_index(OPCUA_NAMESPACE)
            sim_time = client.get_node(ua.NodeId("oatbar.line.sim_time", idx))
            first = await sim_time.read_value()
            await wait_for(lambda: p.model.elapsed_s >= 900, what="15 simulated minutes")
            deadline = asyncio.get_running_loop().time() + 5
            while (latest := await sim_time.read_value()) == first:
                assert asyncio.get_running_loop().time() < deadline, "sim_time node never changed"
                await asyncio.sleep(0.05)
            assert latest > first
