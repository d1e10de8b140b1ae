"""`make demo`: the simulated plant end to end, stopped together by Ctrl-C.

A Mosquitto of its own, the simulated packaging plant (OPC UA server for the oat-bar line, Modbus TCP server for
the salad line), the hub with both connectors, the historian and the plant database, a simulated camera on each
line (edge CV nodes cv-oatbar and cv-salad, synthetic scenes), and the operator console on http://127.0.0.1:8080
(or the next free port).
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


# The demo's cameras: modest size and rate, so the vision part stays a fraction of a 2-core machine.
# Conveyors at 720p: the size the verifier pipelines are evaluated at (codes at 3 px per module, crops the appearance
# model knows); the floor at 640x360, as evaluated.
CONVEYOR_SIZE, FLOOR_SIZE, CV_FPS = (1280, 720), (640, 360), 5
def _merge_cameras(*cameras: dict[str, Any]) -> dict[str, Any]:
    """One camera running several reference pipelines over the same view (same source and detector)."""
    merged: dict[str, Any] = {}
    for camera in cameras:
        for key, value in camera.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            elif isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = merged[key] + [v for v in value if v not in merged[key]]
            else:
                merged[key] = value
    return merged


def _demo_source(spec: Any, **extra: Any) -> str:
    """The reference scene played for ten minutes a loop, each loop with a new seed (fresh packs and codes)."""
    from edge_cv.evaluate import source_for

    return source_for(spec.model_copy(update={"duration_s": 600.0, **extra}))


def _verifier_camera(line: str, seed: int) -> dict[str, Any]:
    """A verifier camera over a line's conveyor: counts packs, checks every marking code and the look of each pack,
    configured exactly as the held-out evaluation judges these pipelines (edge_cv/evaluate.py)."""
    from edge_cv.evaluate import reference_camera_dict
    from edge_cv.scenes import SceneSpec
    from edge_cv.scenes.skus import line_skus

    spec = SceneSpec(kind="conveyor", line=line, sku=line_skus(line)[0], seed=seed,
                     width=CONVEYOR_SIZE[0], height=CONVEYOR_SIZE[1], fps=CV_FPS, defect_rate=0.1, duplicate_rate=0.03, damaged_rate=0.03,
                     foreign_rate=0.02)  # fmt: skip
    camera = _merge_cameras(*(reference_camera_dict(p, spec) for p in ("counting", "marking", "quality")))
    camera["rules"]["packed"]["emit_events"] = False  # a count per pack is a metric, not an event
    camera["rules"]["codes"]["shifts"] = {"timezone": "Europe/Moscow"}
    return camera | {"source": _demo_source(spec), "loop": True}


def _floor_camera(seed: int) -> dict[str, Any]:
    """A camera over the salad line's floor: people per zone, time at the sleever, masks, spills."""
    from edge_cv.evaluate import reference_camera_dict
    from edge_cv.scenes import SceneSpec

    spec = SceneSpec(kind="floor", seed=seed, width=FLOOR_SIZE[0], height=FLOOR_SIZE[1], fps=CV_FPS, people=3,
                     mask_off_rate=0.3, spill_at_s=120.0)  # fmt: skip
    camera = _merge_cameras(*(reference_camera_dict(p, spec) for p in ("personnel", "sanitation")))
    return camera | {"source": _demo_source(spec), "loop": True}


def cv_section() -> dict[str, Any]:
    """The simulated cameras: a verifier on each line, and the salad line's floor."""
    return {
        "group": "plant1",
        "nodes": {
            "cv-oatbar": {"cameras": {"verifier": _verifier_camera("oatbar", 1)}},
            "cv-salad": {"cameras": {"verifier": _verifier_camera("salad", 2), "floor": _floor_camera(3)}},
        },
        "snapshots": {"dir": str(STATE / "cv" / "snapshots"), "retention_days": 1},
    }


def demo_config(opcua_endpoint: str | None, modbus_port: int, cameras: bool = True) -> dict[str, Any]:
    """The hub configuration a plant engineer would write for the simulated plant."""
    connectors: dict[str, Any] = {"salad_plc": wiring.modbus_section("127.0.0.1", modbus_port)}
    if opcua_endpoint is not None:
        connectors["oatbar_plc"] = wiring.opcua_section(opcua_endpoint)
    config: dict[str, Any] = {
        "host": {"host_id": "plantbus", "reorder_timeout_ms": 2000, "diagnostics_interval_s": 5},
        "uns": {"prefix": "uns", "mappings": wiring.UNS_MAPPINGS},
        "connectors": connectors,
        "state_dir": str(STATE / "hub"),
        "log_level": "INFO",
    }
    if cameras:
        config["cv"] = cv_section()
        # Each camera sits on its line in the namespace: zdorovo/plant1/packaging/<line>/<camera>/cv/events.
        config["uns"]["mappings"] = [
            *wiring.UNS_MAPPINGS,
            {"group": "plant1", "edge_node": "cv-oatbar", "path": "zdorovo/plant1/packaging/oatbar/{device}"},
            {"group": "plant1", "edge_node": "cv-salad", "path": "zdorovo/plant1/packaging/salad/{device}"},
        ]
    return config


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


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # `kill` (SIGTERM) stops the demo in order, as Ctrl-C does


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
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
        # The cameras: both cv edge nodes in one edge process, as one small edge computer would run them.
        cameras = subprocess.Popen(_plantbus("cv", "run", "-c", str(config_file), "--broker", broker.url), env=env,
                                   start_new_session=True)
        procs.append((cameras, "cameras"))
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
  cameras         cv-oatbar/verifier, cv-salad/verifier (counting, marking codes, appearance),
                  cv-salad/floor (people, dwell at the sleever, masks, spills); synthetic scenes, {CV_FPS} frames/s,
                  models edge_cv/models/*.onnx (trained on synthetic scenes; see their cards)

Where else to look:
  unified namespace   mosquitto_sub {where} -t 'zdorovo/#' -t 'uns/#' -v
  hub diagnostics     mosquitto_sub {where} -t 'plantbus/status' -v
  raw Sparkplug       .venv/bin/plantbus sparkplug sniff --broker {broker.url}
  camera events       mosquitto_sub {where} -t 'zdorovo/plant1/packaging/+/+/cv/events' -v

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
