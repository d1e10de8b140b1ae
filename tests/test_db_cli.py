"""`plantbus db ...` run as a user runs it: upgrade, current, downgrade, seed-reference-plant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from _db_support import postgres  # noqa: F401  (fixture)

from hub.broker import free_port
from hub.db import head_revision

ROOT = Path(__file__).resolve().parent.parent


def plantbus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "db", *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_upgrade_creates_the_default_sqlite_file_and_a_second_run_changes_nothing(tmp_path):
    config = tmp_path / "plantbus.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state")}))
    head = head_revision()

    first = plantbus("upgrade", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert f"upgraded (empty) -> {head}" in first.stdout
    assert (tmp_path / "state" / "plantbus.sqlite").is_file()

    again = plantbus("upgrade", "-c", str(config))
    assert again.returncode == 0 and f"already at {head}" in again.stdout

    current = plantbus("current", "-c", str(config))
    assert current.returncode == 0 and f"{head} (up to date)" in current.stdout

    one_step = plantbus("downgrade", "-1", "-c", str(config))  # a relative revision, not an option
    assert one_step.returncode == 0 and f"downgraded {head} -> (empty)" in one_step.stdout, one_step.stderr


def test_upgrade_seed_and_downgrade_on_postgresql(postgres):
    url = postgres.create_database("cli")
    assert plantbus("upgrade", "--url", url).returncode == 0

    seeded = plantbus("seed-reference-plant", "--url", url)
    assert seeded.returncode == 0, seeded.stderr
    assert "products 5 added" in seeded.stdout and "stop_reasons 29 added" in seeded.stdout
    again = plantbus("seed-reference-plant", env={"PLANTBUS_DATABASE_URL": url})  # the variable works as --url
    assert again.returncode == 0 and "nothing added (61 already there)" in again.stdout

    down = plantbus("downgrade", "base", "--url", url)
    assert down.returncode == 0 and "-> (empty)" in down.stdout, down.stderr
    current = plantbus("current", "--url", url)
    assert current.returncode == 1 and f"(empty) (needs upgrade to {head_revision()})" in current.stdout


def test_seeding_an_unmigrated_database_says_to_upgrade_first(tmp_path):
    result = plantbus("seed-reference-plant", "--url", f"sqlite:///{tmp_path / 'new.sqlite'}")
    assert result.returncode == 2
    assert "is at revision (empty)" in result.stderr and "run `plantbus db upgrade`" in result.stderr


def test_an_unsupported_url_is_refused():
    result = plantbus("upgrade", "--url", "mysql://root@db/plant")
    assert result.returncode == 2 and "'mysql' is not supported" in result.stderr


def test_an_unreachable_server_is_reported_without_the_password():
    result = plantbus("upgrade", "--url", f"postgresql://plantbus:s3cret@127.0.0.1:{free_port()}/plantbus")
    assert result.returncode == 2
    assert "cannot use the database postgresql+psycopg://plantbus:***@127.0.0.1" in result.stderr
    assert "that the server is running" in result.stderr and "s3cret" not in result.stderr
