"""`python -m connectors.sim --seed 1 --opcua-port P --modbus-port Q`: run the simulated plant until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
from datetime import datetime

from connectors.sim.model import DEFAULT_START
from connectors.sim.runner import SimulatedPlant


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m connectors.sim", description=__doc__)
    p.add_argument("--seed", type=int, default=1, help="random seed; the same seed replays the same plant")
    p.add_argument("--opcua-port", type=int, default=4840, help="OPC UA port (oatbar line)")
    p.add_argument("--modbus-port", type=int, default=5020, help="Modbus TCP port (salad line)")
    p.add_argument("--host", default="127.0.0.1", help="address both servers bind to")
    p.add_argument("--time-factor", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--start", type=datetime.fromisoformat, default=DEFAULT_START,
                   help="simulated start time, ISO 8601 local (default: a Monday 05:50)")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    plant = SimulatedPlant(args.seed, opcua_port=args.opcua_port, modbus_port=args.modbus_port, host=args.host,
                           time_factor=args.time_factor, start=args.start)
    async with plant:
        print(json.dumps(plant.endpoints()), flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
