"""Modbus RTU: the connector on a serial line against a real pymodbus RTU server, over a socat pseudo-terminal pair.

socat joins two pseudo-terminals back to back (`pty,raw,echo=0,link=...`): the simulated PLC opens one end, the
connector the other, and every request crosses a real tty as RTU frames (address, PDU, CRC). A pseudo-terminal
keeps the line settings a program sets (baud, stop bits) but carries bytes without timing them, so the line
settings are checked on the tty itself, not by garbling a mismatched frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from _edge_support import Observer, send_dcmd, wait_until
from connectors.base import ConnectorContext
from connectors.modbus.config import ModbusSettings
from connectors.modbus.connector import ModbusConnector
from connectors.modbus.simulator import ModbusSimulator
from hub.errors import ConfigError
from hub.mqtt import BrokerUrl
from hub.sparkplug.payload import DataType, Metric, decode_value, parse_payload
from hub.sparkplug.topic import MessageType as MT

NODE = "salad-plc"
GOOD, BAD = 192, 0
SOCAT = shutil.which("socat")
needs_socat = pytest.mark.skipif(
    SOCAT is None, reason="socat is not installed (scripts/setup.sh test installs it): no virtual serial pair"
)


# ---------------------------------------------------------------------------------------------------- helpers


class SerialPair:
    """Two pseudo-terminals joined by socat: `plc` for the simulated device, `hub` for the connector."""

    def __init__(self, folder: Path) -> None:
        self.plc = str(folder / "plc-tty")
        self.hub = str(folder / "hub-tty")
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start socat and wait until both links exist."""
        self.proc = subprocess.Popen(
            [SOCAT or "socat", f"pty,raw,echo=0,link={self.plc}", f"pty,raw,echo=0,link={self.hub}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await wait_until(lambda: os.path.exists(self.plc) and os.path.exists(self.hub), 5, "socat's pty links")

    def stop(self) -> None:
        """Stop socat (its links go away with it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[SerialPair]:
    if SOCAT is None:
        pytest.skip("socat is not installed (scripts/setup.sh test installs it): no virtual serial pair")
    p = SerialPair(tmp_path)
    await p.start()
    yield p
    p.stop()


def pty_takes_parity(path: str) -> bool:
    """Whether this kernel's pseudo-terminals accept a parity setting (some refuse PARENB with EINVAL)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        attrs = termios.tcgetattr(fd)
        attrs[2] |= termios.PARENB
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        return True
    except termios.error:
        return False
    finally:
        os.close(fd)


class View:
    """What a plain Sparkplug subscriber knows of one device: each metric's latest value and quality."""

    def __init__(self, obs: Observer, device: str) -> None:
        self.obs, self.device = obs, device
        self.seen = 0
        self.names: dict[int, tuple[str, DataType]] = {}
        self.values: dict[str, Any] = {}
        self.quality: dict[str, int] = {}

    def refresh(self) -> View:
        for m in self.obs.messages[self.seen :]:
            if m.topic.device_id != self.device or m.type not in (MT.DBIRTH, MT.DDATA):
                continue
            for pm in parse_payload(m.raw).metrics:
                if m.type is MT.DBIRTH:
                    self.names[pm.alias] = (pm.name, DataType(pm.datatype))
                name, datatype = self.names[pm.alias]
                kind = pm.WhichOneof("value")
                value = None if pm.is_null or kind is None else decode_value(datatype, kind, getattr(pm, kind))
                self.values[name] = value
                self.quality[name] = next(
                    (p.int_value for k, p in zip(pm.properties.keys, pm.properties.values) if k == "Quality"), GOOD
                )
        self.seen = len(self.obs.messages)
        return self

    async def until(self, check: Any, what: str, timeout: float = 10.0) -> None:
        await wait_until(lambda: check(self.refresh()), timeout, what)


def rtu(device_id: str, port: str, unit: int, tags: list[dict], **extra: Any) -> dict:
    return {
        "device_id": device_id, "protocol": "rtu", "serial_port": port, "unit_id": unit, "timeout_s": 0.3,
        "groups": [{"interval_s": 0.05, "tags": tags}], **extra,
    }  # fmt: skip


def settings(devices: list[dict], group_id: str = "plant1") -> ModbusSettings:
    return ModbusSettings.model_validate({
        "type": "modbus", "group_id": group_id, "edge_node_id": NODE, "devices": devices,
        "backoff_min_s": 0.05, "backoff_max_s": 0.3,
    })  # fmt: skip


def connector(broker: Any, group_id: str, tmp_path: Path, devices: list[dict]) -> ModbusConnector:
    context = ConnectorContext(BrokerUrl.parse(broker.url), None, tmp_path / "state")
    return ModbusConnector("salad_plc", settings(devices, group_id), context)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


TAGS = [
    # 615 * 0.1 - 40 = 21.5 degC; a writable uint16 with scale 0.1; a float32 across two registers.
    {"name": "temperature", "address": 0, "datatype": "int16", "scale": 0.1, "offset": -40, "unit": "degC"},
    {"name": "target_weight", "address": 1, "datatype": "uint16", "scale": 0.1, "unit": "g", "writable": True},
    {"name": "fill_weight", "address": 2, "datatype": "float32"},
    {"name": "running", "table": "coil", "address": 0, "writable": True},
]


# ---------------------------------------------------------------------------------------------------- config


def test_rtu_config_refuses_bad_port_path_baudrate_and_parity_saying_how_to_fix():
    tag = [{"name": "x", "address": 0, "datatype": "uint16"}]
    with pytest.raises(ValidationError, match=r"serial_port 'ttyUSB0' is not a serial port; write the device path"):
        settings([rtu("labeller", "ttyUSB0", 7, tag)])
    with pytest.raises(ValidationError, match=r"baudrate 19300 is not a standard serial rate; use one of .*19200"):
        settings([rtu("labeller", "/dev/ttyUSB0", 7, tag, baudrate=19300)])
    with pytest.raises(ValidationError, match=r"parity 'X' is not a serial parity; use N \(none\), E \(even\) or O"):
        settings([rtu("labeller", "/dev/ttyUSB0", 7, tag, parity="X")])
    with pytest.raises(ValidationError, match=r"unit_id 0 is the broadcast address on a serial line"):
        settings([rtu("labeller", "/dev/ttyUSB0", 0, tag)])
    with pytest.raises(ValidationError, match=r"uses protocol rtu but sets host"):
        settings([rtu("labeller", "/dev/ttyUSB0", 7, tag, host="10.0.0.5")])
    with pytest.raises(ValidationError, match=r"stopbits"):
        settings([rtu("labeller", "/dev/ttyUSB0", 7, tag, stopbits=3)])
    ok = settings([
        rtu("a", "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0", 7, tag, parity="even", baudrate=9600),
        rtu("b", "COM3", 1, tag, parity="odd"),
        rtu("c", "rfc2217://10.0.0.9:4001", 2, tag, parity="none"),
    ])  # fmt: skip
    assert [d.parity for d in ok.devices] == ["E", "O", "N"]
    assert ok.devices[0].endpoint == "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0 (unit 7)"


def test_units_sharing_a_serial_port_must_share_its_settings_and_have_their_own_unit_ids():
    tag = [{"name": "x", "address": 0, "datatype": "uint16"}]
    differ = r"share serial port /dev/ttyUSB0 but not its settings \(19200/N/1/8 vs 9600/N/1/8 baud"
    with pytest.raises(ValidationError, match=differ):
        settings([rtu("a", "/dev/ttyUSB0", 1, tag), rtu("b", "/dev/ttyUSB0", 2, tag, baudrate=9600)])
    with pytest.raises(ValidationError, match=r"'a' and 'b' both use unit_id 4 on serial port /dev/ttyUSB0"):
        settings([rtu("a", "/dev/ttyUSB0", 4, tag), rtu("b", "/dev/ttyUSB0", 4, tag)])
    # Different ports are different lines: the same unit id and other settings are fine there.
    settings([rtu("a", "/dev/ttyUSB0", 4, tag), rtu("b", "/dev/ttyUSB1", 4, tag, baudrate=9600)])


def test_rtu_without_pyserial_is_a_configuration_error_when_the_connector_is_built(monkeypatch, tmp_path):
    # A None entry makes `import serial` fail, as on a machine where pyserial was never installed.
    monkeypatch.setitem(sys.modules, "serial", None)
    context = ConnectorContext(BrokerUrl.parse("mqtt://127.0.0.1:1"), None, tmp_path)
    with pytest.raises(ConfigError, match=r"protocol rtu needs the pyserial package.*pip install pyserial==3.5"):
        ModbusConnector("salad_plc", settings([rtu("labeller", "/dev/ttyUSB0", 7, TAGS)]), context)


# ---------------------------------------------------------------------------------------------------- live


@needs_socat
@pytest.mark.parametrize(("parity", "stopbits"), [("N", 2), ("E", 1)])
async def test_rtu_device_reads_scaled_holding_registers_and_dcmd_writes_them_back(
    broker, group_id, tmp_path, pair, parity, stopbits
):
    if parity != "N" and not pty_takes_parity(pair.hub):
        pytest.skip(f"this kernel's pseudo-terminals refuse parity {parity} (tcsetattr PARENB: EINVAL)")
    sim = ModbusSimulator((7,), serial_port=pair.plc, baudrate=38400, parity=parity, stopbits=stopbits)
    await sim.start()
    await sim.set("holding", 0, [615, 405], unit=7)  # temperature 21.5, target 40.5 g
    await sim.set("holding", 2, [0x4224, 0x0000], unit=7)  # 41.0 as a big-endian float32
    device = rtu("labeller", pair.hub, 7, TAGS, baudrate=38400, parity=parity, stopbits=stopbits)
    async with Observer(broker) as obs:
        conn = connector(broker, group_id, tmp_path, [device])
        task = asyncio.create_task(conn.run())
        try:
            view = View(obs, "labeller")
            await view.until(lambda v: v.values.get("fill_weight") == 41.0, "first RTU poll")
            assert view.values["temperature"] == pytest.approx(21.5)
            assert view.values["target_weight"] == pytest.approx(40.5)
            assert view.values["running"] is False
            assert all(q == GOOD for q in view.quality.values())

            await send_dcmd(broker, group_id, NODE, "labeller", Metric("target_weight", DataType.Double, 42.3),
                            Metric("running", DataType.Boolean, True))  # fmt: skip
            await wait_until(lambda: conn.edge.stats.writes_accepted == 2, what="two RTU writes")
            assert await sim.get("holding", 1, unit=7) == [423]  # 42.3 / 0.1, written over the serial line
            assert await sim.get("coil", 0, unit=7) == [True]

            await sim.set("holding", 0, [700], unit=7)  # the PLC's temperature rises to 30.0
            await view.until(
                lambda v: v.values["temperature"] == pytest.approx(30.0) and v.values["running"] is True,
                "changes polled back",
            )
            coordinator = conn.coordinators["labeller"]
            assert coordinator.diagnostics()["state"] == "ok"
            assert sim.requests >= coordinator.requests - 1 > 4  # every request crossed the tty to the server
        finally:
            await stop(task)
            await sim.stop()


@needs_socat
async def test_rtu_port_is_opened_with_the_configured_baudrate_data_and_stop_bits(broker, group_id, tmp_path, pair):
    sim = ModbusSimulator((7,), serial_port=pair.plc, baudrate=9600, stopbits=2)
    await sim.start()
    await sim.set("holding", 0, [615], unit=7)
    device = rtu("labeller", pair.hub, 7, TAGS[:1], baudrate=9600, stopbits=2)
    conn = connector(broker, group_id, tmp_path, [device])
    task = asyncio.create_task(conn.run())
    try:
        await wait_until(lambda: conn.coordinators["labeller"].polls >= 1, what="a poll")
        # The tty's settings are shared by every descriptor of it: read what the connector's client set.
        fd = os.open(pair.hub, os.O_RDWR | os.O_NOCTTY)
        try:
            _, _, cflag, _, ispeed, ospeed, _ = termios.tcgetattr(fd)
        finally:
            os.close(fd)
        assert ispeed == ospeed == termios.B9600
        assert cflag & termios.CSTOPB  # two stop bits
        assert cflag & termios.CSIZE == termios.CS8
        assert not cflag & termios.PARENB  # parity N
    finally:
        await stop(task)
        await sim.stop()


@needs_socat
async def test_units_on_one_serial_line_share_the_port_and_a_silent_unit_never_blocks_the_others(
    broker, group_id, tmp_path, pair, caplog
):
    caplog.set_level(logging.WARNING, logger="connectors.modbus.connector")
    tag = [{"name": "count", "address": 0, "datatype": "uint16"}]
    sim = ModbusSimulator((3, 7), serial_port=pair.plc)
    await sim.start()
    await sim.set("holding", 0, [30], unit=3)
    await sim.set("holding", 0, [70], unit=7)
    devices = [rtu("labeller", pair.hub, 7, tag), rtu("sleever", pair.hub, 3, tag), rtu("lidder", pair.hub, 9, tag)]
    async with Observer(broker) as obs:
        conn = connector(broker, group_id, tmp_path, devices)
        task = asyncio.create_task(conn.run())
        try:
            labeller, sleever, lidder = View(obs, "labeller"), View(obs, "sleever"), View(obs, "lidder")
            await labeller.until(lambda v: v.values.get("count") == 70, "unit 7 read")
            await sleever.until(lambda v: v.values.get("count") == 30, "unit 3 read")
            await lidder.until(lambda v: v.quality.get("count") == BAD, "absent unit 9 BAD")
            # pyserial opens a port exclusively: two units polled at all means they share one open port.
            assert conn.coordinators["labeller"].link is conn.coordinators["sleever"].link
            silent = conn.coordinators["lidder"]
            before = silent.failures
            await wait_until(lambda: silent.failures >= before + 2, what="more timeouts of the silent unit")
            for value in (71, 72):
                await sim.set("holding", 0, [value], unit=7)
                await labeller.until(lambda v, x=value: v.values.get("count") == x, f"unit 7 value {value}", 3.0)
            assert labeller.quality["count"] == sleever.quality["count"] == GOOD
        finally:
            await stop(task)
            await sim.stop()
    diag = conn.diagnostics()["devices"]
    assert diag["lidder"]["state"] == "failing" and diag["labeller"]["state"] == diag["sleever"]["state"] == "ok"
    assert f"{pair.hub} (unit 9)" in diag["lidder"]["last_error"]
    assert "check its unit_id, the line settings (19200 baud, parity N)" in diag["lidder"]["last_error"]
    assert len([r for r in caplog.records if "lidder" in r.getMessage()]) == 1  # logged once, not per timeout


@needs_socat
async def test_absent_serial_port_is_logged_once_and_used_once_it_appears(broker, group_id, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="connectors.modbus.connector")
    pair = SerialPair(tmp_path)  # not started: the USB adapter is still unplugged
    async with Observer(broker) as obs:
        conn = connector(broker, group_id, tmp_path, [rtu("labeller", pair.hub, 7, TAGS[:1])])
        coordinator = conn.coordinators["labeller"]
        task = asyncio.create_task(conn.run())
        sim = None
        try:
            await wait_until(lambda: coordinator.failures >= 3, what="several attempts on the absent port")
            assert f"serial port {pair.hub} does not exist" in coordinator.failing
            await pair.start()
            sim = ModbusSimulator((7,), serial_port=pair.plc)
            await sim.start()
            await sim.set("holding", 0, [615], unit=7)
            view = View(obs, "labeller")
            await view.until(
                lambda v: v.values.get("temperature") == pytest.approx(21.5) and v.quality["temperature"] == GOOD,
                "values once the port appears",
            )
        finally:
            await stop(task)
            if sim is not None:
                await sim.stop()
            pair.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "connectors.modbus.connector"]
    assert len([m for m in messages if "does not exist" in m]) == 1, messages
    assert len([m for m in messages if "recovered" in m]) == 1, messages
