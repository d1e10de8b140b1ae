"""Throw-away database servers of Plantbus's own, on free loopback ports: for the tests and the benchmarks.

`LocalPostgres` runs Debian's PostgreSQL binaries (`initdb`, `pg_ctl`) into a temporary data directory as
the `postgres` user (PostgreSQL refuses to run as root). It never touches a cluster the machine already
runs. `restart()` keeps the port and the data, for outage tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hub.broker import free_port
from hub.errors import PlantbusError


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PlantbusError("PostgreSQL is not installed; `make test` installs it (apt-get install postgresql)")


class LocalPostgres:
    """A private PostgreSQL server: trust auth on 127.0.0.1:<port>, superuser `postgres`."""

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="plantbus-pg-"))
        self.datadir = self.workdir / "data"
        self.bindir = _pg_bindir()
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> LocalPostgres:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        if not (self.datadir / "PG_VERSION").exists():
            result = self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                               "--no-sync")
            if result.returncode != 0:
                raise PlantbusError(f"initdb failed: {result.stderr.strip()}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.workdir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        result = self._run("pg_ctl", "-D", str(self.datadir), "-o", options, "-l", str(self.workdir / "log"),
                           "-w", "-t", "30", "start")
        if result.returncode != 0:
            log = (self.workdir / "log").read_text(errors="replace")[-2000:] if (self.workdir / "log").exists() else ""
            raise PlantbusError(f"PostgreSQL did not start: {result.stderr.strip()} {log}")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def create_database(self, name: str) -> str:
        """Create a database and return its SQLAlchemy URL."""
        result = self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        if result.returncode != 0:
            raise PlantbusError(f"createdb {name} failed: {result.stderr.strip()}")
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
