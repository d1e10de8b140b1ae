"""compose.yaml, the Makefile's commands and the generated conformance table stay valid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_validates_with_docker_compose():
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: scripts/setup.sh test should have installed it")
        pytest.skip("docker-compose not installed (scripts/setup.sh test installs it)")
    env = {**os.environ, "PLANTBUS_MQTT_PASSWORD": "x", "PLANTBUS_DB_PASSWORD": "y", "PLANTBUS_INFLUX_PASSWORD": "z",
           "PLANTBUS_INFLUX_TOKEN": "t", "PLANTBUS_CV_MQTT_PASSWORD": "c"}
    result = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_the_hub_without_its_broker_password():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed")
    env = {k: v for k, v in os.environ.items() if k != "PLANTBUS_MQTT_PASSWORD"}
    env.update(PLANTBUS_DB_PASSWORD="y", PLANTBUS_INFLUX_PASSWORD="z", PLANTBUS_INFLUX_TOKEN="t", PLANTBUS_CV_MQTT_PASSWORD="c")
    result = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "PLANTBUS_MQTT_PASSWORD" in result.stderr


def test_conformance_table_is_up_to_date():
    result = subprocess.run(
        [sys.executable, "scripts/conformance.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_readme_names_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci/run").read_text()
