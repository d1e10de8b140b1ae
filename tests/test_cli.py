"""The `plantbus` command line, run as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def plantbus(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def test_config_check_accepts_the_shipped_example(monkeypatch):
    import os

    result = plantbus("config", "check", "plantbus.example.yaml", env={**os.environ, "PLANTBUS_MQTT_PASSWORD": "s3cret"})
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "2 UNS mappings" in result.stdout


def test_config_check_names_every_bad_key_with_its_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "broker": {"url": "http://plc:1883"},
                "host": {"host_id": "plant/bus", "reorder_timeout_ms": -1},
                "uns": {"mappings": [{"path": "a/{line}"}], "colour": "red"},
            }
        )
    )
    result = plantbus("config", "check", str(bad))
    assert result.returncode == 2
    for expected in (
        "broker.url: broker URL 'http://plc:1883': scheme must be one of",
        "host.host_id: Sparkplug host id 'plant/bus' contains reserved character(s) /",
        "host.reorder_timeout_ms:",
        "uns.mappings[0].path: unknown placeholder {line}",
        "uns.colour: unknown key; remove it or check its spelling",
    ):
        assert expected in result.stderr, result.stderr


def test_config_check_reports_yaml_syntax_errors_with_a_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("host:\n  host_id: plantbus\n  groups: [a, b\n")
    result = plantbus("config", "check", str(bad))
    assert result.returncode == 2
    assert "not valid YAML at line" in result.stderr


def test_config_check_requires_the_password_variable_it_names(tmp_path):
    import os

    cfg = tmp_path / "c.yaml"
    cfg.write_text("broker:\n  url: mqtt://127.0.0.1:1883\n  password_env: PLANTBUS_TEST_UNSET_PASSWORD\n")
    env = {k: v for k, v in os.environ.items() if k != "PLANTBUS_TEST_UNSET_PASSWORD"}
    result = plantbus("config", "check", str(cfg), env=env)
    assert result.returncode == 2
    assert "PLANTBUS_TEST_UNSET_PASSWORD is not set" in result.stderr


def test_config_defaults_print_a_file_that_validates(tmp_path):
    result = plantbus("config", "defaults")
    assert result.returncode == 0
    out = tmp_path / "defaults.yaml"
    out.write_text(result.stdout)
    assert yaml.safe_load(result.stdout)["host"]["host_id"] == "plantbus"
    assert plantbus("config", "check", str(out)).returncode == 0


def test_run_refuses_a_bad_broker_url_before_starting():
    result = plantbus("run", "--broker", "mqtt://127.0.0.1:notaport")
    assert result.returncode == 2
    assert "port must be a number" in result.stderr
