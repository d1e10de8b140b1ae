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
CV_WIDTH, CV_HEIGHT, CV_FPS = 640, 360, 5
# Shipped models (edge_cv/models/, built by `python -m edge_cv.models.build`); the rules that need one are left out,
# with a note, when it has not been built.
PRODUCT_MODEL, MASK_MODEL, DETECTOR_MODEL = "product-appearance.onnx", "ppe-mask.onnx", "plantbus-det-320.onnx"


def _missing_models() -> list[str]:
    from edge_cv.models import MODELS_DIR

    return [name for name in (PRODUCT_MODEL, MASK_MODEL, DETECTOR_MODEL) if not (MODELS_DIR / name).is_file()]


def _polygon(points: Any) -> list[list[float]]:
    return [[round(float(x), 1), round(float(y), 1)] for x, y in points]


def _verifier_camera(line: str, seed: int, missing: list[str]) -> dict[str, Any]:
    """A verifier camera over a line's conveyor: counts packs, checks every marking code and, with the appearance
    model, the look of each pack."""
    from edge_cv.scenes import SceneSpec, scene_layout
    from edge_cv.scenes.skus import SKUS, line_skus

    sku = line_skus(line)[0]  # the SKU the line runs in the demo; another SKU's code is a foreign code
    spec = SceneSpec(kind="conveyor", line=line, sku=sku, seed=seed, width=CV_WIDTH, height=CV_HEIGHT, fps=CV_FPS)
    layout = scene_layout(spec)
    camera: dict[str, Any] = {
        # Ten-minute scenes, each loop with a new seed: fresh packs and codes, as on a running line.
        "source": f"synthetic:conveyor?line={line}&sku={sku}&seed={seed}&width={CV_WIDTH}&height={CV_HEIGHT}"
        "&duration_s=600",
        "fps": CV_FPS,
        "loop": True,
        "detector": {"type": "blob", "label": "product"},
        "zones": {"belt": {"polygon": _polygon(layout.zones["belt"]), "kind": "conveyor"}},
        "lines": {"exit": {"points": _polygon(layout.lines["centre"]), "in_direction": "right"}},
        "rules": {
            "packed": {"type": "counting", "line": "exit", "labels": ["product"], "directions": ["in"]},
            # presence "symbol": a code zxing finds but cannot decode is unreadable (blob tracks of packs that
            # touch are not reliable enough to call a pack without a code unreadable).
            "codes": {"type": "marking", "gtins": [SKUS[sku].gtin], "zone": "belt", "presence": "symbol",
                      "shifts": {"timezone": "Europe/Moscow"}},
        },
    }  # fmt: skip
    if PRODUCT_MODEL not in missing:
        camera["classifiers"] = [{"model": PRODUCT_MODEL, "attribute": "appearance", "apply_to": ["product"]}]
        camera["rules"]["looks"] = {"type": "quality", "attribute": "appearance", "defect_labels": ["defective"],
                                    "labels": ["product"], "zone": "belt"}  # fmt: skip
    return camera


def _floor_camera(seed: int, missing: list[str]) -> dict[str, Any]:
    """A camera over the salad line's floor: people per zone, time at the sleever, masks, spills."""
    from edge_cv.scenes import SceneSpec, scene_layout

    spec = SceneSpec(kind="floor", seed=seed, width=CV_WIDTH, height=CV_HEIGHT, fps=CV_FPS)
    layout = scene_layout(spec)
    if DETECTOR_MODEL not in missing:
        detector: dict[str, Any] = {"type": "yolo", "model": DETECTOR_MODEL, "keep": ["person"], "confidence": 0.4}
    else:
        detector = {"type": "hog"}  # OpenCV's people detector: no model file, weaker on small people
    camera: dict[str, Any] = {
        # A spill appears two minutes into each ten-minute scene.
        "source": f"synthetic:floor?seed={seed}&width={CV_WIDTH}&height={CV_HEIGHT}&duration_s=600&spill_at_s=120",
        "fps": CV_FPS,
        "loop": True,
        "detector": detector,
        "zones": {
            "floor": {"polygon": _polygon(layout.zones["floor"]), "kind": "floor"},
            "sleever": {"polygon": _polygon(layout.zones["workstation"]), "kind": "work", "operation": "sleeving"},
        },
        "rules": {
            "people": {"type": "personnel", "labels": ["person"], "zones": ["floor", "sleever"], "dwell_min_s": 5},
            "hygiene": {"type": "sanitation", "zone": "floor", "people": ["person"]},
        },
    }
    if MASK_MODEL not in missing:
        camera["classifiers"] = [{"model": MASK_MODEL, "attribute": "mask", "apply_to": ["person"]}]
        camera["rules"]["people"]["ppe"] = {"required": {"mask": "mask"}, "zones": ["sleever"]}
    return camera


def cv_section(missing: list[str]) -> dict[str, Any]:
    """The simulated cameras: a verifier on each line, and the salad line's floor."""
    return {
        "group": "plant1",
        "nodes": {
            "cv-oatbar": {"cameras": {"verifier": _verifier_camera("oatbar", 1, missing)}},
            "cv-salad": {"cameras": {"verifier": _verifier_camera("salad", 2, missing),
                                     "floor": _floor_camera(3, missing)}},
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
        config["cv"] = cv_section(_missing_models())
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
        # The cameras: both cv edge nodes in one edge process, as one small edge computer would run them.
        cameras = subprocess.Popen(_plantbus("cv", "run", "-c", str(config_file), "--broker", broker.url), env=env,
                                   start_new_session=True)
        procs.append((cameras, "cameras"))
        missing = _missing_models()
        appearance = ", appearance" if PRODUCT_MODEL not in missing else ""
        masks = ", masks" if MASK_MODEL not in missing else ""
        models = (f"models not built, the rules that need them are off: {', '.join(missing)} "
                  "(python -m edge_cv.models.build)" if missing else "models: edge_cv/models/*.onnx")  # fmt: skip
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
  cameras         cv-oatbar/verifier, cv-salad/verifier (counting, marking codes{appearance}),
                  cv-salad/floor (people, dwell at the sleever{masks}, spills); synthetic scenes, {CV_FPS} frames/s
                  {models}

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
