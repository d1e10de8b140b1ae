"""The relational database: engines from a URL, audited sessions, Alembic migrations, `plantbus db`.

SQLite (a file under the state folder) by default, PostgreSQL by URL. Every SQLite connection enforces
foreign keys and runs real transactions (SQLAlchemy emits BEGIN itself, so DDL is transactional and a
failed migration leaves nothing half done). Sessions from `Database.session(actor)` write an audit-log
row with the row before and after for every insert, update and delete of an audited entity.
Migrations live in `hub/migrations` and are configured here, in code: no alembic.ini is needed.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import Connection, Engine, create_engine, event, insert, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import InstanceState
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from hub.errors import ConfigError, PlantbusError
from hub.models import AuditLog, EnumText, PlantbusModel, User, metadata, utcnow

if TYPE_CHECKING:
    from alembic.config import Config

    from hub.config import PlantbusConfig

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Not the default `alembic_version`: plugins or other applications sharing the database may keep their own.
VERSION_TABLE = "plantbus_alembic_version"
SQLITE_FILE = "plantbus.sqlite"
_BACKENDS = ("sqlite", "postgresql")


class DatabaseError(PlantbusError):
    """The database cannot be reached, or its schema is not the one this Plantbus needs."""


# ----------------------------------------------------------------------------------------- URLs and engines


def parse_database_url(url: str | URL) -> URL:
    """Parse and check a SQLAlchemy URL; plain `postgresql://` means the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database URL {url!r} is not a URL; write sqlite:///path/to/plantbus.sqlite "
            "or postgresql+psycopg://user@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise ConfigError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: {backend!r} is not supported; "
            "use sqlite:/// or postgresql+psycopg://"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg2, SQLAlchemy's default, is not installed
    return parsed


def database_url(config: PlantbusConfig, override: str | None = None) -> URL:
    """The database URL: `override`, else `database.url` of the configuration, else `<state_dir>/plantbus.sqlite`.

    The password comes from the environment variable `database.password_env` names, when it is set.
    """
    raw = override or config.database.url
    if raw is None:
        return URL.create("sqlite", database=str(config.state_dir / SQLITE_FILE))
    url = parse_database_url(raw)
    if config.database.password_env:
        password = os.environ.get(config.database.password_env)
        if password is None:
            raise ConfigError(
                f"database.password_env: environment variable {config.database.password_env} is not set; "
                "export it or remove password_env"
            )
        url = url.set(password=password)
    return url


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling skips BEGIN before DDL and SAVEPOINTs; turn it off and let
    # SQLAlchemy emit BEGIN (the "begin" listener), so every transaction, DDL included, is atomic.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # SQLite forgets this per connection, and leaves it off unless asked.
    cursor.execute("PRAGMA foreign_keys=ON")
    # Readers (the console) do not block the writer (the hub), nor the other way round.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    # Through the driver: SQLAlchemy would open a transaction first, and inside one SQLite ignores the pragma.
    driver_connection: Any = connection.connection.driver_connection
    driver_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for a SQLite or PostgreSQL URL; SQLite files get their folder created, foreign keys on."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        kwargs: dict[str, Any] = {}
        if database in ("", ":memory:") or database.startswith("file:"):
            # one shared connection, or every session would see its own empty database
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, echo=echo, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # fail in seconds, not the minutes a TCP timeout takes, when the server is down
    return create_engine(parsed, echo=echo, pool_pre_ping=True, connect_args={"connect_timeout": 10})


# ----------------------------------------------------------------------------------------- audit


class AuditedSession(Session):
    """A sqlmodel Session that writes an AuditLog row for each change to an audited entity.

    `info["actor"]` is `(user_id, username)` of whoever makes the changes. Bulk statements
    (`session.execute(update(...))`) bypass the ORM and so the audit log: use objects for audited data.
    """


def _audited(obj: object) -> bool:
    return isinstance(obj, PlantbusModel) and type(obj).__audit__


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return EnumText.stored(value)
    if isinstance(value, dt.datetime) and value.utcoffset() is not None:
        return value.astimezone(dt.UTC).isoformat()  # one zone in the log, whatever the caller wrote
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _loaded_columns(obj: object) -> dict[str, Any]:
    state: InstanceState[Any] = inspect(obj)
    return {a.key: state.dict[a.key] for a in state.mapper.column_attrs if a.key in state.dict}


def _row_in_database(session: Session, obj: object) -> dict[str, Any]:
    """The row as the database holds it now: the truth about "before", even for attributes never loaded."""
    state: InstanceState[Any] = inspect(obj)
    mapper = state.mapper
    table = mapper.local_table
    identity = state.identity
    if identity is None:
        return _loaded_columns(obj)
    condition = [column == value for column, value in zip(mapper.primary_key, identity, strict=True)]
    row = session.connection().execute(select(table).where(*condition)).mappings().first()
    if row is None:
        return _loaded_columns(obj)
    return {a.key: row[a.columns[0].key] for a in mapper.column_attrs if a.columns[0].key in row}


@event.listens_for(AuditedSession, "before_flush")
def _capture_before(session: Session, _flush_context: Any, _instances: Any) -> None:
    before: dict[InstanceState[Any], dict[str, Any]] = session.info.setdefault("_audit_before", {})
    for obj in [*session.dirty, *session.deleted]:
        state = inspect(obj)
        if not _audited(obj) or state in before:
            continue
        if obj in session.dirty and not session.is_modified(obj, include_collections=False):
            continue
        before[state] = _row_in_database(session, obj)


def _redact(cls: type[PlantbusModel], before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    for key in cls.__audit_redact__:
        changed = before is not None and after is not None and before.get(key) != after.get(key)
        if before is not None and before.get(key) is not None:
            before[key] = "<redacted>"
        if after is not None and after.get(key) is not None:
            after[key] = "<redacted, changed>" if changed else "<redacted>"


@event.listens_for(AuditedSession, "after_flush")
def _write_audit(session: Session, _flush_context: Any) -> None:
    # new/dirty/deleted and attribute state still describe this flush here; the rows go in through
    # the connection because adding objects to the session is not allowed while it flushes.
    before_images: dict[InstanceState[Any], dict[str, Any]] = session.info.pop("_audit_before", {})
    user_id, username = session.info.get("actor", (None, None))
    at = utcnow()
    rows: list[dict[str, Any]] = []

    def add(action: str, obj: object, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        cls = type(obj)
        assert issubclass(cls, PlantbusModel)
        before_json = None if before is None else _jsonable(before)
        after_json = None if after is None else _jsonable(after)
        _redact(cls, before_json, after_json)
        identity = inspect(obj).identity or inspect(obj).mapper.primary_key_from_instance(obj)
        rows.append(
            {
                "at": at,
                "user_id": user_id,
                "username": username,
                "action": action,
                "entity": cls.__tablename__,
                "entity_id": ",".join(str(v) for v in identity),
                "before": before_json,
                "after": after_json,
            }
        )

    for obj in session.new:
        if _audited(obj):
            add("create", obj, None, _loaded_columns(obj))
    for obj in session.dirty:
        state = inspect(obj)
        if _audited(obj) and state in before_images:
            before = before_images[state]
            after = {**before, **_loaded_columns(obj)}
            if after != before:
                add("update", obj, before, after)
    for obj in session.deleted:
        if _audited(obj):
            add("delete", obj, before_images.get(inspect(obj)) or _loaded_columns(obj), None)
    if rows:
        session.connection().execute(insert(AuditLog.__table__), rows)  # type: ignore[arg-type]


@event.listens_for(AuditedSession, "after_rollback")
def _forget_before(session: Session) -> None:
    session.info.pop("_audit_before", None)


def _actor(actor: User | str | None) -> tuple[int | None, str | None]:
    if isinstance(actor, User):
        return actor.id, actor.username
    return None, actor


# ----------------------------------------------------------------------------------------- the database


class Database:
    """One database: its engine, audited sessions, and its migrations. Close it when done."""

    def __init__(self, url: str | URL, *, echo: bool = False) -> None:
        self.url = parse_database_url(url)
        self.engine = make_engine(self.url, echo=echo)

    @classmethod
    def from_config(cls, config: PlantbusConfig, url: str | None = None) -> Database:
        """The database a hub configuration names (or `url`, which wins)."""
        return cls(database_url(config, url))

    @property
    def display_url(self) -> str:
        """The URL with its password hidden, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.url.get_backend_name()

    @contextmanager
    def session(self, actor: User | str | None = None) -> Iterator[AuditedSession]:
        """A session that commits when the block ends and rolls back on an exception.

        `actor` (a User, or a name such as "plantbus-cli") is recorded in the audit log. Objects stay
        readable after the block (they are not expired at commit), holding the values they had then.
        """
        with AuditedSession(self.engine, info={"actor": _actor(actor)}, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def _connect_error(self, exc: OperationalError) -> DatabaseError:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return DatabaseError(
            f"cannot use the database {self.display_url}: {reason} — check the URL, "
            "that the server is running and that the user may connect"
        )

    def _alembic(self, action: Callable[[Config], None]) -> None:
        from alembic import command  # noqa: F401  (imported here: alembic is only needed to migrate)

        with self.engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # A batch migration copies a table, drops the original and renames the copy; with
                # foreign keys on, the drop would cascade or fail. Checked again below instead.
                _sqlite_foreign_keys(connection, on=False)
            try:
                action(alembic_config(connection))
                connection.commit()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    connection.rollback()
                    if broken:
                        raise DatabaseError(
                            f"after the migration {len(broken)} row(s) break a foreign key "
                            f"(first: table {broken[0][0]}, row {broken[0][1]}); fix the data or the migration"
                        )
            finally:
                if sqlite:
                    connection.rollback()
                    _sqlite_foreign_keys(connection, on=True)

    def _migrate(self, action: Callable[[Config], None]) -> None:
        from alembic.util import CommandError

        try:
            self._alembic(action)
        except OperationalError as exc:
            raise self._connect_error(exc) from exc
        except CommandError as exc:
            raise DatabaseError(
                f"cannot migrate {self.display_url}: {exc}; `plantbus db current` shows the database's revision, "
                "hub/migrations/versions the ones this Plantbus knows"
            ) from exc

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema up to `revision` (default: the newest); a no-op when already there."""
        from alembic import command

        self._migrate(lambda cfg: command.upgrade(cfg, revision))

    def downgrade(self, revision: str) -> None:
        """Migrate the schema down to `revision` (`base` removes every Plantbus table, `-1` one step)."""
        from alembic import command

        self._migrate(lambda cfg: command.downgrade(cfg, revision))

    def current_revision(self) -> str | None:
        """The revision the database is at; None for a database Plantbus never migrated."""
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
                return context.get_current_revision()
        except OperationalError as exc:
            raise self._connect_error(exc) from exc

    def require_current_schema(self) -> None:
        """Raise DatabaseError unless the schema is at the newest revision."""
        current, head = self.current_revision(), head_revision()
        if current != head:
            raise DatabaseError(
                f"the database {self.display_url} is at revision {current or '(empty)'}, this Plantbus needs "
                f"{head}; run `plantbus db upgrade`"
            )

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------- migrations


def _include_name(name: str | None, type_: str, _parent: Any) -> bool:
    # Tables Plantbus does not model (the SQL historian's, a plugin's) are none of these migrations' business.
    if type_ == "table":
        return name in metadata.tables
    return True


def migration_options() -> dict[str, Any]:
    """The options env.py gives Alembic; the schema test compares with exactly these."""
    return {
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        "render_as_batch": True,  # SQLite alters tables by copying them: batch mode writes that for us
        "compare_type": True,
        # our SQLite engines emit BEGIN themselves, so SQLite gets one atomic transaction like PostgreSQL
        "transactional_ddl": True,
        "include_name": _include_name,
        # CHECK constraints are compared by name (their SQL text differs between the databases)
        "autogenerate_plugins": ["alembic.autogenerate.*", "alembic.ext.checkconstraint_byname"],
    }


def alembic_config(connection: Any = None) -> Config:
    """An Alembic Config built in code; env.py migrates on `connection` (Database prepares it)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this Plantbus ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "hub/migrations/versions has no revision"
    return head


# ----------------------------------------------------------------------------------------- command line


def _fail(exc: PlantbusError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _open(config_file: Path | None, url: str | None) -> Database:
    from hub.config import load_config

    return Database.from_config(load_config(config_file), url)


_config_option = click.option(
    "-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML configuration"
)
_url_option = click.option(
    "--url",
    envvar="PLANTBUS_DATABASE_URL",
    help="database URL; overrides database.url of the file (default: <state_dir>/plantbus.sqlite)",
)


@click.group("db")
def db() -> None:
    """The relational database: schema migrations and reference data."""


@db.command("upgrade")
@_config_option
@_url_option
@click.option("--revision", default="head", show_default=True, help="migrate up to this revision")
def db_upgrade(config_file: Path | None, url: str | None, revision: str) -> None:
    """Create or migrate the schema; running it again changes nothing."""
    try:
        with _open(config_file, url) as database:
            before = database.current_revision()
            database.upgrade(revision)
            after = database.current_revision()
    except PlantbusError as exc:
        _fail(exc)
        return
    if before == after:
        click.echo(f"{database.display_url}: already at {after}")
    else:
        click.echo(f"{database.display_url}: upgraded {before or '(empty)'} -> {after}")


@db.command("downgrade", context_settings={"ignore_unknown_options": True})  # so that `-1` is a revision
@_config_option
@_url_option
@click.argument("revision")
def db_downgrade(config_file: Path | None, url: str | None, revision: str) -> None:
    """Migrate the schema down to REVISION (`-1`: one step; `base`: drop every Plantbus table)."""
    try:
        with _open(config_file, url) as database:
            before = database.current_revision()
            database.downgrade(revision)
            after = database.current_revision()
    except PlantbusError as exc:
        _fail(exc)
        return
    click.echo(f"{database.display_url}: downgraded {before or '(empty)'} -> {after or '(empty)'}")


@db.command("current")
@_config_option
@_url_option
def db_current(config_file: Path | None, url: str | None) -> None:
    """Print the schema revision of the database and whether it is the newest; exit 1 when it is not."""
    try:
        with _open(config_file, url) as database:
            current = database.current_revision()
    except PlantbusError as exc:
        _fail(exc)
        return
    head = head_revision()
    status = "up to date" if current == head else f"needs upgrade to {head}"
    click.echo(f"{database.display_url}: {current or '(empty)'} ({status})")
    if current != head:
        sys.exit(1)


@db.command("seed-reference-plant")
@_config_option
@_url_option
def db_seed_reference_plant(config_file: Path | None, url: str | None) -> None:
    """Load PLANT.md's lines, machines, SKUs, shifts, crews and stop reasons; existing rows are left as they are."""
    from hub.reference_plant import seed_reference_plant

    try:
        with _open(config_file, url) as database:
            database.require_current_schema()
            with database.session(actor="plantbus db seed-reference-plant") as session:
                report = seed_reference_plant(session)
    except PlantbusError as exc:
        _fail(exc)
        return
    click.echo(f"{database.display_url}: {report.summary()}")
