"""`make demo`: a broker of its own, the hub and simulated edge nodes, stopped together by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from hub.broker import LocalMosquitto, first_free_port

ROOT = Path(__file__).resolve().parent.parent
STATE = Path("var/demo")

DEMO_CONFIG = {
    "host": {"host_id": "plantbus", "reorder_timeout_ms": 2000, "diagnostics_interval_s": 5},
    "uns": {
        "prefix": "uns",
        "mappings": [
            # One simulated node shown under an ISA-95 path; the rest keep the default uns/... tree.
            {"group": "sim", "edge_node": "sim-node-0", "path": "zdorovo/plant1/packaging/line1/{device}"},
        ],
    },
    "state_dir": str(STATE / "hub"),
    "log_level": "INFO",
}


def _plantbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "hub.cli", *args]


def _stop(proc: subprocess.Popen[bytes], name: str, timeout: float = 10.0) -> None:
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
    broker = LocalMosquitto(port=port, workdir=STATE / "mosquitto", base_conf=ROOT / "mosquitto/dev.conf")
    broker.start()
    config_file = STATE / "plantbus.yaml"
    config_file.write_text(yaml.safe_dump(DEMO_CONFIG, sort_keys=False))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The relational store (SQLite under the demo's state dir): schema, then the reference plant of PLANT.md.
    for step in (("db", "upgrade"), ("db", "seed-reference-plant")):
        subprocess.run(_plantbus(*step, "-c", str(config_file)), env=env, check=True, stdout=subprocess.DEVNULL)
    # Own sessions: Ctrl-C reaches only this process, which then stops the others in order
    # (simulator, hub, broker) so NDEATH and STATE offline still reach the broker.
    hub = subprocess.Popen(_plantbus("run", "-c", str(config_file), "--broker", broker.url), env=env, start_new_session=True)
    sim = subprocess.Popen(
        _plantbus(
            "sparkplug", "simulate", "--broker", broker.url, "--group", "sim", "--nodes", "2", "--devices", "3",
            "--metrics", "8", "--rate", "1", "--host-id", "plantbus", "--state-dir", str(STATE / "sim"),
        ),
        env=env,
        start_new_session=True,
    )
    where = f"-h 127.0.0.1 -p {port}"
    print(
        f"""
Plantbus demo is running.
  broker          {broker.url}   (Mosquitto, config from mosquitto/dev.conf)
  hub             Sparkplug primary host 'plantbus' + UNS mirror + plugins, config {config_file}
  history         {STATE / "hub" / "history.sqlite"} (SQL historian: raw, 1 min and 1 h rollups)
  plant database  {STATE / "hub" / "plantbus.sqlite"} (lines, SKUs, shifts, stop reasons of PLANT.md)
  edge nodes      2 simulated nodes x 3 devices x 8 metrics, group 'sim', 1 Hz

Where to look:
  unified namespace   mosquitto_sub {where} -t 'uns/#' -t 'zdorovo/#' -v
  hub diagnostics     mosquitto_sub {where} -t 'plantbus/status' -v
  raw Sparkplug       .venv/bin/plantbus sparkplug sniff --broker {broker.url}

Ctrl-C stops everything.
""",
        flush=True,
    )
    try:
        while True:
            for proc, name in ((hub, "hub"), (sim, "simulator")):
                if proc.poll() is not None:
                    print(f"demo: the {name} exited with {proc.returncode}; stopping", flush=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
        return 0
    finally:
        _stop(sim, "simulator")
        _stop(hub, "hub")
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
