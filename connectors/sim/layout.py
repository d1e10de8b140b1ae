"""Exactly what the simulated plant's servers expose: OPC UA nodes of the oatbar line, Modbus map of the salad line.

This module is the single source of truth; connectors/sim/README.md is generated from it (`render_markdown()`) and a
test fails when the two drift. Every entry is keyed by the model path `<line>/<machine>/<tag>`, which is also the
ISA-95 tail `zdorovo/plant1/packaging/<line>/<machine>/<tag>` from PLANT.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.sim.model import OATBAR, REASONS_BY_CODE, SALAD, SHIFT_CODES, SKU_CODES, LineState

OPCUA_NAMESPACE = "urn:zdorovo:plant1:oatbar"
OPCUA_ENDPOINT_PATH = "/zdorovo/oatbar"  # endpoint: opc.tcp://<host>:<port>/zdorovo/oatbar, security None
MODBUS_UNIT_ID = 1
MODBUS_WORD_ORDER = "big"  # 32-bit values: high word at the lower address; bytes big-endian within each word

STATE_CODES: dict[int, str] = {s.value: s.name.lower() for s in LineState}
STOP_REASON_CODES: dict[int, str] = {code: r.key for code, r in REASONS_BY_CODE.items()}


@dataclass(frozen=True, slots=True)
class OpcUaTag:
    """One OPC UA variable: NodeId `ns=<index of OPCUA_NAMESPACE>;s=<node_id>`, browse path Objects/<line>/<machine>/<tag>."""

    path: str  # model path <line>/<machine>/<tag>
    variant: str  # asyncua ua.VariantType member name
    unit: str
    writable: bool = False

    @property
    def node_id(self) -> str:
        """String identifier of the NodeId (namespace OPCUA_NAMESPACE)."""
        return self.path.replace("/", ".")

    @property
    def browse_path(self) -> tuple[str, ...]:
        """Browse names below the Objects folder, all in namespace OPCUA_NAMESPACE."""
        return tuple(self.path.split("/"))


@dataclass(frozen=True, slots=True)
class ModbusTag:
    """One Modbus point on unit MODBUS_UNIT_ID; addresses are 0-based protocol addresses as sent on the wire."""

    path: str
    table: str  # "input" (FC4), "holding" (FC3/6/16), "discrete" (FC2), "coil" (FC1/5/15)
    address: int
    datatype: str  # "uint16", "uint32", "float32", "bool"
    scale: float = 1.0  # engineering value = raw * scale
    unit: str = ""

    @property
    def count(self) -> int:
        """Registers (or bits) the point occupies."""
        return 2 if self.datatype in ("uint32", "float32") else 1

    @property
    def writable(self) -> bool:
        """Holding registers and coils are writable."""
        return self.table in ("holding", "coil")


def _opcua_tags() -> tuple[OpcUaTag, ...]:
    line = OATBAR.name
    tags = [
        OpcUaTag(f"{line}/line/state", "Int32", "code"),
        OpcUaTag(f"{line}/line/state_name", "String", ""),
        OpcUaTag(f"{line}/line/stop_reason", "Int32", "code"),
        OpcUaTag(f"{line}/line/sku", "String", ""),
        OpcUaTag(f"{line}/line/shift", "String", ""),
        OpcUaTag(f"{line}/line/speed", "Double", "packs/min"),
        OpcUaTag(f"{line}/line/runtime_s", "UInt32", "s"),
        OpcUaTag(f"{line}/line/sim_time", "String", "ISO 8601 local"),
        OpcUaTag(f"{line}/line/run_enable", "Boolean", "", writable=True),
    ]
    for m in OATBAR.machines:
        tags += [
            OpcUaTag(f"{line}/{m}/state", "Int32", "code"),
            OpcUaTag(f"{line}/{m}/state_name", "String", ""),
            OpcUaTag(f"{line}/{m}/stop_reason", "Int32", "code"),
            OpcUaTag(f"{line}/{m}/speed", "Double", "packs/min"),
            OpcUaTag(f"{line}/{m}/good_count", "UInt32", "packs"),
            OpcUaTag(f"{line}/{m}/reject_count", "UInt32", "packs"),
        ]
    tags += [
        OpcUaTag(f"{line}/filler/speed_setpoint", "Double", "packs/min", writable=True),
        OpcUaTag(f"{line}/filler/fill_target_g", "Double", "g", writable=True),
        OpcUaTag(f"{line}/checkweigher/last_weight_g", "Double", "g"),
        OpcUaTag(f"{line}/checkweigher/nominal_g", "Double", "g"),
        OpcUaTag(f"{line}/checkweigher/tne_g", "Double", "g"),
        OpcUaTag(f"{line}/printer/codes_printed", "UInt32", "codes"),
        OpcUaTag(f"{line}/printer/codes_verified", "UInt32", "codes"),
        OpcUaTag(f"{line}/printer/codes_unreadable", "UInt32", "codes"),
        OpcUaTag(f"{line}/printer/codes_duplicate", "UInt32", "codes"),
        OpcUaTag(f"{line}/case_packer/cases_packed", "UInt32", "cases"),
    ]
    return tuple(tags)


def _modbus_tags() -> tuple[ModbusTag, ...]:
    line = SALAD.name
    tags = [
        ModbusTag(f"{line}/line/state", "input", 0, "uint16", unit="code"),
        ModbusTag(f"{line}/line/stop_reason", "input", 1, "uint16", unit="code"),
        ModbusTag(f"{line}/line/shift_code", "input", 2, "uint16", unit="code"),
        ModbusTag(f"{line}/line/sku_code", "input", 3, "uint16", unit="code"),
        ModbusTag(f"{line}/line/speed", "input", 4, "float32", unit="packs/min"),
        ModbusTag(f"{line}/line/runtime_s", "input", 6, "uint32", unit="s"),
        ModbusTag(f"{line}/line/running", "discrete", 0, "bool"),
        ModbusTag(f"{line}/line/fault", "discrete", 1, "bool"),
        ModbusTag(f"{line}/line/run_enable", "coil", 0, "bool"),
        ModbusTag(f"{line}/bowl_filler/speed_setpoint", "holding", 0, "uint16", 0.1, "packs/min"),
        ModbusTag(f"{line}/bowl_filler/fill_target_g", "holding", 1, "uint16", 0.1, "g"),
    ]
    for i, m in enumerate(SALAD.machines, start=1):
        base = 100 * i
        tags += [
            ModbusTag(f"{line}/{m}/state", "input", base, "uint16", unit="code"),
            ModbusTag(f"{line}/{m}/stop_reason", "input", base + 1, "uint16", unit="code"),
            ModbusTag(f"{line}/{m}/speed", "input", base + 2, "float32", unit="packs/min"),
            ModbusTag(f"{line}/{m}/good_count", "input", base + 4, "uint32", unit="packs"),
            ModbusTag(f"{line}/{m}/reject_count", "input", base + 6, "uint32", unit="packs"),
            ModbusTag(f"{line}/{m}/running", "discrete", 10 * i, "bool"),
            ModbusTag(f"{line}/{m}/fault", "discrete", 10 * i + 1, "bool"),
        ]
    tags += [
        ModbusTag(f"{line}/sleever/sleeves_used", "input", 310, "uint32", unit="sleeves"),
        ModbusTag(f"{line}/sleever/sleeves_scrapped", "input", 312, "uint32", unit="sleeves"),
        ModbusTag(f"{line}/checkweigher/last_weight_g", "input", 410, "float32", unit="g"),
        ModbusTag(f"{line}/checkweigher/nominal_g", "input", 412, "float32", unit="g"),
        ModbusTag(f"{line}/checkweigher/tne_g", "input", 414, "float32", unit="g"),
        ModbusTag(f"{line}/printer/codes_printed", "input", 510, "uint32", unit="codes"),
        ModbusTag(f"{line}/printer/codes_verified", "input", 512, "uint32", unit="codes"),
        ModbusTag(f"{line}/printer/codes_unreadable", "input", 514, "uint32", unit="codes"),
        ModbusTag(f"{line}/printer/codes_duplicate", "input", 516, "uint32", unit="codes"),
    ]
    return tuple(tags)


OPCUA_TAGS: tuple[OpcUaTag, ...] = _opcua_tags()
MODBUS_TAGS: tuple[ModbusTag, ...] = _modbus_tags()
# Every input register from 0 to MODBUS_INPUT_SIZE-1 answers (unused ones read 0), so connectors may batch reads.
MODBUS_INPUT_SIZE = 700
MODBUS_HOLDING_SIZE = 10
MODBUS_DISCRETE_SIZE = 80
MODBUS_COIL_SIZE = 16


def render_markdown() -> str:
    """The README's tag tables, generated from this module."""
    lines = [
        "### OPC UA — line `oatbar`",
        "",
        f"Namespace URI `{OPCUA_NAMESPACE}`; NodeId `ns=<index of that URI>;s=<node id>`; browse path",
        "`Objects/<line>/<machine>/<tag>` with every browse name in the same namespace. Security: None.",
        "",
        "| model path | node id | type | unit | access |",
        "|---|---|---|---|---|",
    ]
    for t in OPCUA_TAGS:
        lines.append(f"| `{t.path}` | `{t.node_id}` | {t.variant} | {t.unit} | {'read/write' if t.writable else 'read'} |")
    lines += [
        "",
        "### Modbus TCP — line `salad`",
        "",
        f"Unit id {MODBUS_UNIT_ID}; 0-based protocol addresses; 32-bit values take two registers, high word first",
        "(word order big, bytes big-endian); float32 is IEEE 754; engineering value = raw × scale.",
        f"Input registers 0–{MODBUS_INPUT_SIZE - 1}, holding 0–{MODBUS_HOLDING_SIZE - 1}, discrete inputs "
        f"0–{MODBUS_DISCRETE_SIZE - 1} and coils 0–{MODBUS_COIL_SIZE - 1} all answer; unlisted ones read 0.",
        "",
        "| model path | table | address | type | scale | unit |",
        "|---|---|---|---|---|---|",
    ]
    for m in MODBUS_TAGS:
        lines.append(f"| `{m.path}` | {m.table} | {m.address} | {m.datatype} | {m.scale:g} | {m.unit} |")
    lines += ["", "### Codes", "", "| state code | name |", "|---|---|"]
    lines += [f"| {c} | {n} |" for c, n in STATE_CODES.items()]
    lines += ["", "| stop reason code | key | planned |", "|---|---|---|"]
    lines += [f"| {c} | {r.key} | {'yes' if r.planned else 'no'} |" for c, r in REASONS_BY_CODE.items()]
    lines += ["", "| shift code | shift |", "|---|---|"]
    lines += [f"| {c} | {s} |" for s, c in SHIFT_CODES.items()]
    lines += ["", "| sku code | sku |", "|---|---|"]
    lines += [f"| {c} | {s} |" for s, c in SKU_CODES.items()]
    return "\n".join(lines) + "\n"
