"""`make demo`: the simulated plant end to end, stopped together by Ctrl-C.

A Mosquitto of its own, the simulated packaging plant (OPC UA server for the oat-bar line, Modbus TCP server for
the salad line), the hub with both connectors, the historian and the plant database, and the operator console on
http://127.0.0.1:8080 (or the next free port).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from connectors.sim import wiring
from hub.broker import LocalMosquitto, first_free_port

ROOT = Path(__file__).resolve().parent.parent
STATE = Path("var/demo")


def demo_config(opcua_endpoint: str | None, modbus_port: int) -> dict[str, Any]:
    """The hub configuration a plant engineer would write for the simulated plant."""
    connectors: dict[str, Any] = {"salad_plc": wiring.modbus_section("127.0.0.1", modbus_port)}
    if opcua_endpoint is not None:
        connectors["oatbar_plc"] = wiring.opcua_section(opcua_endpoint)
    return {
        "host": {"host_id": "plantbus", "reorder_timeout_ms": 2000, "diagnostics_interval_s": 5},
        "uns": {"prefix": "uns", "mappings": wiring.UNS_MAPPINGS},
        "connectors": connectors,
        "state_dir": str(STATE / "hub"),
        "log_level": "INFO",
    }


def _plantbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "hub.cli", *args]


def _stop(proc: subprocess.Popen[Any], name: str, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"demo: {name} did not stop in {timeout:.0f} s; killing it", flush=True)
        proc.kill()
        proc.wait()


def main() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    port = first_free_port(1883)
    if port != 1883:
        print(f"demo: port 1883 is taken; the demo broker listens on {port} instead", flush=True)
    console_port = first_free_port(8080)
    if console_port != 8080:
        print(f"demo: port 8080 is taken; the console listens on {console_port} instead", flush=True)
    opcua_port, modbus_port = first_free_port(4840), first_free_port(5020)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[tuple[subprocess.Popen[Any], str]] = []
    broker = LocalMosquitto(port=port, workdir=STATE / "mosquitto", base_conf=ROOT / "mosquitto/dev.conf")
    broker.start()
    try:
        # Own sessions: Ctrl-C reaches only this process, which then stops the others in order
        # (console, hub, plant, broker) so NDEATH and STATE offline still reach the broker.
        plant = subprocess.Popen(
            # Half an hour into Monday's shift A: both lines are staffed and running.
            [sys.executable, "-m", "connectors.sim", "--seed", "1", "--opcua-port", str(opcua_port),
             "--modbus-port", str(modbus_port), "--start", "2026-03-02T06:30:00"],
            env=env, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        procs.append((plant, "simulated plant"))
        assert plant.stdout is not None
        endpoints = json.loads(plant.stdout.readline())
        opcua_endpoint = endpoints["opcua"]["endpoint"]

        config_file = STATE / "plantbus.yaml"
        config_file.write_text(yaml.safe_dump(demo_config(opcua_endpoint, modbus_port), sort_keys=False))
        # The relational store (SQLite under the demo's state dir): schema, then the reference plant of PLANT.md.
        for step in (("db", "upgrade"), ("db", "seed-reference-plant")):
            subprocess.run(_plantbus(*step, "-c", str(config_file)), env=env, check=True, stdout=subprocess.DEVNULL)
        hub = subprocess.Popen(_plantbus("run", "-c", str(config_file), "--broker", broker.url), env=env,
                               start_new_session=True)
        procs.append((hub, "hub"))
        history = STATE / "hub" / "history.sqlite"
        console = subprocess.Popen(
            _plantbus("console", "-c", str(config_file), "--broker", broker.url, "--port", str(console_port),
                      "--historian-url", f"sqlite:///{history.resolve()}"),
            env=env, start_new_session=True,
        )  # fmt: skip
        procs.append((console, "console"))
        where = f"-h 127.0.0.1 -p {port}"
        print(
            f"""
Plantbus demo is running.
  console         http://127.0.0.1:{console_port}   (plant overview, UNS browser; English / Russian)
  broker          {broker.url}   (Mosquitto, config from mosquitto/dev.conf)
  plant           oat-bar line on OPC UA {opcua_endpoint}
                  salad line on Modbus TCP 127.0.0.1:{modbus_port} (unit 1)
  hub             Sparkplug primary host 'plantbus' + UNS mirror + connectors + plugins, config {config_file}
  history         {history} (SQL historian: raw, 1 min and 1 h rollups)
  plant database  {STATE / "hub" / "plantbus.sqlite"} (lines, SKUs, shifts, stop reasons of PLANT.md)

Where else to look:
  unified namespace   mosquitto_sub {where} -t 'zdorovo/#' -t 'uns/#' -v
  hub diagnostics     mosquitto_sub {where} -t 'plantbus/status' -v
  raw Sparkplug       .venv/bin/plantbus sparkplug sniff --broker {broker.url}

Ctrl-C stops everything.
""",
            flush=True,
        )
        while True:
            for proc, name in procs:
                if proc.poll() is not None:
                    print(f"demo: the {name} exited with {proc.returncode}; stopping", flush=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
        return 0
    finally:
        for proc, name in reversed(procs):
            _stop(proc, name)
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
