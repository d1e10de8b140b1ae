"""OPC UA subscription throughput through to the UNS mirror.

Run: `python -m bench.opcua [--seconds 8] [--variables 200] [--tick 0.05]`. Starts tests/opcua_test_server.py with
`--variables` Double nodes that all change every `--tick` seconds, a private Mosquitto, and a Hub (primary host +
UNS mirror, historian off) running the OPC UA connector from a `connectors.` section in subscribe mode; a plain paho
subscriber in its own process counts the mirrored JSON messages. Prints value changes/s received by the connector,
Sparkplug metrics/s it published, and messages/s that reached the UNS mirror. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hub.app import Hub
from hub.broker import LocalMosquitto
from hub.config import parse_config
from tests._opcua_support import OpcUaTestServer

ROOT = Path(__file__).resolve().parent.parent


async def measure(seconds: float, variables: int, tick: float) -> None:
    """Run server -> connector -> Mosquitto -> hub -> mirror -> subscriber for `seconds` and print the rates."""
    server = OpcUaTestServer(tick=tick, extra=["--variables", str(variables)])
    await asyncio.to_thread(server.start)
    with tempfile.TemporaryDirectory() as tmp, LocalMosquitto(workdir=Path(tmp) / "mosquitto") as broker:
        tags = [{"name": f"v{i}", "node_id": f"ns=2;s=Filler.V{i}"} for i in range(variables)]
        config = parse_config({
            "host": {"host_id": "bench-opcua", "diagnostics_interval_s": 60},
            "state_dir": tmp,
            "disabled_plugins": ["historian"],
            "connectors": {"plc": {
                "type": "opcua", "group_id": "bench", "edge_node_id": "oatbar-plc", "endpoint": server.url,
                "publishing_interval_ms": 50,
                "devices": [{"device_id": "filler", "sampling_interval_ms": 0, "tags": tags}],
            }},
        })  # fmt: skip
        hub = Hub(config, broker_override=broker.url)
        rx = subprocess.Popen(
            [sys.executable, str(ROOT / "bench/receiver.py"), str(broker.port), "uns/bench/oatbar-plc/filler/+",
             "100000000", str(seconds + 30), "/filler/v"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        task = asyncio.get_running_loop().create_task(hub.run())
        try:
            deadline = time.monotonic() + 30
            while (status := hub.connectors.status["plc"]).connector is None or not status.connector.connected.is_set():
                if time.monotonic() > deadline:
                    raise RuntimeError("the OPC UA connector did not connect within 30 s")
                await asyncio.sleep(0.1)
            conn = status.connector
            await asyncio.sleep(2.0)  # births out, subscription running
            c0, p0, t0 = conn.changes_received, conn.edge.stats.metrics_published, time.monotonic()
            await asyncio.sleep(seconds)
            c1, p1, t1 = conn.changes_received, conn.edge.stats.metrics_published, time.monotonic()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.stop()
        rx.terminate()
        out, _ = rx.communicate(timeout=10)
    dt = t1 - t0
    lines = [line for line in out.splitlines() if line.startswith("{")]
    mirrored = json.loads(lines[-1]) if lines else {"received": 0}
    first, last = mirrored.get("first_ms"), mirrored.get("last_ms")
    span = (last - first) / 1000 if first and last and last > first else None
    mirror_rate = mirrored["received"] / span if span else 0.0
    print(
        f"OPC UA, {variables} nodes changing every {tick * 1000:.0f} ms (offered {variables / tick:,.0f}/s): "
        f"{(c1 - c0) / dt:,.0f} value changes/s received by the connector, {(p1 - p0) / dt:,.0f} Sparkplug "
        f"metrics/s published, {mirror_rate:,.0f} messages/s reached the UNS mirror "
        f"(p50 {mirrored.get('p50_ms')} ms, p99 {mirrored.get('p99_ms')} ms from the value's timestamp); "
        "everything on this machine, the Python asyncua server included",
        flush=True,
    )


def main() -> None:
    """Parse arguments and run the measurement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--variables", type=int, default=200)
    parser.add_argument("--tick", type=float, default=0.05)
    args = parser.parse_args()
    asyncio.run(measure(args.seconds, args.variables, args.tick))


if __name__ == "__main__":
    main()
