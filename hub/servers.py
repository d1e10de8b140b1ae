"""Throw-away database servers of Plantbus's own, on free loopback ports: for the tests and the benchmarks.

`LocalPostgres` runs Debian's PostgreSQL binaries (`initdb`, `pg_ctl`) into a temporary data directory as
the `postgres` user (PostgreSQL refuses to run as root). It never touches a cluster the machine already
runs. `restart()` keeps the port and the data, for outage tests. `LocalVictoriaMetrics` (the InfluxDB v2
write API, read back through its export API) and `LocalInfluxDB` (Debian's InfluxDB 1.x: v1 `/write` and
InfluxQL) run the same way, for the InfluxDB historian.
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

from hub.broker import LocalServer, free_port
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


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 — loopback URLs we built
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _http_post(url: str, body: bytes, timeout: float = 10.0, content_type: str = "text/plain") -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 — loopback URLs we built
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class LocalVictoriaMetrics(LocalServer):
    """Debian's `victoria-metrics`: accepts InfluxDB line protocol on `/api/v2/write` (and `/write`).

    Read back with `export(match)`: series are named `<measurement>_<field>`, tags become labels. No
    deduplication is configured, so a point written twice shows up twice — what exactly-once tests need.
    """

    prefix = "plantbus-vm-"
    what = "victoria-metrics"

    def _command(self) -> list[str]:
        binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
        if not Path(binary).exists():
            raise PlantbusError(
                "victoria-metrics is not installed; `make test` installs it (apt-get install victoria-metrics)"
            )
        return [
            binary,
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]

    def _ready(self) -> bool:
        status, body = _http_get(f"{self.url}/health", timeout=0.5)
        return status == 200 and body.strip() == b"OK"

    def flush(self) -> None:
        """Make recently written points searchable now."""
        _http_get(f"{self.url}/internal/force_flush", timeout=10)

    def export(self, match: str = '{__name__=~".+"}') -> list[dict]:
        """Every stored sample of the matching series: [{"metric": {...}, "values": [...], "timestamps": [...]}]."""
        import json
        import urllib.parse

        query = urllib.parse.urlencode({"match[]": match, "start": "0"})
        status, body = _http_get(f"{self.url}/api/v1/export?{query}", timeout=30)
        if status != 200:
            raise PlantbusError(f"victoria-metrics export failed with HTTP {status}: {body[:500]!r}")
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


class LocalInfluxDB(LocalServer):
    """Debian's `influxd` (1.6.7): v1 `/write` line protocol and InfluxQL `/query`; no auth, no reporting."""

    prefix = "plantbus-influx-"
    what = "influxd"

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        super().__init__(port, workdir)
        # influxd also opens an RPC port for backups; give it a free one so it never meets another influxd.
        self.rpc_port = free_port()

    def _command(self) -> list[str]:
        binary = shutil.which("influxd") or "/usr/bin/influxd"
        if not Path(binary).exists():
            raise PlantbusError("influxd is not installed; `make test` installs it (apt-get install influxdb)")
        conf = self.workdir / "influxdb.conf"
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{self.workdir / "meta"}"\n  logging-enabled = false\n'
            f'[data]\n  dir = "{self.workdir / "data"}"\n  wal-dir = "{self.workdir / "wal"}"\n'
            "  query-log-enabled = false\n  trace-logging-enabled = false\n"
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
        )
        return [binary, "-config", str(conf)]

    def _ready(self) -> bool:
        status, _ = _http_get(f"{self.url}/ping", timeout=0.5)
        return status == 204

    def query(self, q: str, db: str | None = None) -> dict:
        """Run InfluxQL through POST /query; returns the JSON answer."""
        import json
        import urllib.parse

        params = {"q": q, "epoch": "ms", **({"db": db} if db else {})}
        status, body = _http_post(
            f"{self.url}/query",
            urllib.parse.urlencode(params).encode(),
            content_type="application/x-www-form-urlencoded",
        )
        if status != 200:
            raise PlantbusError(f"influxd /query failed with HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE; returns the name."""
        self.query(f'CREATE DATABASE "{name}"')
        return name

    def write_lines(self, db: str, lines: list[str], precision: str = "ms") -> None:
        """Load line protocol through the v1 `/write` endpoint (the only write API 1.x has)."""
        import urllib.parse

        query = urllib.parse.urlencode({"db": db, "precision": precision})
        status, body = _http_post(f"{self.url}/write?{query}", "\n".join(lines).encode())
        if status != 204:
            raise PlantbusError(f"influxd /write failed with HTTP {status}: {body[:500]!r}")
