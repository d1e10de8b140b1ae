"""The hub's configuration: one YAML file, validated once at load by pydantic (extra="forbid").

Errors name the path of the offending key and say how to fix it. Secrets never live in the
file: `password_env` names an environment variable that holds the broker password.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from hub.errors import ConfigError, TopicError
from hub.mqtt import BrokerUrl
from hub.sparkplug.topic import validate_id


def _sparkplug_id(kind: str, value: str) -> str:
    try:
        return validate_id(kind, value)
    except TopicError as exc:
        raise ValueError(str(exc)) from None


def _group_id(value: str) -> str:
    return _sparkplug_id("group id", value)


GroupId = Annotated[str, AfterValidator(_group_id)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(Strict):
    """Where the MQTT broker is and how to log in."""

    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port")
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the password")
    client_id: str | None = Field(None, description="MQTT client id; defaults to plantbus-<host_id>")

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        try:
            BrokerUrl.parse(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    def resolve(self) -> BrokerUrl:
        """The broker address with the password read from the environment."""
        parsed = BrokerUrl.parse(self.url)
        password = parsed.password
        if self.password_env:
            password = os.environ.get(self.password_env)
            if password is None:
                raise ConfigError(
                    f"broker.password_env: environment variable {self.password_env} is not set; "
                    "export it or remove password_env"
                )
        return BrokerUrl(parsed.host, parsed.port, self.username or parsed.username, password, parsed.tls)


class HostConfig(Strict):
    """The Sparkplug primary host application."""

    host_id: str = Field("plantbus", description="Sparkplug host id published in spBv1.0/STATE/<host_id>")
    # validated per item, so an error names its index (host.groups[2])
    groups: list[GroupId] = Field(default_factory=list, description="groups to host; empty means every group")
    reorder_timeout_ms: int = Field(2000, ge=0, le=60_000, description="how long to wait for a missing seq")
    rebirth_debounce_ms: int = Field(5000, ge=0, le=600_000, description="minimum time between rebirth requests to one node")
    accept_legacy_state: bool = Field(False, description="also publish Sparkplug 2.2 STATE/<host_id> for old edge nodes")
    diagnostics_interval_s: float = Field(5.0, gt=0, description="how often the host publishes its own diagnostics")
    command_names: bool = Field(
        False,
        description="also send metric names and datatypes in NCMD/DCMD, for edge nodes that cannot resolve aliases "
        "(the specification says alias only)",
    )

    @field_validator("host_id")
    @classmethod
    def _host_id_valid(cls, value: str) -> str:
        return _sparkplug_id("host id", value)


class UnsMapping(Strict):
    """Maps Sparkplug addresses onto an ISA-95 path. Patterns are shell globs; the first match wins.

    `path` is a template with {group}, {edge_node} and {device}; the metric name is appended
    (its `/` levels kept). A node metric has no device: `{device}` and the slash before it vanish.
    """

    group: str = "*"
    edge_node: str = "*"
    device: str = "*"
    path: str

    @field_validator("path")
    @classmethod
    def _path_template(cls, value: str) -> str:
        from hub.uns_paths import check_template

        check_template(value)
        return value


class UnsConfig(Strict):
    """The plain-JSON unified-namespace mirror."""

    enabled: bool = True
    prefix: str = Field("uns", description="root of the default mapping uns/<group>/<edge_node>/<device>/<metric>")
    mappings: list[UnsMapping] = Field(default_factory=list)
    retain: bool = True
    qos: int = Field(0, ge=0, le=1)
    status_topic: str = Field("plantbus/status", description="where the hub publishes its diagnostics as JSON")

    @field_validator("prefix")
    @classmethod
    def _prefix_valid(cls, value: str) -> str:
        from hub.uns_paths import check_template

        check_template(value)
        return value


class DatabaseConfig(Strict):
    """The relational database (users, plans, downtime, audit log): an SQLite file by default, PostgreSQL in production."""

    url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://plantbus@db:5432/plantbus; "
        "empty: the SQLite file <state_dir>/plantbus.sqlite",
    )
    password_env: str | None = Field(None, description="environment variable holding the database password")

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from hub.db import parse_database_url  # SQLAlchemy is imported only when a URL is configured

        try:
            parse_database_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class BusConfig(Strict):
    """The in-process bus that hands samples and events to plugins, one bounded queue per plugin hook."""

    queue_batches: int = Field(1000, ge=1, description="batches a plugin's memory queue holds before spilling to disk")
    queue_samples: int = Field(100_000, ge=1, description="samples (or events) a plugin's memory queue holds")
    retry_initial_s: float = Field(0.5, gt=0, description="first retry delay after a plugin failed on a batch")
    retry_max_s: float = Field(30.0, gt=0, description="the retry delay doubles up to this")
    max_attempts: int = Field(5, ge=1, description="failures on one batch before it goes to the dead-letter file")
    drain_timeout_s: float = Field(10.0, ge=0, description="on shutdown, how long plugins may take to catch up; "
                                   "what is left stays on disk for the next start")


class DerivedConfig(Strict):
    """The hub's own Sparkplug edge node that carries values plugins derive (one device per plugin)."""

    group: GroupId = Field("Plantbus", description="Sparkplug group id of the derived-values edge node")
    edge_node: str = Field("analytics", description="its edge node id")

    @field_validator("edge_node")
    @classmethod
    def _edge_node_valid(cls, value: str) -> str:
        return _sparkplug_id("edge node id", value)


if TYPE_CHECKING:
    from edge_cv.config import CvConfig

    CvSection = CvConfig | None
else:
    # The cv models pull in OpenCV (zones, detectors); they are imported when a file has a `cv:` section,
    # so the hub and every CLI command without cameras start without the vision stack.
    CvSection = Any


def _cv_section(value: Any, info: ValidationInfo) -> Any:
    if value is None:
        return None
    from edge_cv.config import CvConfig

    if isinstance(value, CvConfig):
        return value
    # A ValidationError raised here keeps its locations, so errors read cv.nodes.<node>.cameras.<camera>....
    # The context carries the YAML's folder, against which relative model paths are resolved.
    return CvConfig.model_validate(value, context=info.context)


def _plugin_sections(value: Any) -> Any:
    # An empty YAML section (`example:` with nothing under it) reads as None: that is "all defaults".
    if not isinstance(value, dict):
        return value
    return {name: {} if section is None else section for name, section in value.items()}


class PlantbusConfig(Strict):
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    host: HostConfig = Field(default_factory=HostConfig)
    uns: UnsConfig = Field(default_factory=UnsConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    state_dir: Path = Field(Path("var"), description="where the hub keeps state (bdSeq, outboxes)")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    plugins: Annotated[dict[str, dict[str, Any]], BeforeValidator(_plugin_sections)] = Field(
        default_factory=dict,
        description="one section per plugin, validated by the model the plugin registers; "
        "`enabled: false` turns a plugin off",
    )
    disabled_plugins: list[str] = Field(default_factory=list, description="plugins not to load, by name")
    connectors: Annotated[dict[str, dict[str, Any]], BeforeValidator(_plugin_sections)] = Field(
        default_factory=dict,
        description="one section per equipment connector, `type` naming a registered connector type "
        "(opcua, modbus, ...); validated by that type's model when the hub starts",
    )
    bus: BusConfig = Field(default_factory=BusConfig)
    derived: DerivedConfig = Field(default_factory=DerivedConfig)
    cv: Annotated[CvSection, BeforeValidator(_cv_section)] = Field(
        None, description="edge computer vision: cv edge nodes, their cameras, zones and rules (edge_cv/config.py)"
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper


def _format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _explain(error: dict[str, Any]) -> str:
    where = _format_location(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key; remove it or check its spelling"
    if kind == "missing":
        return f"{where}: required; add it"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    got = error.get("input")
    suffix = f" (got {got!r})" if not isinstance(got, (dict, list)) and got is not None else ""
    return f"{where}: {message}{suffix}"


def explain_errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    """One line per problem, each naming its path (with `prefix` in front, e.g. ("plugins", "example"))."""
    return [_explain({**e, "loc": (*prefix, *e["loc"])}) for e in exc.errors()]


def parse_config(
    data: dict[str, Any] | None, source: str = "configuration", base_dir: str | Path | None = None
) -> PlantbusConfig:
    """Validate a mapping; raise ConfigError listing every problem with its path. Relative paths in sections
    that name files (cv models) are looked up in `base_dir` first (the YAML's folder)."""
    try:
        return PlantbusConfig.model_validate(data or {}, context={"base_dir": base_dir} if base_dir else None)
    except ValidationError as exc:
        lines = [_explain(e) for e in exc.errors()]
        raise ConfigError(f"{source} is not valid:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path | None) -> PlantbusConfig:
    """Read and validate a YAML file; with no path, the defaults."""
    if path is None:
        return PlantbusConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # The problem mark of an unclosed bracket or quote is the end of the file; the context
        # mark is where the unclosed thing started, which is what the operator has to fix.
        context = getattr(exc, "context", None)
        start = getattr(exc, "context_mark", None)
        hint = f" ({context} at line {start.line + 1}, column {start.column + 1})" if context and start else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}{hint}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (broker, host, uns, ...)")
    return parse_config(data, str(path), base_dir=path.parent)
