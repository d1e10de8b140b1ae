"""OPC UA subscription throughput: value changes/s from a local asyncua server through the connector to Sparkplug.

Run: `python -m bench.opcua [--seconds 5] [--tick 0.001]`. Starts tests/opcua_test_server.py (Filler.Count
changes every tick) and a private Mosquitto, runs the connector in subscribe mode and counts the changes it
received and the metrics its edge node published. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from connectors.base import ConnectorContext
from connectors.opcua.config import OpcUaSettings
from connectors.opcua.connector import OpcUaConnector
from hub.broker import LocalMosquitto
from hub.mqtt import BrokerUrl
from tests._opcua_support import OpcUaTestServer


async def measure(seconds: float, tick: float) -> None:
    """Run the connector against the test server for `seconds` and print the rates."""
    server = OpcUaTestServer(tick=tick)
    await asyncio.to_thread(server.start)
    with tempfile.TemporaryDirectory() as tmp, LocalMosquitto(workdir=Path(tmp) / "mosquitto") as broker:
        settings = OpcUaSettings.model_validate({
            "type": "opcua", "group_id": "bench", "edge_node_id": "oatbar-plc", "endpoint": server.url,
            "publishing_interval_ms": 50,
            "devices": [{"device_id": "filler", "sampling_interval_ms": 0,
                         "tags": [{"name": "count", "node_id": "ns=2;s=Filler.Count"}]}],
        })  # fmt: skip
        ctx = ConnectorContext(BrokerUrl.parse(broker.url), None, Path(tmp))
        conn = OpcUaConnector("bench", settings, ctx)
        task = asyncio.get_running_loop().create_task(conn.run())
        try:
            await asyncio.wait_for(conn.connected.wait(), 20)
            await asyncio.sleep(1.0)  # warm up
            c0, p0, t0 = conn.changes_received, conn.edge.stats.metrics_published, time.monotonic()  # type: ignore[union-attr]
            await asyncio.sleep(seconds)
            c1, p1, t1 = conn.changes_received, conn.edge.stats.metrics_published, time.monotonic()  # type: ignore[union-attr]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.stop()
    dt = t1 - t0
    print(f"server tick {tick * 1000:.1f} ms: {(c1 - c0) / dt:.0f} OPC UA value changes/s received, "
          f"{(p1 - p0) / dt:.0f} Sparkplug metrics/s published")  # fmt: skip


def main() -> None:
    """Parse arguments and run the measurement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tick", type=float, default=0.001)
    args = parser.parse_args()
    asyncio.run(measure(args.seconds, args.tick))


if __name__ == "__main__":
    main()
