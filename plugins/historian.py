"""Built-in plugin: the historian. Every sample batch the bus delivers is stored in each configured backend.

Each backend gets its own durable outbox (`<state_dir>/historian/outbox-<name>.sqlite`): `on_samples`
returns once the batch is on disk there, and a drain task per backend delivers it, retrying while the
backend is down. So a PostgreSQL restart or an InfluxDB outage delays history; it does not lose it.

Configuration, `plugins.historian` in the hub's YAML file (everything optional; without it the hub keeps
history in `<state_dir>/history.sqlite`):

```yaml
plugins:
  historian:
    query_backend: sql            # which backend answers queries (default: the first)
    backends:
      - type: sql                 # SQLite file (default) or PostgreSQL
        url: postgresql+psycopg://plantbus@db:5432/plantbus
        password_env: PLANTBUS_DB_PASSWORD
        retention: {raw_days: 30, minute_days: 365, hour_days: 3650}
      - type: influxdb
        url: http://influxdb:8086
        token_env: INFLUX_TOKEN   # the token itself never lives in the file
        org: zdorovo
        bucket: plant
        outbox: {batch_points: 5000}
```

What other parts of Plantbus use (the console, the API): `hub.historian`, a `HistorianService`, set by
this plugin's `hub_startup`: `query_raw`, `query_buckets`, `latest` and `list_paths` (the `Historian`
protocol, answered by the query backend), `write(samples)` (through the outboxes), `diagnostics()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from hub.errors import ConfigError
from hub.historian import (
    DAY_MS,
    BucketSeries,
    Historian,
    HistorianError,
    Point,
    Retention,
    SinkUnavailable,
    Tier,
    to_records,
)
from hub.historian.outbox import Outbox
from hub.plugins import hookimpl
from hub.samples import Sample
from hub.sparkplug.payload import DataType

if TYPE_CHECKING:
    from hub.app import Hub

log = logging.getLogger(__name__)

NAME = "historian"
_BACKEND_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetentionSettings(_Strict):
    """How long the SQL historian keeps each tier; null keeps it forever."""

    raw_days: float | None = Field(30, gt=0, description="raw samples")
    minute_days: float | None = Field(365, gt=0, description="1-minute rollups")
    hour_days: float | None = Field(3650, gt=0, description="1-hour rollups")
    interval_s: float = Field(3600, gt=0, description="how often old rows are deleted")

    @model_validator(mode="after")
    def _coarser_lives_longer(self) -> RetentionSettings:
        inf = float("inf")
        raw, minute, hour = (v if v is not None else inf for v in (self.raw_days, self.minute_days, self.hour_days))
        if not raw <= minute <= hour:
            raise ValueError("keep coarser tiers at least as long: raw_days <= minute_days <= hour_days")
        return self

    def policy(self) -> Retention:
        """As the historian's `Retention` (milliseconds)."""

        def ms(days: float | None) -> int | None:
            return None if days is None else int(days * DAY_MS)

        return Retention(ms(self.raw_days), ms(self.minute_days), ms(self.hour_days))


class OutboxSettings(_Strict):
    """The durable outbox in front of a backend."""

    batch_points: int = Field(20_000, ge=1, le=1_000_000, description="most points sent to the backend at once")
    backoff_initial_s: float = Field(0.5, gt=0, description="first retry delay while the backend fails")
    backoff_max_s: float = Field(30.0, gt=0, description="the retry delay doubles up to this")
    fsync: bool = Field(
        True, description="fsync every batch (survives power loss); false: survives a crash of the hub only"
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> OutboxSettings:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self


class _Backend(_Strict):
    name: str | None = Field(None, description="unique name (outbox file, diagnostics); defaults to the type")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str | None) -> str | None:
        if value is not None and not _BACKEND_NAME.match(value):
            raise ValueError("use 1-64 letters, digits, '_' or '-'")
        return value

    @property
    def label(self) -> str:
        """The backend's name, defaulting to its type."""
        return self.name or self.type  # type: ignore[attr-defined]


class SqlBackend(_Backend):
    """SQLite file (default `<state_dir>/history.sqlite`) or PostgreSQL."""

    type: Literal["sql"] = "sql"
    url: str | None = Field(
        None,
        description="sqlite:///path/history.sqlite or postgresql+psycopg://user@host:5432/db; empty: the default file",
    )
    password_env: str | None = Field(None, description="environment variable holding the PostgreSQL password")
    synchronous: Literal["FULL", "NORMAL"] = Field("FULL", description="SQLite: FULL fsyncs every commit")
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @field_validator("url")
    @classmethod
    def _url_ok(cls, value: str | None) -> str | None:
        if value is not None:
            from hub.historian.sql import check_url

            try:
                check_url(value)
            except HistorianError as exc:
                raise ValueError(str(exc)) from None
        return value


class InfluxBackend(_Backend):
    """InfluxDB 2.x/3.x (or a server speaking its v2 write API); reads through the v1-compatible /query."""

    type: Literal["influxdb"]
    url: str = Field(description="http(s)://host:8086")
    token_env: str | None = Field(None, description="environment variable holding the API token")
    org: str = Field("", description="organisation (InfluxDB 2.x)")
    bucket: str = Field(min_length=1, description="bucket (the database on InfluxDB 1.x)")
    database: str | None = Field(
        None, description="database for InfluxQL reads (a DBRP mapping on 2.x); default: the bucket"
    )
    retention_policy: str | None = Field(None, description="retention policy for InfluxQL reads; default: the DB's")
    measurement: str = Field("plantbus", min_length=1)
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one write or query")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. http://influxdb:8086)")
        return value


def _backend_type(value: Any) -> str | None:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


Backend = Annotated[
    Annotated[SqlBackend, Tag("sql")] | Annotated[InfluxBackend, Tag("influxdb")],
    Discriminator(
        _backend_type,
        custom_error_type="backend_type",
        custom_error_message="each backend needs `type: sql` or `type: influxdb`",
    ),
]


class Settings(_Strict):
    """`plugins.historian` in the hub's configuration."""

    backends: list[Backend] = Field(default_factory=lambda: [SqlBackend()], description="where history goes")
    query_backend: str | None = Field(None, description="name of the backend that answers queries; default: the first")
    shutdown_flush_s: float = Field(5.0, ge=0, description="on shutdown, how long the outboxes may keep sending")

    @model_validator(mode="after")
    def _names(self) -> Settings:
        names = [b.label for b in self.backends]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two backends are named {name!r}; give each a unique `name`")
        if self.query_backend is not None and self.query_backend not in names:
            known = ", ".join(names) or "none"
            raise ValueError(f"query_backend {self.query_backend!r} is not a backend; known: {known}")
        return self


def _secret(variable: str | None, what: str) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise ConfigError(f"{what}: environment variable {variable} is not set; export it or remove the setting")
    return value


def make_sql_historian(settings: SqlBackend, state_dir: Path) -> Historian:
    """Factory for type `sql`."""
    from hub.historian.sql import SqlHistorian

    url = settings.url or f"sqlite:///{Path(state_dir) / 'history.sqlite'}"
    return SqlHistorian(
        url,
        name=settings.label,
        retention=settings.retention.policy(),
        password=_secret(settings.password_env, f"plugins.historian backend {settings.label} password_env"),
        synchronous=settings.synchronous,
    )


def make_influx_historian(settings: InfluxBackend, state_dir: Path) -> Historian:
    """Factory for type `influxdb`."""
    from hub.historian.influx import InfluxHistorian

    return InfluxHistorian(
        settings.url,
        bucket=settings.bucket,
        org=settings.org,
        token=_secret(settings.token_env, f"plugins.historian backend {settings.label} token_env"),
        database=settings.database,
        retention_policy=settings.retention_policy,
        measurement=settings.measurement,
        timeout_s=settings.timeout_s,
        name=settings.label,
    )


FACTORIES: dict[str, Callable[[Any, Path], Historian]] = {"sql": make_sql_historian, "influxdb": make_influx_historian}

Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]


class HistorianService:
    """`hub.historian`: writes fan out to every backend through its outbox; queries go to the query backend."""

    def __init__(self, settings: Settings, backends: Sequence[tuple[Any, Historian]], state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.backends: dict[str, Historian] = {}
        self.outboxes: dict[str, Outbox] = {}
        self._retention: dict[str, float] = {}
        for backend_settings, historian in backends:
            name = backend_settings.label
            self.backends[name] = historian
            box = backend_settings.outbox
            self.outboxes[name] = Outbox(
                self.state_dir / "historian" / f"outbox-{name}.sqlite",
                historian.write_records,
                name=name,
                batch_points=box.batch_points,
                backoff_initial_s=box.backoff_initial_s,
                backoff_max_s=box.backoff_max_s,
                fsync=box.fsync,
            )
            if isinstance(backend_settings, SqlBackend):
                self._retention[name] = backend_settings.retention.interval_s
        if not self.backends:
            raise ConfigError("plugins.historian.backends is empty; configure one backend or disable the plugin")
        self.query_name = settings.query_backend or next(iter(self.backends))
        self._tasks: list[Any] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, state_dir: Path, factories: Any = None
    ) -> HistorianService:
        """Build every configured backend with the registered factory of its type."""
        factories = factories if factories is not None else FACTORIES
        built = []
        for backend in settings.backends:
            try:
                factory = factories[backend.type]
            except KeyError:
                raise ConfigError(f"plugins.historian: no historian type {backend.type!r} is registered") from None
            built.append((backend, factory(backend, state_dir)))
        return cls(settings, built, state_dir)

    @property
    def query_backend(self) -> Historian:
        """The backend that answers queries."""
        return self.backends[self.query_name]

    async def open(self) -> None:
        """Open the outboxes and prepare the backends; a backend that is down is retried by its outbox."""
        for name, outbox in self.outboxes.items():
            await outbox.open()
            try:
                await self.backends[name].open()
            except SinkUnavailable as exc:
                log.warning("historian backend %s is not reachable yet (%s); history waits in its outbox", name, exc)

    def start(self, spawn: Spawn) -> None:
        """Start the drain task of every outbox and the retention task of every SQL backend."""
        for name, outbox in self.outboxes.items():
            self._tasks.append(spawn(outbox.run(), f"outbox:{name}"))
        for name, interval in self._retention.items():
            self._tasks.append(spawn(self._retention_loop(name, interval), f"retention:{name}"))

    async def _retention_loop(self, name: str, interval: float) -> None:
        # The first pass soon after start, so a hub restarted daily still applies a daily retention.
        delay = min(60.0, interval)
        historian = self.backends[name]
        while True:
            await asyncio.sleep(delay)
            delay = interval
            try:
                deleted = await historian.apply_retention()
            except HistorianError as exc:
                log.warning("historian %s: retention pass failed (%s); trying again in %.0f s", name, exc, interval)
                continue
            if any(deleted.values()):
                log.info("historian %s: retention deleted %s", name, {t.value: n for t, n in deleted.items()})

    async def write(self, samples: Sequence[Sample]) -> int:
        """Hand samples to every backend's outbox; returns once they are durable in all of them."""
        records = to_records(samples)
        for outbox in self.outboxes.values():
            await outbox.put(records)
        return len(records)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every outbox delivered what it holds; False if one did not within `timeout`."""
        results = await asyncio.gather(*(o.flush(timeout) for o in self.outboxes.values()))
        return all(results)

    async def stop(self) -> None:
        """Let the outboxes send for `shutdown_flush_s`, stop the tasks and close (pending data stays on disk)."""
        if self._tasks and not await self.flush(self.settings.shutdown_flush_s):
            waiting = sum(o.pending_points for o in self.outboxes.values())
            log.warning("historian: %d points still wait in the outboxes; they are sent at the next start", waiting)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for name, outbox in self.outboxes.items():
            await outbox.close()
            await self.backends[name].close()

    # ------------------------------------------------------------------ queries (the query backend)

    async def query_raw(
        self, paths: str | Sequence[str], start_ms: int, end_ms: int, *, limit: int | None = None
    ) -> dict[str, list[Point]]:
        """Stored samples per path, `start <= ts < end`."""
        return await self.query_backend.query_raw(paths, start_ms, end_ms, limit=limit)

    async def query_buckets(
        self, paths: str | Sequence[str], start_ms: int, end_ms: int, bucket_ms: int, *, tier: Tier | None = None
    ) -> dict[str, BucketSeries]:
        """Aggregates per bucket (count, min, max, mean, first, last, time-weighted mean)."""
        return await self.query_backend.query_buckets(paths, start_ms, end_ms, bucket_ms, tier=tier)

    async def latest(self, paths: str | Sequence[str] | None = None) -> dict[str, Point]:
        """The newest stored sample per path."""
        return await self.query_backend.latest(paths)

    async def list_paths(self, prefix: str = "") -> dict[str, DataType | None]:
        """Known paths under `prefix` with their datatypes."""
        return await self.query_backend.list_paths(prefix)

    def diagnostics(self) -> dict[str, Any]:
        """Per backend: its own counters and its outbox's (pending, sent, retries, last error)."""
        return {
            "query_backend": self.query_name,
            "backends": {
                name: {"backend": self.backends[name].diagnostics(), "outbox": self.outboxes[name].diagnostics()}
                for name in self.backends
            },
        }


# ---------------------------------------------------------------------------- hooks


@hookimpl
def register_settings(register) -> None:  # type: ignore[no-untyped-def]
    register(NAME, Settings)


@hookimpl
def register_historians(register) -> None:  # type: ignore[no-untyped-def]
    for type_name, factory in FACTORIES.items():
        register(type_name, factory)


@hookimpl
async def hub_startup(hub: Hub) -> None:
    settings: Settings = hub.plugin_settings(NAME)  # type: ignore[assignment]
    service = HistorianService.from_settings(settings, hub.state_dir, hub.registries.historians)
    await service.open()
    service.start(lambda coro, what: hub.start_task(NAME, coro, what))
    hub.historian = service  # type: ignore[attr-defined]


@hookimpl
async def on_samples(samples: list[Sample], hub: Hub) -> None:
    service: HistorianService | None = getattr(hub, "historian", None)
    if service is None:
        raise HistorianError("the historian did not start; see the hub's log for why")
    await service.write(samples)


@hookimpl
async def hub_shutdown(hub: Hub) -> None:
    service: HistorianService | None = getattr(hub, "historian", None)
    if service is not None:
        await service.stop()
