"""The Modbus connector: a Sparkplug edge node whose devices are Modbus servers polled by one coordinator each."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from connectors.base import ConnectorContext
from connectors.modbus.codec import ReadBlock, encode, encode_bit, plan_reads
from connectors.modbus.config import BIT_TABLES, ModbusDevice, ModbusSettings, ModbusTag, TagGroup
from hub.errors import ConfigError, PlantbusError, WriteError
from hub.sparkplug.edge import EdgeNode, Quality

log = logging.getLogger(__name__)

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient
try:
    from termios import error as _TermiosError  # pyserial lets a port's refused line settings through as this
except ImportError:  # not on Windows
    _TermiosError = OSError  # type: ignore[misc,assignment]
# What opening a client can raise: refused/absent peer or port, and settings a serial port rejects.
_OPEN_ERRORS = (TimeoutError, OSError, ModbusException, ValueError, _TermiosError)


class DeviceUnavailable(PlantbusError):
    """The device could not be reached or stopped answering (retried with backoff)."""


def make_client(device: ModbusDevice) -> ModbusClient:
    """A pymodbus client for the device; reconnection is ours (reconnect_delay 0), so retries stay visible."""
    if device.protocol == "rtu":
        return AsyncModbusSerialClient(
            device.serial_port or "",
            framer=FramerType.RTU,
            baudrate=device.baudrate,
            parity=device.parity,
            stopbits=device.stopbits,
            bytesize=device.bytesize,
            timeout=device.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
    return AsyncModbusTcpClient(
        device.host or "", port=device.port, timeout=device.timeout_s, retries=0, reconnect_delay=0
    )


def _exception_text(response: Any) -> str:
    code = getattr(response, "exception_code", None)
    return f"exception {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})" if code is not None else str(response)


class Link:
    """The wire to one or more devices: a TCP connection for one device, or a serial line shared by its units.

    Its lock puts one request at a time on the wire, so the polls and writes of every unit on an RS-485 line
    take turns, as the bus requires; the port is opened once for all of them (pyserial opens it exclusively).
    """

    def __init__(self, device: ModbusDevice, client_factory: Callable[[ModbusDevice], ModbusClient]) -> None:
        self.device = device  # the first device on the link: it gives the port settings
        self.lock = asyncio.Lock()
        self._client_factory = client_factory
        self._client: ModbusClient | None = None

    async def connected(self, label: str) -> ModbusClient:
        """The open client, opening it first if needed; DeviceUnavailable when it cannot be opened."""
        client = self._client
        if client is not None and client.connected:
            return client
        self.drop()
        device = self.device
        if device.protocol == "rtu" and (device.serial_port or "").startswith("/") and not os.path.exists(
            device.serial_port or ""
        ):
            raise DeviceUnavailable(
                f"Modbus device {label}: serial port {device.serial_port} does not exist — check that the "
                "RS-485 adapter is plugged in and the path (ls /dev/serial/by-id)"
            )
        client = self._client_factory(device)
        try:
            ok = await asyncio.wait_for(client.connect(), device.timeout_s + 1.0)
            why = ""
        except _OPEN_ERRORS as exc:
            ok, why = False, f" ({exc})" if str(exc) else f" ({type(exc).__name__})"
        if not ok:
            client.close()
            if device.protocol == "rtu":
                raise DeviceUnavailable(
                    f"Modbus device {label} cannot open serial port {device.serial_port}{why} — check that no other "
                    f"program holds it and that it supports {device.baudrate} baud, parity {device.parity}, "
                    f"{device.stopbits} stop bit(s)"
                )
            raise DeviceUnavailable(
                f"Modbus device {label} refused connection at {device.endpoint} (or did not answer "
                f"within {device.timeout_s:g} s) — check the address or that the PLC is on"
            )
        self._client = client
        return client

    def drop(self) -> None:
        """Close the client; the next request opens a fresh one."""
        if self._client is not None:
            self._client.close()
            self._client = None


class DeviceCoordinator:
    """Polls one Modbus device: one request per block feeds many tags; tag quality follows the last poll."""

    def __init__(
        self,
        device: ModbusDevice,
        edge: EdgeNode,
        *,
        backoff: tuple[float, float] = (0.5, 30.0),
        client_factory: Callable[[ModbusDevice], ModbusClient] = make_client,
        link: Link | None = None,
    ) -> None:
        self.device = device
        self.edge = edge
        self.label = f"{edge.edge_node_id}/{device.device_id}"
        self.tags: dict[str, ModbusTag] = {tag.name: tag for tag in device.tags()}
        self.plan: list[tuple[TagGroup, list[ReadBlock]]] = [
            (
                group,
                plan_reads(
                    group.tags,
                    max_registers=device.max_registers_per_read,
                    max_bits=device.max_bits_per_read,
                    max_gap=device.max_gap,
                ),
            )
            for group in device.groups
        ]
        self._backoff = backoff
        self.link = link or Link(device, client_factory)
        self._lock = self.link.lock  # one request at a time on the wire: polls and writes take turns
        self._random = random.Random()
        self.failing: str | None = None  # the failure being reported, None while healthy
        self._bad_blocks: dict[tuple[str, int], str] = {}
        self.polls = 0
        self.requests = 0
        self.values_read = 0  # registers or bits
        self.failures = 0
        self.writes = 0
        self.last_poll_ms: float | None = None

    # ------------------------------------------------------------------ connection

    async def _connected(self) -> ModbusClient:
        return await self.link.connected(self.label)

    def _drop_client(self) -> None:
        self.link.drop()

    async def _request(self, call: Any) -> Any:
        """One request with a hard deadline; a transport failure drops the connection and is DeviceUnavailable."""
        self.requests += 1
        try:
            return await asyncio.wait_for(call, self.device.timeout_s * 2)
        except (TimeoutError, OSError, ModbusException) as exc:
            self._drop_client()
            hint = (
                f"check its unit_id, the line settings ({self.device.baudrate} baud, parity {self.device.parity}) "
                "and the RS-485 wiring"
                if self.device.protocol == "rtu"
                else "check the network or that the PLC is on"
            )
            raise DeviceUnavailable(
                f"Modbus device {self.label} stopped answering at {self.device.endpoint} "
                f"({exc or type(exc).__name__}) — {hint}"
            ) from None

    # ------------------------------------------------------------------ polling

    async def run(self) -> None:
        """Poll every group at its interval until cancelled, reconnecting with jittered backoff."""
        loop = asyncio.get_running_loop()
        due = [loop.time()] * len(self.plan)
        attempt = 0
        try:
            while True:
                now = loop.time()
                ready = [i for i, at in enumerate(due) if at <= now]
                if not ready:
                    await asyncio.sleep(min(due) - now)
                    continue
                try:
                    for i in ready:
                        await self.poll_group(i)
                except DeviceUnavailable as exc:
                    await self._failed(str(exc))
                    await asyncio.sleep(self._backoff_delay(attempt))
                    attempt += 1
                    due = [loop.time()] * len(self.plan)
                    continue
                attempt = 0
                for i in ready:
                    # Keep the cadence, but never try to catch up on polls a slow device made us miss.
                    due[i] = max(due[i] + self.plan[i][0].interval_s, now)
        finally:
            if self.link.device is self.device:
                self._drop_client()  # the link is this device's own; a shared line closes with its first device

    def _backoff_delay(self, attempt: int) -> float:
        low, high = self._backoff
        cap = min(high, low * (2**attempt))
        # Jitter keeps many connectors that lost one switch from knocking on it in step.
        return self._random.uniform(max(low, cap / 2), cap)

    async def poll_group(self, index: int) -> None:
        """Read every block of one group and report its tags (GOOD, or BAD for a block the device refused)."""
        _, blocks = self.plan[index]
        started = time.perf_counter()
        values: dict[str, Any] = {}
        bad: list[str] = []
        async with self._lock:
            client = await self._connected()
            for block in blocks:
                response = await self._request(self._read(client, block))
                key = (block.table, block.start)
                if response.isError():
                    names = [t.name for t in block.tags]
                    bad.extend(names)
                    if key not in self._bad_blocks:
                        why = (
                            f"Modbus device {self.label} answered {_exception_text(response)} for {block.table} "
                            f"{block.start}..{block.start + block.count - 1} (tags {', '.join(names)}) — check "
                            "the register map against the PLC program"
                        )
                        self._bad_blocks[key] = why
                        log.warning("%s", why)
                    continue
                if self._bad_blocks.pop(key, None) is not None:
                    log.info("Modbus device %s: %s %d.. readable again", self.label, block.table, block.start)
                data = response.bits if block.table in BIT_TABLES else response.registers
                self.values_read += block.count
                values.update(block.values(data))
        self.polls += 1
        self.last_poll_ms = (time.perf_counter() - started) * 1000
        if self.failing is not None:
            log.info("Modbus device %s recovered at %s", self.label, self.device.endpoint)
            self.failing = None
        if values:
            await self.edge.update(self.device.device_id, values)
        if bad:
            await self.edge.set_quality(self.device.device_id, Quality.BAD, bad)

    def _read(self, client: ModbusClient, block: ReadBlock) -> Any:
        unit = self.device.unit_id
        read = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[block.table]
        return read(block.start, count=block.count, device_id=unit)

    async def _failed(self, message: str) -> None:
        self.failures += 1
        if self.failing is None:
            log.warning("%s", message)  # once when the failure starts; recovery is logged once too
            self.failing = message
            await self.edge.set_quality(self.device.device_id, Quality.BAD)
        else:
            self.failing = message
            log.debug("%s", message)

    # ------------------------------------------------------------------ writes

    async def write(self, name: str, value: Any) -> None:
        """Write an engineering value to a writable tag (inverse scaling and encoding); raises WriteError."""
        tag = self.tags.get(name)
        if tag is None:
            raise WriteError(f"Modbus device {self.label} has no tag {name!r}")
        if not tag.writable:
            raise WriteError(f"Modbus device {self.label}: tag {name!r} is read-only (set writable: true to allow)")
        registers = None if tag.table in BIT_TABLES or tag.datatype == "bit" else encode(tag, value)
        unit = self.device.unit_id
        try:
            async with self._lock:
                client = await self._connected()
                if tag.table == "coil":
                    response = await self._request(client.write_coil(tag.address, bool(value), device_id=unit))
                elif tag.datatype == "bit":
                    # Read-modify-write: FC 22 (mask write) is missing on many PLCs.
                    current = await self._request(client.read_holding_registers(tag.address, count=1, device_id=unit))
                    if current.isError():
                        raise WriteError(f"Modbus device {self.label}: reading {name!r} before the bit write failed: {_exception_text(current)}")
                    word = encode_bit(tag, current.registers[0], bool(value))
                    response = await self._request(client.write_register(tag.address, word, device_id=unit))
                elif registers is not None and len(registers) == 1:
                    response = await self._request(client.write_register(tag.address, registers[0], device_id=unit))
                else:
                    response = await self._request(client.write_registers(tag.address, registers or [], device_id=unit))
        except DeviceUnavailable as exc:
            raise WriteError(str(exc)) from None
        if response.isError():
            raise WriteError(
                f"Modbus device {self.label} refused the write to {name!r} ({tag.table} {tag.address}): "
                f"{_exception_text(response)} — check that the PLC allows writing there"
            )
        self.writes += 1

    def diagnostics(self) -> dict[str, Any]:
        """Counters and state of this device's polling."""
        return {
            "endpoint": self.device.endpoint,
            "state": "failing" if self.failing else "ok",
            "last_error": self.failing,
            "blocks": sum(len(blocks) for _, blocks in self.plan),
            "tags": len(self.tags),
            "polls": self.polls,
            "requests": self.requests,
            "values_read": self.values_read,
            "failures": self.failures,
            "writes": self.writes,
            "last_poll_ms": self.last_poll_ms,
        }


class ModbusConnector:
    """A Sparkplug edge node publishing Modbus devices; run() until cancelled, NDEATH on the way out."""

    def __init__(
        self,
        name: str,
        settings: ModbusSettings,
        context: ConnectorContext,
        *,
        client_factory: Callable[[ModbusDevice], ModbusClient] = make_client,
    ) -> None:
        self.name = name
        self.settings = settings
        self.edge = EdgeNode(
            context.broker,
            settings.group_id,
            settings.edge_node_id,
            state_dir=context.state_dir,
            primary_host_id=context.primary_host_id,
            on_write=self._on_write,
        )
        if any(d.protocol == "rtu" for d in settings.devices) and importlib.util.find_spec("serial") is None:
            raise ConfigError(
                f"Modbus connector {name}: protocol rtu needs the pyserial package, which is not installed; "
                "install it (pip install pyserial==3.5) or use a Modbus TCP gateway"
            )
        self.coordinators: dict[str, DeviceCoordinator] = {}
        lines: dict[str, Link] = {}  # serial port -> the line its units share
        for device in settings.devices:
            target = self.edge.add_device(device.device_id)
            for tag in device.tags():
                target.add_metric(
                    tag.name,
                    tag.sparkplug_type,
                    None,  # unknown until the first poll
                    writable=tag.writable,
                    deadband=tag.deadband,
                    properties={"engUnit": tag.unit} if tag.unit else None,
                )
            link = None
            if device.protocol == "rtu":
                link = lines.setdefault(device.serial_port or "", Link(device, client_factory))
            self.coordinators[device.device_id] = DeviceCoordinator(
                device,
                self.edge,
                backoff=(settings.backoff_min_s, settings.backoff_max_s),
                client_factory=client_factory,
                link=link,
            )

    async def _on_write(self, device_id: str | None, metric: str, value: Any) -> None:
        coordinator = self.coordinators.get(device_id or "")
        if coordinator is None:
            raise WriteError(f"{metric!r} is not a Modbus tag (write it on a device of edge node {self.edge.edge_node_id})")
        await coordinator.write(metric, value)

    async def run(self) -> None:
        """Run the edge node and one poller per device until cancelled."""
        self.edge.start()
        try:
            async with asyncio.TaskGroup() as tg:
                for device_id, coordinator in self.coordinators.items():
                    tg.create_task(coordinator.run(), name=f"plantbus[connector:{self.name}].poll.{device_id}")
        finally:
            for coordinator in self.coordinators.values():
                coordinator.link.drop()  # shared serial lines too, whichever unit stopped first
            await self.edge.stop()
            self.edge.close()

    def diagnostics(self) -> dict[str, Any]:
        """Edge node counters and each device's polling state."""
        return {
            "type": "modbus",
            "edge_node": f"{self.settings.group_id}/{self.settings.edge_node_id}",
            "online": self.edge.online,
            "devices": {device_id: c.diagnostics() for device_id, c in self.coordinators.items()},
        }
