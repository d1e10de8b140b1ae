"""Server processes of Plantbus's own on free loopback ports (Mosquitto here; databases in hub/servers.py),
for `make demo`, the benchmarks and the tests."""

from __future__ import annotations

import abc
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from hub.errors import PlantbusError

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def first_free_port(start: int, host: str = "127.0.0.1", tries: int = 100) -> int:
    for port in range(start, start + tries):
        if port_is_free(port, host):
            return port
    raise PlantbusError(f"no free port in {start}..{start + tries - 1} on {host}")


def mosquitto_binary() -> str:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise PlantbusError("mosquitto is not installed; run `make demo` or `apt-get install mosquitto`")


class LocalServer(abc.ABC):
    """A server binary of our own on a free loopback port; `restart()` keeps the port and the data."""

    prefix = "plantbus-server-"
    what = "server"
    log_name = "server.log"

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=self.prefix))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The server's command line."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """True once the server answers requests."""

    def start(self, timeout: float = 30.0) -> LocalServer:
        """Start and wait until the server answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / self.log_name, "ab")
        # Own session: a Ctrl-C meant for a test run must not kill the server behind the test's back.
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.workdir / self.log_name).read_text(errors="replace")[-2000:]
                raise PlantbusError(f"{self.what} exited with {self.proc.returncode}: {tail}")
            try:
                if self._ready():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise PlantbusError(f"{self.what} did not answer on 127.0.0.1:{self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down `down_for` seconds, start again on the same port with the same data."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def close(self) -> None:
        """Stop and remove the data if the directory was ours."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()




class LocalMosquitto(LocalServer):
    """Runs `mosquitto -c <generated conf>` on a loopback port; restartable on the same port."""

    prefix = "plantbus-mosquitto-"
    what = "mosquitto"
    log_name = "mosquitto.log"

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        extra_conf: str = "",
        base_conf: Path | None = None,
    ) -> None:
        super().__init__(port, workdir)
        self.base_conf = base_conf
        self.extra_conf = extra_conf

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        if self.base_conf is not None:
            # Keep the shipped settings; only the listener moves to our port.
            base = [
                line
                for line in self.base_conf.read_text().splitlines()
                if not line.strip().startswith(("listener", "port "))
            ]
        else:
            base = [
                "# generated by Plantbus for a local, loopback-only broker",
                "per_listener_settings false",
                "allow_anonymous true",
                "persistence false",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "max_queued_messages 100000",
                "max_inflight_messages 0",
                "set_tcp_nodelay true",
            ]
        lines = [*base, f"listener {self.port} 127.0.0.1", "user root", self.extra_conf]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _command(self) -> list[str]:
        return [mosquitto_binary(), "-c", str(self._write_conf())]

    def _ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
            return True

    def start(self, timeout: float = 10.0) -> LocalMosquitto:
        super().start(timeout)
        return self
