"""The Modbus connector end to end: a real pymodbus server, a real Mosquitto, a plain Sparkplug subscriber."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import pytest
from _edge_support import Observer, send_dcmd, wait_until

from connectors.base import ConnectorContext
from connectors.modbus.config import ModbusSettings
from connectors.modbus.connector import ModbusConnector
from connectors.modbus.simulator import ModbusSimulator
from hub.broker import free_port
from hub.mqtt import BrokerUrl
from hub.sparkplug.payload import DataType, Metric, decode_value, parse_payload
from hub.sparkplug.topic import MessageType as MT

NODE = "salad-plc"
GOOD, BAD = 192, 0


class DeviceView:
    """What a plain subscriber knows of one device from DBIRTH and DDATA: each metric's value, type and quality."""

    def __init__(self, obs: Observer, device: str) -> None:
        self.obs, self.device = obs, device
        self.seen = 0
        self.births = 0
        self.by_alias: dict[int, str] = {}
        self.types: dict[str, DataType] = {}
        self.values: dict[str, Any] = {}
        self.quality: dict[str, int] = {}
        self.history: list[tuple[str, Any, int]] = []  # (name, value, quality) in arrival order

    def refresh(self) -> DeviceView:
        for m in self.obs.messages[self.seen :]:
            if m.topic.device_id != self.device or m.type not in (MT.DBIRTH, MT.DDATA):
                continue
            if m.type is MT.DBIRTH:
                self.births += 1
            for pm in parse_payload(m.raw).metrics:
                if m.type is MT.DBIRTH:
                    self.by_alias[pm.alias] = pm.name
                    self.types[pm.name] = DataType(pm.datatype)
                name = self.by_alias[pm.alias]
                kind = pm.WhichOneof("value")
                value = None if pm.is_null or kind is None else decode_value(self.types[name], kind, getattr(pm, kind))
                quality = GOOD
                for key, prop in zip(pm.properties.keys, pm.properties.values):
                    if key == "Quality":
                        quality = prop.int_value
                self.values[name], self.quality[name] = value, quality
                self.history.append((name, value, quality))
        self.seen = len(self.obs.messages)
        return self

    async def until(self, check, what: str, timeout: float = 10.0) -> None:
        await wait_until(lambda: check(self.refresh()), timeout, what)


def connector(broker, group_id, tmp_path, devices: list[dict], **extra) -> ModbusConnector:
    settings = ModbusSettings.model_validate(
        {
            "type": "modbus",
            "group_id": group_id,
            "edge_node_id": NODE,
            "devices": devices,
            "backoff_min_s": 0.05,
            "backoff_max_s": 0.3,
            **extra,
        }
    )
    context = ConnectorContext(BrokerUrl.parse(broker.url), None, tmp_path / "state")
    return ModbusConnector("salad_plc", settings, context)


def tcp(device_id: str, port: int, tags: list[dict], *, interval_s: float = 0.05, **extra) -> dict:
    return {
        "device_id": device_id,
        "host": "127.0.0.1",
        "port": port,
        "timeout_s": 0.5,
        "groups": [{"interval_s": interval_s, "tags": tags}],
        **extra,
    }


def words(fmt: str, value: Any) -> list[int]:
    """Big-endian registers of a struct value, computed here independently of the connector's codec."""
    data = struct.pack(">" + fmt, value)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def swap_bytes(regs: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


async def running(conn: ModbusConnector) -> asyncio.Task[None]:
    return asyncio.create_task(conn.run(), name="test-connector")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


TAGS = [
    {"name": "i16", "address": 0, "datatype": "int16"},
    {"name": "u16_le", "address": 1, "datatype": "uint16", "byte_order": "little"},
    {"name": "i32", "address": 2, "datatype": "int32"},
    {"name": "u32_cdab", "address": 4, "datatype": "uint32", "word_order": "little"},
    {"name": "f32", "address": 6, "datatype": "float32"},
    {"name": "f32_dcba", "address": 8, "datatype": "float32", "byte_order": "little", "word_order": "little"},
    {"name": "f64", "address": 10, "datatype": "float64"},
    {"name": "f64_badc", "address": 14, "datatype": "float64", "byte_order": "little"},
    {"name": "recipe", "address": 18, "datatype": "string", "length": 4},
    {"name": "fault", "address": 22, "datatype": "bit", "bit": 0},
    {"name": "guard_open", "address": 22, "datatype": "bit", "bit": 15},
    {"name": "temperature", "address": 23, "datatype": "int16", "scale": 0.1, "offset": -40, "unit": "degC"},
    {"name": "speed", "address": 24, "datatype": "uint16", "scale": 0.5},
    {"name": "counts", "table": "input", "address": 0, "datatype": "uint32"},
    {"name": "running", "table": "coil", "address": 3},
    {"name": "sleeve_eye", "table": "discrete", "address": 7},
]


async def load_plc(sim: ModbusSimulator) -> None:
    await sim.set("holding", 0, words("h", -1234))
    await sim.set("holding", 1, swap_bytes(words("H", 0x1234)))
    await sim.set("holding", 2, words("i", -70000))
    await sim.set("holding", 4, list(reversed(words("I", 3_000_000_000))))
    await sim.set("holding", 6, words("f", 20.5))
    await sim.set("holding", 8, list(reversed(swap_bytes(words("f", -2.25)))))
    await sim.set("holding", 10, words("d", 1234.5678))
    await sim.set("holding", 14, swap_bytes(words("d", -0.001)))
    await sim.set("holding", 18, [0x5342, 0x2D33, 0x3030, 0])  # "SB-300"
    await sim.set("holding", 22, [0x8000])  # guard_open, not fault
    await sim.set("holding", 23, [615])  # 615 * 0.1 - 40 = 21.5
    await sim.set("holding", 24, [61])  # 30.5 bowls/min
    await sim.set("input", 0, words("I", 123456))
    await sim.set("coil", 3, [True])
    await sim.set("discrete", 7, [True])


EXPECTED = {
    "i16": (-1234, DataType.Int16),
    "u16_le": (0x1234, DataType.UInt16),
    "i32": (-70000, DataType.Int32),
    "u32_cdab": (3_000_000_000, DataType.UInt32),
    "f32": (20.5, DataType.Float),
    "f32_dcba": (-2.25, DataType.Float),
    "f64": (1234.5678, DataType.Double),
    "f64_badc": (-0.001, DataType.Double),
    "recipe": ("SB-300", DataType.String),
    "fault": (False, DataType.Boolean),
    "guard_open": (True, DataType.Boolean),
    "temperature": (21.5, DataType.Double),
    "speed": (30.5, DataType.Double),
    "counts": (123456, DataType.UInt32),
    "running": (True, DataType.Boolean),
    "sleeve_eye": (True, DataType.Boolean),
}


@pytest.mark.spec(
    "tck-id-topics-dbirth-metric-reqs",
    "tck-id-topics-dbirth-metrics",
    "tck-id-topics-ddata-payload",
)
async def test_every_datatype_byte_order_and_scale_arrives_with_its_sparkplug_type(broker, group_id, tmp_path):
    async with ModbusSimulator() as sim, Observer(broker) as obs:
        await load_plc(sim)
        conn = connector(broker, group_id, tmp_path, [tcp("filler", sim.port, TAGS)])
        task = await running(conn)
        try:
            view = DeviceView(obs, "filler")
            await view.until(lambda v: all(v.values.get(n) is not None for n in EXPECTED), "every tag polled")
            assert view.types == {name: dt for name, (_, dt) in EXPECTED.items()}
            for name, (value, _) in EXPECTED.items():
                assert view.values[name] == pytest.approx(value), name
                assert view.quality[name] == GOOD
            birth = obs.of(MT.DBIRTH, device="filler")[0]
            assert birth.metric("temperature").properties["engUnit"].value == "degC"

            # The PLC changes a few values: they arrive as DDATA, the rest stays as it was.
            await sim.set("holding", 23, [700])
            await sim.set("holding", 22, [0x0001])
            await sim.set("coil", 3, [False])
            await view.until(
                lambda v: v.values["temperature"] == pytest.approx(30.0)
                and v.values["fault"] is True
                and v.values["guard_open"] is False
                and v.values["running"] is False,
                "changes as DDATA",
            )
            assert view.values["recipe"] == "SB-300"
        finally:
            await stop(task)


async def test_one_request_per_block_feeds_many_tags(broker, group_id, tmp_path):
    # 40 contiguous registers of 30 tags and 10 coils: two requests per poll instead of 40.
    tags = [{"name": f"r{i}", "address": i, "datatype": "uint16"} for i in range(20)]
    tags += [{"name": f"f{i}", "address": 20 + 2 * i, "datatype": "float32"} for i in range(10)]
    tags += [{"name": f"c{i}", "table": "coil", "address": i} for i in range(10)]
    async with ModbusSimulator() as sim, Observer(broker) as obs:
        await sim.set("holding", 5, [55])
        conn = connector(broker, group_id, tmp_path, [tcp("filler", sim.port, tags)])
        coordinator = conn.coordinators["filler"]
        task = await running(conn)
        try:
            view = DeviceView(obs, "filler")
            await view.until(lambda v: v.values.get("r5") == 55, "first poll")
            await wait_until(lambda: coordinator.polls >= 5, what="five polls")
        finally:
            await stop(task)
    assert coordinator.diagnostics()["blocks"] == 2
    assert sim.requests == 2 * coordinator.polls  # counted by the server, one per request it served
    assert coordinator.values_read == 50 * coordinator.polls


@pytest.mark.spec("tck-id-message-flow-device-dcmd-subscribe", "tck-id-operational-behavior-data-commands-dcmd-verb")
async def test_dcmd_writes_registers_with_inverse_scaling_and_refuses_read_only_tags(broker, group_id, tmp_path):
    tags = [
        {"name": "target_weight", "address": 10, "datatype": "int16", "scale": 0.1, "offset": -40, "writable": True},
        {"name": "limit", "address": 12, "datatype": "float32", "word_order": "little", "writable": True},
        {"name": "label", "address": 14, "datatype": "string", "length": 3, "writable": True},
        {"name": "stop_request", "address": 20, "datatype": "bit", "bit": 4, "writable": True},
        {"name": "running", "table": "coil", "address": 2, "writable": True},
        {"name": "speed", "address": 30, "datatype": "uint16"},
    ]
    async with ModbusSimulator() as sim, Observer(broker) as obs:
        await sim.set("holding", 20, [0b1])  # another bit of the word that the bit write must keep
        await sim.set("holding", 30, [77])
        conn = connector(broker, group_id, tmp_path, [tcp("filler", sim.port, tags)])
        task = await running(conn)
        try:
            view = DeviceView(obs, "filler")
            await view.until(lambda v: v.values.get("speed") == 77, "first poll")
            await send_dcmd(
                broker,
                group_id,
                NODE,
                "filler",
                Metric("target_weight", DataType.Double, 21.5),
                Metric("limit", DataType.Float, 310.25),
                Metric("label", DataType.String, "GR1"),
                Metric("stop_request", DataType.Boolean, True),
                Metric("running", DataType.Boolean, True),
                Metric("speed", DataType.UInt16, 5),
            )
            await wait_until(lambda: conn.edge.stats.writes_accepted == 5, what="five writes")
            assert await sim.get("holding", 10) == [615]  # (21.5 + 40) / 0.1
            assert await sim.get("holding", 12, 2) == list(reversed(words("f", 310.25)))
            assert await sim.get("holding", 14, 3) == [0x4752, 0x3100, 0]
            assert await sim.get("holding", 20) == [0b10001]
            assert await sim.get("coil", 2) == [True]
            assert await sim.get("holding", 30) == [77]  # read-only: refused
            assert conn.edge.stats.writes_rejected == 1
            # The next polls read the written values back.
            await view.until(
                lambda v: v.values["target_weight"] == pytest.approx(21.5) and v.values["stop_request"] is True,
                "written values polled back",
            )
        finally:
            await stop(task)


async def test_server_restart_turns_tags_bad_then_good_and_logs_once_each_way(broker, group_id, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="connectors.modbus.connector")
    tags = [{"name": "speed", "address": 0, "datatype": "uint16"}, {"name": "running", "table": "coil", "address": 0}]
    sim = ModbusSimulator()
    await sim.start()
    async with Observer(broker) as obs:
        await sim.set("holding", 0, [40])
        conn = connector(broker, group_id, tmp_path, [tcp("filler", sim.port, tags)])
        coordinator = conn.coordinators["filler"]
        task = await running(conn)
        try:
            view = DeviceView(obs, "filler")
            await view.until(lambda v: v.values.get("speed") == 40 and v.quality["speed"] == GOOD, "good values")

            await sim.stop()
            await view.until(lambda v: v.quality["speed"] == BAD and v.quality["running"] == BAD, "bad quality")
            assert view.values["speed"] == 40  # the last value stays, marked bad
            failures = coordinator.failures
            await wait_until(lambda: coordinator.failures >= failures + 3, what="several reconnect attempts")

            await sim.set("holding", 0, [41])
            await sim.start()
            await view.until(lambda v: v.values["speed"] == 41 and v.quality["speed"] == GOOD, "recovery")
            await view.until(lambda v: v.quality["running"] == GOOD, "coil good again")
            await sim.set("holding", 0, [42])
            await view.until(lambda v: v.values["speed"] == 42, "values flow again")
        finally:
            await stop(task)
            await sim.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "connectors.modbus.connector"]
    down = [m for m in messages if "stopped answering" in m or "refused connection" in m]
    up = [m for m in messages if "recovered" in m]
    assert len(down) == 1, messages
    assert len(up) == 1, messages
    assert f"Modbus device {NODE}/filler" in down[0] and f"127.0.0.1:{sim.port}" in down[0]


async def _silent_server() -> tuple[asyncio.Server, int]:
    """A TCP peer that accepts and never answers: a PLC that hangs."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_unreachable_and_hung_devices_are_bad_and_never_block_a_healthy_one(broker, group_id, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="connectors.modbus.connector")
    tag = [{"name": "speed", "address": 0, "datatype": "uint16"}]
    refused_port = free_port()
    silent, silent_port = await _silent_server()
    async with ModbusSimulator() as sim, Observer(broker) as obs:
        conn = connector(
            broker,
            group_id,
            tmp_path,
            [tcp("sleever", refused_port, tag), tcp("lidder", silent_port, tag), tcp("filler", sim.port, tag)],
        )
        task = await running(conn)
        try:
            filler, sleever, lidder = DeviceView(obs, "filler"), DeviceView(obs, "sleever"), DeviceView(obs, "lidder")
            await sleever.until(lambda v: v.quality.get("speed") == BAD, "refused device bad")
            await lidder.until(lambda v: v.quality.get("speed") == BAD, "hung device bad")
            # The healthy device keeps its 50 ms cadence while the hung one waits out 0.5 s timeouts.
            healthy, hung = conn.coordinators["filler"], conn.coordinators["lidder"]
            polls_before, failures_before = healthy.polls, hung.failures
            await wait_until(lambda: hung.failures >= failures_before + 2, what="two more timeouts of the hung device")
            assert healthy.polls - polls_before >= 5
            for value in (1, 2, 3):
                await sim.set("holding", 0, [value])
                await filler.until(lambda v, x=value: v.values.get("speed") == x, f"filler value {value}", timeout=2.0)
            assert filler.quality["speed"] == GOOD
        finally:
            await stop(task)
    silent.close()
    diag = conn.diagnostics()["devices"]
    assert diag["sleever"]["state"] == diag["lidder"]["state"] == "failing"
    assert diag["filler"]["state"] == "ok"
    assert (
        f"Modbus device {NODE}/sleever refused connection at 127.0.0.1:{refused_port}" in diag["sleever"]["last_error"]
    )
    assert "check the address or that the PLC is on" in diag["sleever"]["last_error"]
    assert any("lidder" in r.getMessage() for r in caplog.records)


async def test_exception_response_marks_only_that_blocks_tags_bad(broker, group_id, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="connectors.modbus.connector")
    tags = [
        {"name": "speed", "address": 0, "datatype": "uint16"},
        {"name": "ghost", "address": 5000, "datatype": "uint16"},  # beyond the simulator's 1000 registers
    ]
    async with ModbusSimulator() as sim, Observer(broker) as obs:
        await sim.set("holding", 0, [12])
        conn = connector(broker, group_id, tmp_path, [tcp("filler", sim.port, tags)])
        task = await running(conn)
        try:
            view = DeviceView(obs, "filler")
            await view.until(
                lambda v: v.values.get("speed") == 12 and v.quality.get("ghost") == BAD, "good speed, bad ghost"
            )
            await wait_until(lambda: conn.coordinators["filler"].polls >= 4, what="more polls")
        finally:
            await stop(task)
    assert view.quality["speed"] == GOOD
    warnings = [r.getMessage() for r in caplog.records if "ghost" in r.getMessage()]
    assert len(warnings) == 1
    assert "illegal data address" in warnings[0] and "holding 5000..5000" in warnings[0]
