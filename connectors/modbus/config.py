"""Settings of the Modbus connector: devices, their transport, and register maps of tags grouped by poll interval.

Addresses are the zero-based protocol addresses a Modbus request carries (holding register 40001 in the
old 1-based notation is `table: holding, address: 0`). Every check here runs once, when the configuration
is loaded, so that a wrong map is refused with a message that says how to fix it instead of polling garbage.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import ConnectorSettings
from hub.sparkplug.payload import DataType

Table = Literal["holding", "input", "coil", "discrete"]
TagType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64", "string", "bit"]
Order = Literal["big", "little"]

REGISTER_TABLES = frozenset({"holding", "input"})
BIT_TABLES = frozenset({"coil", "discrete"})
WRITABLE_TABLES = frozenset({"holding", "coil"})
MAX_ADDRESS = 65535
MAX_READ_REGISTERS = 125  # Modbus application protocol 1.1b3, function 03/04
MAX_READ_BITS = 2000  # function 01/02
MAX_WRITE_REGISTERS = 123  # function 16

# Rates serial Modbus devices and USB/RS-485 adapters offer; anything else is almost always a typo (19300).
BAUDRATES = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 76800, 115200, 230400, 460800, 921600)
_PARITY = {"n": "N", "none": "N", "e": "E", "even": "E", "o": "O", "odd": "O"}
# A device node (/dev/ttyUSB0, /dev/serial/by-id/...), a Windows port (COM3) or a pyserial URL for a serial server.
_SERIAL_PORT = re.compile(r"^(/\S+|COM[1-9][0-9]*|(rfc2217|socket)://[^\s/:]+:[0-9]{1,5})$")

_WIDTH = {"int16": 1, "uint16": 1, "bit": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModbusTag(_Model):
    """One value in a device's memory: where it lies, how it is encoded and how it is scaled."""

    name: str = Field(min_length=1, description="Sparkplug metric name, e.g. bowls_filled or filler/speed")
    table: Table = Field("holding", description="holding, input (registers), coil or discrete (bits)")
    address: int = Field(ge=0, le=MAX_ADDRESS, description="zero-based protocol address (40001 -> holding 0)")
    datatype: TagType | None = Field(None, description="register encoding; bool for coil/discrete (the default there)")
    length: int | None = Field(None, ge=1, description="string length in registers (2 characters each)")
    bit: int | None = Field(None, description="bit index 0..15 in the register, for datatype bit")
    byte_order: Order = Field("big", description="byte order inside each register (Modbus standard: big)")
    word_order: Order = Field("big", description="register order of 32/64-bit values (big: high word first)")
    scale: float = Field(1.0, description="engineering value = raw * scale + offset")
    offset: float = 0.0
    unit: str | None = Field(None, description="engineering unit, sent as the metric's engUnit property")
    writable: bool = Field(False, description="accept writes (DCMD) to this tag")
    deadband: float | None = Field(None, ge=0, description="report a change only beyond this (engineering units)")

    @model_validator(mode="after")
    def _check(self) -> ModbusTag:
        where = f"tag {self.name!r}"
        if self.table in BIT_TABLES:
            if self.datatype not in (None, "bool"):
                raise ValueError(
                    f"{where} is in the {self.table} table, which holds single bits: remove datatype "
                    f"{self.datatype!r} (or set it to bool), or move the tag to a holding/input register"
                )
        elif self.datatype is None or self.datatype == "bool":
            raise ValueError(
                f"{where} is a {self.table} register: give a datatype (int16, uint16, int32, uint32, float32, "
                "float64, string with length, or bit with a bit index)"
            )
        if self.datatype == "string" and self.length is None:
            raise ValueError(f"{where} is a string: give its length in registers (length: 8 holds 16 characters)")
        if self.datatype != "string" and self.length is not None:
            raise ValueError(f"{where}: length only applies to datatype string; remove it")
        if self.datatype == "bit":
            if self.bit is None or not 0 <= self.bit <= 15:
                raise ValueError(f"{where} is a bit in a 16-bit register: give bit between 0 and 15, got {self.bit}")
        elif self.bit is not None:
            raise ValueError(f"{where}: bit only applies to datatype bit; set datatype: bit or remove bit")
        if self.writable and self.table not in WRITABLE_TABLES:
            raise ValueError(
                f"{where}: {self.table} {'registers' if self.table == 'input' else 'inputs'} are read-only in "
                "Modbus; remove writable, or use a holding register / coil"
            )
        if self.scale == 0:
            raise ValueError(f"{where}: scale 0 would lose every value; use 1 for no scaling")
        if self.scaled and self.datatype in ("string", "bit", "bool", None):
            raise ValueError(f"{where}: scale and offset only apply to numbers, not {self.datatype or 'bool'}")
        if self.deadband is not None and self.datatype in ("string", "bit", "bool", None):
            raise ValueError(f"{where}: a deadband only applies to numbers; remove it")
        last = self.address + self.width - 1
        if last > MAX_ADDRESS:
            raise ValueError(
                f"{where} spans addresses {self.address}..{last}, beyond the last Modbus address {MAX_ADDRESS}; "
                "check the address (zero-based: 40001 is holding 0)"
            )
        if self.table in REGISTER_TABLES and self.width > MAX_READ_REGISTERS:
            raise ValueError(f"{where} needs {self.width} registers; one read takes at most {MAX_READ_REGISTERS}")
        if self.writable and self.width > MAX_WRITE_REGISTERS:
            raise ValueError(f"{where} needs {self.width} registers; one write takes at most {MAX_WRITE_REGISTERS}")
        return self

    @property
    def scaled(self) -> bool:
        """Whether the raw value is transformed (scale or offset)."""
        return self.scale != 1.0 or self.offset != 0.0

    @property
    def width(self) -> int:
        """How many registers (or bits, for coils/discrete inputs) the tag occupies."""
        if self.table in BIT_TABLES:
            return 1
        if self.datatype == "string":
            return self.length or 1
        return _WIDTH[self.datatype or "uint16"]

    @property
    def sparkplug_type(self) -> DataType:
        """The Sparkplug datatype the metric is born with."""
        if self.table in BIT_TABLES or self.datatype == "bit":
            return DataType.Boolean
        if self.datatype == "string":
            return DataType.String
        if self.scaled or self.datatype == "float64":
            return DataType.Double
        return {
            "int16": DataType.Int16,
            "uint16": DataType.UInt16,
            "int32": DataType.Int32,
            "uint32": DataType.UInt32,
            "float32": DataType.Float,
        }[self.datatype or "uint16"]


class TagGroup(_Model):
    """Tags polled together at one interval."""

    name: str = Field("default", min_length=1, description="a label for logs and diagnostics, e.g. fast or counters")
    interval_s: float = Field(1.0, gt=0, description="poll interval in seconds")
    tags: list[ModbusTag] = Field(min_length=1)


class ModbusDevice(_Model):
    """One Modbus server (a PLC, or one unit behind a gateway), published as one Sparkplug device."""

    device_id: str = Field(min_length=1, description="Sparkplug device id, e.g. filler")
    protocol: Literal["tcp", "rtu"] = "tcp"
    host: str | None = Field(None, description="PLC address for protocol tcp")
    port: int = Field(502, ge=1, le=65535, description="TCP port for protocol tcp")
    serial_port: str | None = Field(
        None,
        description="serial device for protocol rtu: /dev/ttyUSB0, COM3, or rfc2217://host:port of a serial server",
    )
    baudrate: int = Field(19200, description="serial line speed (rtu): 9600, 19200, 38400, 57600, 115200 …")
    parity: Literal["N", "E", "O"] = Field("N", description="serial parity (rtu): N (none), E (even), O (odd)")
    stopbits: Literal[1, 2] = Field(1, description="serial stop bits (rtu); Modbus asks for 2 with parity N")
    bytesize: Literal[7, 8] = Field(8, description="serial data bits (rtu); Modbus RTU uses 8")
    unit_id: int = Field(
        1, ge=0, le=247, description="Modbus unit (slave) id; on a serial line each device has its own"
    )
    timeout_s: float = Field(2.0, gt=0, description="how long to wait for each answer")
    max_gap: int = Field(0, ge=0, le=MAX_READ_REGISTERS, description="unused registers/bits a read may span to merge blocks")
    max_registers_per_read: int = Field(MAX_READ_REGISTERS, ge=1, le=MAX_READ_REGISTERS)
    max_bits_per_read: int = Field(MAX_READ_BITS, ge=1, le=MAX_READ_BITS)
    groups: list[TagGroup] = Field(min_length=1)

    @field_validator("parity", mode="before")
    @classmethod
    def _parity(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _PARITY:
            return _PARITY[value.strip().lower()]
        raise ValueError(f"parity {value!r} is not a serial parity; use N (none), E (even) or O (odd)")

    @field_validator("baudrate")
    @classmethod
    def _baudrate(cls, value: int) -> int:
        if value not in BAUDRATES:
            raise ValueError(
                f"baudrate {value} is not a standard serial rate; use one of {', '.join(map(str, BAUDRATES))} "
                "(the device's manual or front panel shows it)"
            )
        return value

    @field_validator("serial_port")
    @classmethod
    def _serial_port(cls, value: str | None) -> str | None:
        if value is not None and not _SERIAL_PORT.match(value):
            raise ValueError(
                f"serial_port {value!r} is not a serial port; write the device path like /dev/ttyUSB0 or "
                "/dev/serial/by-id/usb-FTDI_…, COM3 on Windows, or rfc2217://10.0.0.9:4001 for a serial server"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> ModbusDevice:
        where = f"Modbus device {self.device_id!r}"
        if self.protocol == "tcp" and not self.host:
            raise ValueError(f"{where} uses protocol tcp: give host (the PLC's IP address or name)")
        if self.protocol == "rtu" and not self.serial_port:
            raise ValueError(f"{where} uses protocol rtu: give serial_port, e.g. /dev/ttyUSB0")
        if self.protocol == "tcp" and self.serial_port:
            raise ValueError(f"{where} uses protocol tcp but sets serial_port: remove it, or set protocol: rtu")
        if self.protocol == "rtu" and self.host:
            raise ValueError(f"{where} uses protocol rtu but sets host: remove it, or set protocol: tcp")
        if self.protocol == "rtu" and self.unit_id == 0:
            raise ValueError(
                f"{where}: unit_id 0 is the broadcast address on a serial line and no device answers it; "
                "give the device's own address (1..247)"
            )
        seen: dict[str, str] = {}
        for tag in self.tags():
            if tag.name.lower() in seen:
                raise ValueError(f"{where}: tag name {tag.name!r} is used twice (names compare ignoring case); rename one")
            seen[tag.name.lower()] = tag.name
            if tag.table in REGISTER_TABLES and tag.width > self.max_registers_per_read:
                raise ValueError(
                    f"{where}: tag {tag.name!r} needs {tag.width} registers but max_registers_per_read is "
                    f"{self.max_registers_per_read}; raise it or shorten the tag"
                )
        by_table: dict[str, list[ModbusTag]] = {}
        for tag in self.tags():
            by_table.setdefault(tag.table, []).append(tag)
        for table, tags in by_table.items():
            tags.sort(key=lambda t: t.address)
            for i, a in enumerate(tags):
                for b in tags[i + 1 :]:
                    if b.address > a.address + a.width - 1:
                        break
                    if a.datatype == "bit" and b.datatype == "bit" and a.bit != b.bit:
                        continue  # distinct bits of one status word
                    raise ValueError(
                        f"{where}: tags {a.name!r} ({table} {a.address}..{a.address + a.width - 1}) and {b.name!r} "
                        f"({table} {b.address}..{b.address + b.width - 1}) overlap; fix one address "
                        "(32-bit values take 2 registers, float64 4, strings their length)"
                    )
        return self

    def tags(self) -> list[ModbusTag]:
        """Every tag of every group."""
        return [tag for group in self.groups for tag in group.tags]

    @property
    def endpoint(self) -> str:
        """Where the device is, for messages."""
        return f"{self.host}:{self.port}" if self.protocol == "tcp" else f"{self.serial_port} (unit {self.unit_id})"

    @property
    def line(self) -> tuple[str, int, str, int, int]:
        """The serial line settings (rtu): port, baudrate, parity, stop bits, data bits."""
        return (self.serial_port or "", self.baudrate, self.parity, self.stopbits, self.bytesize)


class ModbusSettings(ConnectorSettings):
    """A Modbus TCP/RTU connector: one Sparkplug edge node for one or more Modbus devices."""

    type: Literal["modbus"] = "modbus"
    devices: list[ModbusDevice] = Field(min_length=1)
    backoff_min_s: float = Field(0.5, gt=0, description="first reconnect delay after a device fails")
    backoff_max_s: float = Field(30.0, gt=0, description="longest reconnect delay")

    @model_validator(mode="after")
    def _check(self) -> ModbusSettings:
        seen: set[str] = set()
        for device in self.devices:
            if device.device_id.lower() in seen:
                raise ValueError(f"device_id {device.device_id!r} is used twice; every device needs its own id")
            seen.add(device.device_id.lower())
        # Devices on one serial port share one RS-485 line: one set of line settings, one address each.
        lines: dict[str, ModbusDevice] = {}
        for device in self.devices:
            if device.protocol != "rtu":
                continue
            first = lines.setdefault(device.serial_port or "", device)
            if first is device:
                continue
            if first.line != device.line:
                ours, theirs = ("/".join(map(str, d.line[1:])) for d in (first, device))
                raise ValueError(
                    f"devices {first.device_id!r} and {device.device_id!r} share serial port {device.serial_port} "
                    f"but not its settings ({ours} vs {theirs} baud/parity/stop/data bits): every device on one "
                    "line must use the same"
                )
            if first.unit_id == device.unit_id:
                raise ValueError(
                    f"devices {first.device_id!r} and {device.device_id!r} both use unit_id {device.unit_id} on "
                    f"serial port {device.serial_port}: every device on one line needs its own address"
                )
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be >= backoff_min_s")
        return self


def sample_settings() -> dict[str, ModbusSettings]:
    """The documented example: the salad line's PLC (PLANT.md), one section per connector name."""
    filler = ModbusDevice(
        device_id="filler",
        host="10.20.1.10",
        unit_id=1,
        max_gap=4,
        groups=[
            TagGroup(
                name="fast",
                interval_s=0.5,
                tags=[
                    ModbusTag(name="running", table="coil", address=0),
                    ModbusTag(name="speed", address=0, datatype="int16", scale=0.1, unit="bowls/min", deadband=0.2),
                    ModbusTag(name="fill_weight", address=2, datatype="float32", unit="g", deadband=0.5),
                    ModbusTag(name="fault", address=4, datatype="bit", bit=0),
                    ModbusTag(name="guard_open", address=4, datatype="bit", bit=3),
                ],
            ),
            TagGroup(
                name="counters",
                interval_s=5.0,
                tags=[
                    ModbusTag(name="bowls_filled", table="input", address=0, datatype="uint32"),
                    ModbusTag(name="bowls_rejected", table="input", address=2, datatype="uint32", word_order="little"),
                    ModbusTag(name="energy", table="input", address=4, datatype="float64", unit="kWh"),
                ],
            ),
            TagGroup(
                name="setup",
                interval_s=10.0,
                tags=[
                    ModbusTag(name="recipe", address=100, datatype="string", length=8),
                    ModbusTag(
                        name="target_weight", address=110, datatype="uint16", scale=0.1, unit="g", writable=True
                    ),
                    ModbusTag(name="temperature", address=111, datatype="int16", scale=0.1, offset=-40.0, unit="degC"),
                ],
            ),
        ],
    )
    sleever = ModbusDevice(
        device_id="sleever",
        host="10.20.1.11",
        port=502,
        groups=[
            TagGroup(
                interval_s=1.0,
                tags=[
                    ModbusTag(name="sleeves_scrapped", table="input", address=10, datatype="uint32"),
                    ModbusTag(name="sleeve_sensor", table="discrete", address=0),
                ],
            )
        ],
    )
    labeller = ModbusDevice(
        device_id="labeller",
        protocol="rtu",
        serial_port="/dev/ttyUSB0",
        baudrate=19200,
        parity="E",
        unit_id=7,
        groups=[TagGroup(interval_s=2.0, tags=[ModbusTag(name="labels_applied", address=0, datatype="uint16")])],
    )
    settings = ModbusSettings(
        type="modbus", group_id="plant1", edge_node_id="salad-plc", devices=[filler, sleever, labeller]
    )
    return {"salad_plc": settings}


def sample_yaml() -> str:
    """sample.yaml's text: the example as a `connectors:` section, defaults left out."""
    import yaml  # only the docs need it

    sections = {}
    for name, settings in sample_settings().items():
        body = settings.model_dump(mode="json", exclude_defaults=True)
        sections[name] = {"type": settings.type, **body}
    header = (
        "# Example Modbus connector section, generated from connectors/modbus/config.py (sample_yaml());\n"
        "# tests/test_modbus_config.py fails when this file and the model drift apart.\n"
    )
    return header + yaml.safe_dump({"connectors": sections}, sort_keys=False)
