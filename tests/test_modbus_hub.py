"""The Modbus connector inside the hub: configured under `connectors.<name>`, its registers reach the UNS mirror
as plain JSON and a host write reaches the PLC's register."""

from __future__ import annotations

import json

import aiomqtt

from connectors.modbus import plugin as modbus_plugin
from connectors.modbus.simulator import ModbusSimulator
from hub.app import Hub
from hub.config import parse_config
from hub.mqtt import BrokerUrl, make_client
from sparkplug_fakes import running, wait_until


def section(port: int) -> dict:
    return {
        "type": "modbus",
        "edge_node_id": "salad-plc",
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.2,
        "devices": [
            {
                "device_id": "filler",
                "host": "127.0.0.1",
                "port": port,
                "timeout_s": 0.5,
                "groups": [
                    {
                        "interval_s": 0.05,
                        "tags": [
                            {"name": "speed", "address": 0, "datatype": "uint16", "scale": 0.5, "unit": "bowls/min"},
                            {"name": "target_weight", "address": 1, "datatype": "uint16", "scale": 0.1, "writable": True},
                        ],
                    }
                ],
            }
        ],
    }


async def test_modbus_registers_reach_the_uns_mirror_and_a_host_write_reaches_the_plc(broker, tmp_path):
    seen: dict[str, dict] = {}

    async def watch() -> None:
        async with make_client(BrokerUrl.parse(broker.url), "uns-watcher") as client:
            await client.subscribe("uns/plant1/salad-plc/filler/#")
            async for message in client.messages:
                seen[message.topic.value] = json.loads(bytes(message.payload))

    async with ModbusSimulator() as sim:
        config = parse_config(
            {
                "broker": {"url": broker.url},
                "host": {"host_id": "modbus-host", "diagnostics_interval_s": 60},
                "state_dir": str(tmp_path / "state"),
                "connectors": {"salad_plc": section(sim.port)},
            }
        )
        await sim.set("holding", 0, [61, 3000])
        hub = Hub(config, plugins=[("modbus", modbus_plugin)])

        class Watcher:
            async def run(self) -> None:
                while True:
                    try:
                        await watch()
                    except aiomqtt.MqttError:
                        pass

        async with running(hub, Watcher()):
            speed = "uns/plant1/salad-plc/filler/speed"
            await wait_until(
                lambda: seen.get(speed, {}).get("value") == 30.5 and seen[speed]["quality"] == "GOOD",
                timeout=15,
                what="speed in the UNS mirror",
            )
            assert seen[speed]["datatype"] == "Double"
            await hub.host.write("uns/plant1/salad-plc/filler/target_weight", 312.5)
            await wait_until(
                lambda: seen.get("uns/plant1/salad-plc/filler/target_weight", {}).get("value") == 312.5,
                timeout=10,
                what="written value mirrored",
            )
            assert await sim.get("holding", 1) == [3125]
            await sim.stop()
            await wait_until(lambda: seen[speed]["quality"] == "BAD", timeout=10, what="BAD quality in the mirror")
