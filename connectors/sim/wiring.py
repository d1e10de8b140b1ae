"""Connector configuration for the simulated plant: what a plant engineer would write for these two PLCs.

Built from `layout.py`, so the demo and the end-to-end test always read exactly what the servers expose.
Sparkplug: group `plant1`, edge nodes `oatbar-plc` (OPC UA) and `salad-plc` (Modbus), one device per machine.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from connectors.sim.layout import MODBUS_TAGS, MODBUS_UNIT_ID, OPCUA_ENDPOINT_PATH, OPCUA_NAMESPACE, OPCUA_TAGS

# Counters and slow values polled less often than states and speeds.
_SLOW = ("count", "sleeves", "codes", "nominal", "tne", "runtime")

UNS_MAPPINGS: list[dict[str, str]] = [
    {"group": "plant1", "edge_node": "oatbar-plc", "path": "zdorovo/plant1/packaging/oatbar/{device}"},
    {"group": "plant1", "edge_node": "salad-plc", "path": "zdorovo/plant1/packaging/salad/{device}"},
]


def modbus_section(host: str, port: int, *, fast_s: float = 0.5, slow_s: float = 2.0) -> dict[str, Any]:
    """The `connectors.salad_plc` section: one Sparkplug device per machine, all on the line PLC's unit."""
    by_machine: dict[str, list[Any]] = defaultdict(list)
    for tag in MODBUS_TAGS:
        _, machine, _name = tag.path.split("/")
        by_machine[machine].append(tag)
    devices = []
    for machine, tags in by_machine.items():
        groups: dict[str, list[dict[str, Any]]] = {"fast": [], "slow": []}
        for tag in tags:
            name = tag.path.rsplit("/", 1)[1]
            entry: dict[str, Any] = {"name": name, "table": tag.table, "address": tag.address}
            if tag.datatype != "bool":
                entry["datatype"] = tag.datatype
            if tag.scale != 1.0:
                entry["scale"] = tag.scale
            if tag.unit:
                entry["unit"] = tag.unit
            if tag.writable:
                entry["writable"] = True
            groups["slow" if any(k in name for k in _SLOW) else "fast"].append(entry)
        devices.append({
            "device_id": machine,
            "host": host,
            "port": port,
            "unit_id": MODBUS_UNIT_ID,
            "max_gap": 8,
            "groups": [
                {"name": g, "interval_s": fast_s if g == "fast" else slow_s, "tags": t} for g, t in groups.items() if t
            ],
        })
    return {"type": "modbus", "group_id": "plant1", "edge_node_id": "salad-plc", "devices": devices}


def opcua_section(endpoint: str, *, namespace_index: int = 2, sampling_ms: float = 250.0) -> dict[str, Any]:
    """The `connectors.oatbar_plc` section: subscriptions to every documented node, one device per machine.

    The simulated server registers OPCUA_NAMESPACE first, so it gets index 2 (0 is OPC UA's, 1 the server's).
    """
    if not endpoint.endswith(OPCUA_ENDPOINT_PATH):
        raise ValueError(f"{endpoint!r} is not the simulated oat-bar server ({OPCUA_NAMESPACE})")
    by_machine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for tag in OPCUA_TAGS:
        _, machine, name = tag.path.split("/")
        entry: dict[str, Any] = {"name": name, "node_id": f"ns={namespace_index};s={tag.node_id}"}
        if tag.writable:
            entry["writable"] = True
        by_machine[machine].append(entry)
    return {
        "type": "opcua",
        "group_id": "plant1",
        "edge_node_id": "oatbar-plc",
        "endpoint": endpoint,
        "mode": "subscribe",
        "devices": [
            {"device_id": machine, "sampling_interval_ms": sampling_ms, "tags": tags}
            for machine, tags in by_machine.items()
        ],
    }
