#!/usr/bin/env python3
"""Modbus poll throughput, end to end: registers/s polled from a pymodbus server and values/s reaching the UNS mirror.

A Hub (primary host + UNS mirror) runs one Modbus connector (loaded as a plugin, as in production) against a
ModbusSimulator on loopback with `--devices` devices of `--registers` uint16 tags each, polled as fast as
`--interval` allows. A writer task changes every register between polls so that every poll is a change and
travels as DDATA -> host -> retained JSON on `uns/...`; a plain paho subscriber in its own process
(bench/receiver.py, as in bench/run.py) counts the JSON messages.

Printed: registers/s read from Modbus (requests/s alongside), values/s published as DDATA, values/s that
the mirror published and that arrived at the subscriber, and the share of polled values that reached it. The
simulator, edge node, host and mirror share one process and event loop, so the figures are a floor. Not run by the tests; `python bench/modbus.py --seconds 10`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from connectors.modbus import plugin as modbus_plugin  # noqa: E402
from connectors.modbus.simulator import ModbusSimulator  # noqa: E402
from hub.app import Hub  # noqa: E402
from hub.broker import LocalMosquitto  # noqa: E402
from hub.config import parse_config  # noqa: E402
from hub.mqtt import BrokerUrl, make_client  # noqa: E402


def connector_section(port: int, devices: int, registers: int, interval: float) -> dict:
    """One connector with `devices` units on one simulator, `registers` contiguous uint16 tags each."""
    return {
        "type": "modbus",
        "edge_node_id": "salad-plc",
        "devices": [
            {
                "device_id": f"unit{unit}",
                "host": "127.0.0.1",
                "port": port,
                "unit_id": unit,
                "groups": [
                    {
                        "interval_s": interval,
                        "tags": [{"name": f"r{i}", "address": i, "datatype": "uint16"} for i in range(registers)],
                    }
                ],
            }
            for unit in range(1, devices + 1)
        ],
    }


async def bench(seconds: float, devices: int, registers: int, interval: float) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, LocalMosquitto(workdir=Path(tmp) / "mosquitto") as broker:
        async with ModbusSimulator(tuple(range(1, devices + 1)), size=max(registers, 1)) as sim:
            config = parse_config(
                {
                    "broker": {"url": broker.url},
                    "host": {"host_id": "bench-host", "diagnostics_interval_s": 60},
                    "state_dir": str(Path(tmp) / "state"),
                    "connectors": {"salad_plc": connector_section(sim.port, devices, registers, interval)},
                }
            )
            hub = Hub(config, plugins=[("modbus", modbus_plugin)])
            receiver = subprocess.Popen(
                [sys.executable, str(ROOT / "bench/receiver.py"), str(broker.port), "uns/plant1/salad-plc/#",
                 str(10**9), "5", "/unit"],
                stdout=subprocess.PIPE, text=True,
            )
            assert receiver.stdout is not None
            if receiver.stdout.readline().strip() != "ready":
                raise RuntimeError("the receiver did not start")

            async def change_registers() -> None:
                value = 0
                while True:
                    value = (value + 1) & 0xFFFF
                    for unit in range(1, devices + 1):
                        await sim.set("holding", 0, [value] * registers, unit=unit)
                    await asyncio.sleep(interval / 2)

            hub_task = asyncio.create_task(hub.run())
            changer = asyncio.create_task(change_registers())
            try:
                status = hub.connectors.status["salad_plc"]
                while status.connector is None:  # the hub builds the connector when its task starts
                    await asyncio.sleep(0.1)
                coordinators = status.connector.coordinators.values()  # type: ignore[attr-defined]
                await asyncio.sleep(2.0)  # warm up: births, first polls

                edge = status.connector.edge  # type: ignore[attr-defined]

                mirror = hub.mirror
                assert mirror is not None

                def totals() -> tuple[int, int, int, int]:
                    read = sum(c.values_read for c in coordinators)
                    requests = sum(c.requests for c in coordinators)
                    return read, requests, edge.stats.metrics_published, mirror.published

                read0, req0, pub0, mir0 = totals()
                t0 = time.perf_counter()
                await asyncio.sleep(seconds)
                elapsed = time.perf_counter() - t0
                read1, req1, pub1, mir1 = totals()
                changer.cancel()
                await asyncio.sleep(1.0)  # let the last values through before the count closes
                receiver.terminate()
                out, _ = await asyncio.to_thread(receiver.communicate, timeout=60)
                result = json.loads(out.strip().splitlines()[-1])
            finally:
                if receiver.poll() is None:
                    receiver.kill()
                for task in (changer, hub_task):
                    task.cancel()
                await asyncio.gather(changer, hub_task, return_exceptions=True)
    got, first, last = result["received"], result["first_ms"], result["last_ms"]
    rx_rate = got / ((last - first) / 1000) if got and last and first and last > first else 0.0
    reg_rate = (read1 - read0) / elapsed
    print(f"Modbus poll: {devices} device(s) x {registers} registers, interval {interval} s, {elapsed:.1f} s")
    print(f"  registers read from Modbus: {reg_rate:,.0f} registers/s ({(req1 - req0) / elapsed:,.0f} requests/s)")
    print(f"  values published by the edge node (DDATA): {(pub1 - pub0) / elapsed:,.0f} values/s")
    print(f"  values published on the UNS by the mirror: {(mir1 - mir0) / elapsed:,.0f} values/s "
          f"({(mir1 - mir0) / max(pub1 - pub0, 1):.0%} of DDATA values)")
    print(f"  values arriving at a paho subscriber in another process: {rx_rate:,.0f} values/s "
          f"(p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms from the poll's timestamp)")


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--registers", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    try:
        asyncio.run(bench(args.seconds, args.devices, args.registers, args.interval))
    except aiomqtt.MqttError as exc:
        sys.exit(f"broker problem: {exc}")


if __name__ == "__main__":
    main()
