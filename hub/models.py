"""The relational model of the factory: master data, plans, actuals, downtime, quality, alarms, audit.

sqlmodel entities on a metadata of their own (`metadata`), so tables that other parts of Plantbus or
plugins declare with sqlmodel never leak into these migrations. Conventions, the same on SQLite and
PostgreSQL:

- every timestamp is timezone-aware and stored in UTC (sqlmodel's `UTCDateTime`: a naive datetime is
  refused at bind time; values come back in UTC);
- enums are stored as their string values in VARCHAR columns with a named CHECK constraint, never as
  native PostgreSQL enum types (adding a value is then an ordinary migration on both databases);
- constraint and index names follow `NAMING_CONVENTION`, so migrations can name what they alter;
- shop-floor vocabularies that a plant configures (equipment kinds, operations, CV event kinds) are free
  strings, not enums: nothing in the code may depend on the reference plant's names.

The table list is `ENTITIES`; `hub/migrations` holds the migrations that build exactly this schema.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import Enum, StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, CheckConstraint, Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from hub.errors import PlantbusError
from hub.events import Severity

NAMING_CONVENTION: dict[str, str] = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class EnumText(TypeDecorator[Enum]):
    """An enum stored as its string value in a VARCHAR; IntEnums are stored by their lower-case name."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[Enum], length: int = 32) -> None:
        self.enum = enum
        super().__init__(length=length)

    @staticmethod
    def stored(member: Enum) -> str:
        """The string a member is stored as."""
        return member.value if isinstance(member.value, str) else member.name.lower()

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, self.enum):
            return self.stored(value)
        for member in self.enum:
            if value == self.stored(member):
                return value
        allowed = ", ".join(self.stored(m) for m in self.enum)
        raise ValueError(f"{value!r} is not a {self.enum.__name__}; use one of {allowed}")

    def process_result_value(self, value: Any, dialect: Any) -> Enum | None:
        if value is None:
            return None
        for member in self.enum:
            if value == self.stored(member):
                return member
        raise ValueError(f"the database holds {value!r}, which is not a {self.enum.__name__}")


def one_of(column: str, enum: type[Enum]) -> CheckConstraint:
    """A named CHECK constraint that keeps `column` within the enum's stored values (NULL allowed)."""
    values = ", ".join(f"'{EnumText.stored(m)}'" for m in enum)
    return CheckConstraint(f"{column} IN ({values})", name=column)


def ends_after_start(start: str, end: str) -> CheckConstraint:
    """A named CHECK that an interval's end, once known, is not before its start."""
    return CheckConstraint(f"{end} IS NULL OR {end} >= {start}", name="ends_after_start")


def not_negative(*columns: str) -> list[CheckConstraint]:
    """Named CHECKs that counters are zero or more."""
    return [CheckConstraint(f"{c} >= 0", name=f"{c}_not_negative") for c in columns]


class PlantbusModel(SQLModel, registry=registry(metadata=metadata)):
    """Base of every Plantbus table; `__audit__` says whether changes go to the audit log."""

    # Machine-written streams (CV events, checkweigher results, alarm transitions) have their own
    # history; auditing them would bury the human changes the audit log exists for.
    __audit__: ClassVar[bool] = True
    # Columns whose values never reach the audit log (it is readable by more people than the table).
    __audit_redact__: ClassVar[frozenset[str]] = frozenset()


# ----------------------------------------------------------------------------------------- enums


class Role(StrEnum):
    """What a user may do: admin > engineer > operator > viewer."""

    ADMIN = "admin"
    ENGINEER = "engineer"
    OPERATOR = "operator"
    VIEWER = "viewer"


class OeeLoss(StrEnum):
    """The OEE factor an unplanned stop counts against."""

    AVAILABILITY = "availability"
    PERFORMANCE = "performance"
    QUALITY = "quality"


class QualityCheckKind(StrEnum):
    CHECKWEIGHER = "checkweigher"
    VISUAL = "visual"
    MARKING = "marking"


class AlarmState(StrEnum):
    """The ISA-18.2 alarm states (figure 5 of the standard)."""

    NORMAL = "normal"
    UNACKNOWLEDGED = "unacknowledged"  # active, not yet acknowledged
    ACKNOWLEDGED = "acknowledged"  # active, acknowledged
    RTN_UNACKNOWLEDGED = "rtn_unacknowledged"  # returned to normal before anyone acknowledged it
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"  # suppressed by design (e.g. the line is stopped)
    OUT_OF_SERVICE = "out_of_service"


# ----------------------------------------------------------------------------------------- people


class User(PlantbusModel, table=True):
    """A person who signs in to the console or the API."""

    __tablename__ = "users"
    __table_args__ = (one_of("role", Role),)
    __audit_redact__ = frozenset({"password_hash"})

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    display_name: str = Field(max_length=200)
    role: Role = Field(default=Role.VIEWER, sa_type=EnumText(Role))
    # argon2 hashes are ~100 characters; room for a stronger setting later
    password_hash: str | None = Field(default=None, max_length=255)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)


# ----------------------------------------------------------------------------------------- plant structure


class Line(PlantbusModel, table=True):
    """A production line (`oatbar`, `salad`)."""

    __tablename__ = "lines"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    uns_path: str | None = Field(default=None, max_length=512, unique=True)
    description: str | None = Field(default=None, sa_type=Text)
    active: bool = True


class Zone(PlantbusModel, table=True):
    """A production zone: an area of the floor that cameras watch and people work in."""

    __tablename__ = "zones"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    line_id: int | None = Field(default=None, foreign_key="lines.id", index=True)
    kind: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, sa_type=Text)


class Camera(PlantbusModel, table=True):
    """A camera, the zone it watches and the line it belongs to."""

    __tablename__ = "cameras"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    zone_id: int | None = Field(default=None, foreign_key="zones.id", index=True)
    line_id: int | None = Field(default=None, foreign_key="lines.id", index=True)
    stream_url: str = Field(max_length=1024)
    active: bool = True


class Equipment(PlantbusModel, table=True):
    """A machine on a line, with its Sparkplug address and UNS path."""

    __tablename__ = "equipment"
    __table_args__ = (
        UniqueConstraint("line_id", "code"),
        # one Sparkplug device is one machine; the name is spelt out because the generated one is too long
        UniqueConstraint(
            "sparkplug_group", "sparkplug_edge_node", "sparkplug_device", name="uq_equipment_sparkplug_address"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    line_id: int = Field(foreign_key="lines.id", index=True)
    code: str = Field(max_length=64)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=64)  # filler, checkweigher, sleever, ...: a plant's own vocabulary
    sparkplug_group: str | None = Field(default=None, max_length=128)
    sparkplug_edge_node: str | None = Field(default=None, max_length=128)
    sparkplug_device: str | None = Field(default=None, max_length=128)  # None: the edge node itself
    uns_path: str | None = Field(default=None, max_length=512, unique=True)
    active: bool = True


class Product(PlantbusModel, table=True):
    """A SKU with what OEE and the three packers' rules need."""

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("nominal_weight_g > 0", name="nominal_weight_positive"),
        CheckConstraint("tne_g >= 0", name="tne_not_negative"),
        CheckConstraint("ideal_rate_per_min > 0", name="ideal_rate_positive"),
        CheckConstraint("shelf_life_days > 0", name="shelf_life_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    sku: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    line_id: int = Field(foreign_key="lines.id", index=True)
    nominal_weight_g: float
    tne_g: float  # tolerable negative error (Directive 76/211/EEC)
    ideal_rate_per_min: float
    shelf_life_days: int
    gtin: str | None = Field(default=None, max_length=14, unique=True)
    active: bool = True

    @property
    def ideal_cycle_time_s(self) -> float:
        """Seconds per pack at the ideal rate."""
        return 60.0 / self.ideal_rate_per_min


# ----------------------------------------------------------------------------------------- shifts


class ShiftDefinition(PlantbusModel, table=True):
    """A shift pattern (A 06:00–14:00) in plant local time; a shift that ends before it starts crosses midnight."""

    __tablename__ = "shift_definitions"
    __table_args__ = (
        CheckConstraint("starts_at <> ends_at", name="not_empty"),
        CheckConstraint("break_minutes >= 0", name="break_minutes_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=16, unique=True)
    name: str = Field(max_length=200)
    starts_at: time
    ends_at: time
    break_minutes: int = 0  # planned breaks within the shift
    active: bool = True

    def bounds(self, day: date, tz: tzinfo) -> tuple[datetime, datetime]:
        """Start and end in UTC of this shift on production date `day` (the day it starts) in zone `tz`."""
        start = datetime.combine(day, self.starts_at, tzinfo=tz)
        end_day = day + timedelta(days=1) if self.ends_at <= self.starts_at else day
        end = datetime.combine(end_day, self.ends_at, tzinfo=tz)
        return start.astimezone(UTC), end.astimezone(UTC)

    def instance(self, day: date, tz: tzinfo, crew: str | None = None) -> ShiftInstance:
        """The concrete shift on production date `day` in the plant's time zone `tz` (not yet added to a session)."""
        if self.id is None:
            raise PlantbusError(f"shift {self.code} has no id yet; add it to a session and flush first")
        starts_at, ends_at = self.bounds(day, tz)
        return ShiftInstance(
            shift_definition_id=self.id, production_date=day, starts_at=starts_at, ends_at=ends_at, crew=crew
        )


class ShiftCrew(PlantbusModel, table=True):
    """How many people of a role a line needs on a shift (no row: the line does not run that shift)."""

    __tablename__ = "shift_crews"
    __table_args__ = (
        UniqueConstraint("shift_definition_id", "line_id", "role"),
        *not_negative("headcount"),
    )

    id: int | None = Field(default=None, primary_key=True)
    shift_definition_id: int = Field(foreign_key="shift_definitions.id", ondelete="CASCADE", index=True)
    line_id: int = Field(foreign_key="lines.id", ondelete="CASCADE", index=True)
    role: str = Field(max_length=64)  # operator, sanitation, ...
    headcount: int


class ShiftInstance(PlantbusModel, table=True):
    """A shift actually worked: definition + production date, with its UTC bounds and crew."""

    __tablename__ = "shift_instances"
    __table_args__ = (
        UniqueConstraint("shift_definition_id", "production_date"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
    )

    id: int | None = Field(default=None, primary_key=True)
    shift_definition_id: int = Field(foreign_key="shift_definitions.id", index=True)
    production_date: date = Field(index=True)
    starts_at: datetime = Field(index=True)
    ends_at: datetime
    crew: str | None = Field(default=None, max_length=64)  # the crew (brigade) on duty


# ----------------------------------------------------------------------------------------- production


class ProductionPlan(PlantbusModel, table=True):
    """How much of a product a line should make in a shift: one row per date + shift + line + product."""

    __tablename__ = "production_plans"
    __table_args__ = (
        UniqueConstraint(
            "production_date", "shift_definition_id", "line_id", "product_id", name="uq_production_plans_slot"
        ),
        Index(None, "line_id", "production_date"),
        *not_negative("planned_quantity"),
    )

    id: int | None = Field(default=None, primary_key=True)
    production_date: date
    shift_definition_id: int = Field(foreign_key="shift_definitions.id", index=True)
    line_id: int = Field(foreign_key="lines.id")
    product_id: int = Field(foreign_key="products.id", index=True)
    planned_quantity: int
    note: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, sa_column_kwargs={"onupdate": utcnow})


class ProductionActual(PlantbusModel, table=True):
    """What a line made of a product in a shift: packed, marked and scrapped packs."""

    __tablename__ = "production_actuals"
    __table_args__ = (
        UniqueConstraint("shift_instance_id", "line_id", "product_id"),
        *not_negative("packed", "marked", "scrap"),
    )

    id: int | None = Field(default=None, primary_key=True)
    plan_id: int | None = Field(default=None, foreign_key="production_plans.id", ondelete="SET NULL", index=True)
    shift_instance_id: int = Field(foreign_key="shift_instances.id", index=True)
    line_id: int = Field(foreign_key="lines.id", index=True)
    product_id: int = Field(foreign_key="products.id", index=True)
    packed: int = 0
    marked: int = 0
    scrap: int = 0
    updated_at: datetime = Field(default_factory=utcnow, sa_column_kwargs={"onupdate": utcnow})


# ----------------------------------------------------------------------------------------- stops


class StopReason(PlantbusModel, table=True):
    """Why a line stopped: a tree of codes; planned stops count against no OEE factor, others against one."""

    __tablename__ = "stop_reasons"
    __table_args__ = (
        one_of("loss_category", OeeLoss),
        CheckConstraint(
            "(planned AND loss_category IS NULL) OR (NOT planned AND loss_category IS NOT NULL)",
            name="planned_xor_loss",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    parent_id: int | None = Field(default=None, foreign_key="stop_reasons.id", index=True)
    planned: bool = False
    loss_category: OeeLoss | None = Field(default=None, sa_type=EnumText(OeeLoss))
    description: str | None = Field(default=None, sa_type=Text)
    active: bool = True


class EquipmentDowntime(PlantbusModel, table=True):
    """A stop of a line or machine; reclassifying it keeps the first reason in `original_reason_id`."""

    __tablename__ = "equipment_downtime"
    __table_args__ = (
        ends_after_start("started_at", "ended_at"),
        Index(None, "line_id", "started_at"),
        Index(None, "equipment_id", "started_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    line_id: int = Field(foreign_key="lines.id")
    equipment_id: int | None = Field(default=None, foreign_key="equipment.id")
    shift_instance_id: int | None = Field(default=None, foreign_key="shift_instances.id", index=True)
    started_at: datetime
    ended_at: datetime | None = None  # None while the stop lasts
    reason_id: int | None = Field(default=None, foreign_key="stop_reasons.id", index=True)
    # Copied from the reason when it is set, so that reconfiguring a reason later does not rewrite
    # the planned production time of shifts already reported.
    planned: bool = False
    original_reason_id: int | None = Field(default=None, foreign_key="stop_reasons.id")
    reclassified_at: datetime | None = None
    reclassified_by_id: int | None = Field(default=None, foreign_key="users.id")
    comment: str | None = Field(default=None, sa_type=Text)

    def classify(self, reason: StopReason, *, by: User | None = None, at: datetime | None = None) -> None:
        """Give the stop a reason; changing one it already has is a reclassification that keeps the first."""
        if reason.id is None:
            raise PlantbusError(f"stop reason {reason.code} has no id yet; add it to a session and flush first")
        if self.reason_id is not None and self.reason_id != reason.id:
            if self.original_reason_id is None:
                self.original_reason_id = self.reason_id
            self.reclassified_at = at or utcnow()
            self.reclassified_by_id = by.id if by is not None else None
        self.reason_id = reason.id
        self.planned = reason.planned

    @property
    def duration(self) -> timedelta | None:
        """How long the stop lasted; None while it lasts."""
        return None if self.ended_at is None else self.ended_at - self.started_at


# ----------------------------------------------------------------------------------------- people at work


class PersonnelOperation(PlantbusModel, table=True):
    """Who did what operation where, from when to when (sanitation, changeover, line work)."""

    __tablename__ = "personnel_operations"
    __table_args__ = (
        ends_after_start("started_at", "ended_at"),
        Index(None, "zone_id", "started_at"),
        Index(None, "line_id", "started_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    person: str = Field(max_length=128)  # name or badge: not every worker is a console user
    user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    operation: str = Field(max_length=64)
    zone_id: int | None = Field(default=None, foreign_key="zones.id")
    line_id: int | None = Field(default=None, foreign_key="lines.id")
    shift_instance_id: int | None = Field(default=None, foreign_key="shift_instances.id", index=True)
    started_at: datetime
    ended_at: datetime | None = None
    note: str | None = Field(default=None, sa_type=Text)


# ----------------------------------------------------------------------------------------- machine-written records


class CvEvent(PlantbusModel, table=True):
    """Something a camera saw (a missing hairnet, a spill, an unreadable code), with a snapshot reference."""

    __tablename__ = "cv_events"
    __table_args__ = (
        one_of("severity", Severity),
        CheckConstraint("confidence IS NULL OR (confidence >= 0 AND confidence <= 1)", name="confidence_range"),
        Index(None, "camera_id", "occurred_at"),
        Index(None, "kind", "occurred_at"),
    )
    __audit__ = False

    id: int | None = Field(default=None, primary_key=True)
    occurred_at: datetime = Field(index=True)
    camera_id: int | None = Field(default=None, foreign_key="cameras.id")
    zone_id: int | None = Field(default=None, foreign_key="zones.id", index=True)
    line_id: int | None = Field(default=None, foreign_key="lines.id", index=True)
    kind: str = Field(max_length=64)  # a rule's name: no_hairnet, spill, marking_unreadable, ...
    severity: Severity = Field(default=Severity.INFO, sa_type=EnumText(Severity))
    label: str | None = Field(default=None, max_length=128)
    confidence: float | None = None
    track_id: str | None = Field(default=None, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    snapshot: str | None = Field(default=None, max_length=1024)  # a stored file's reference, never the bytes
    acknowledged_at: datetime | None = None
    acknowledged_by_id: int | None = Field(default=None, foreign_key="users.id")


class QualityCheck(PlantbusModel, table=True):
    """One quality check: a checkweigher weighing, a visual inspection or a marking-code verification."""

    __tablename__ = "quality_checks"
    __table_args__ = (
        one_of("kind", QualityCheckKind),
        Index(None, "line_id", "checked_at"),
        Index(None, "product_id", "checked_at"),
    )
    __audit__ = False

    id: int | None = Field(default=None, primary_key=True)
    checked_at: datetime
    kind: QualityCheckKind = Field(sa_type=EnumText(QualityCheckKind))
    line_id: int = Field(foreign_key="lines.id")
    product_id: int | None = Field(default=None, foreign_key="products.id")
    equipment_id: int | None = Field(default=None, foreign_key="equipment.id", index=True)
    shift_instance_id: int | None = Field(default=None, foreign_key="shift_instances.id", index=True)
    passed: bool
    value: float | None = None  # the measurement (grams for a checkweigher)
    unit: str | None = Field(default=None, max_length=16)
    details: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    checked_by_id: int | None = Field(default=None, foreign_key="users.id")


class Alarm(PlantbusModel, table=True):
    """One alarm occurrence and where it stands in the ISA-18.2 state model."""

    __tablename__ = "alarms"
    __table_args__ = (
        one_of("state", AlarmState),
        one_of("priority", Severity),
        Index(None, "source", "condition"),
    )
    __audit__ = False

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=512)  # the UNS path of the value in alarm
    condition: str = Field(max_length=64)  # high, low, stale, ...
    message: str = Field(sa_type=Text)
    priority: Severity = Field(default=Severity.MEDIUM, sa_type=EnumText(Severity))
    state: AlarmState = Field(default=AlarmState.UNACKNOWLEDGED, sa_type=EnumText(AlarmState), index=True)
    value: float | None = None  # the process value when it activated
    setpoint: float | None = None  # the limit it crossed
    line_id: int | None = Field(default=None, foreign_key="lines.id", index=True)
    equipment_id: int | None = Field(default=None, foreign_key="equipment.id", index=True)
    activated_at: datetime = Field(index=True)
    acknowledged_at: datetime | None = None
    acknowledged_by_id: int | None = Field(default=None, foreign_key="users.id")
    returned_at: datetime | None = None  # returned to normal
    shelved_until: datetime | None = None
    shelved_by_id: int | None = Field(default=None, foreign_key="users.id")
    updated_at: datetime = Field(default_factory=utcnow, sa_column_kwargs={"onupdate": utcnow})

    @property
    def active(self) -> bool:
        """Whether the process condition is still present."""
        return self.state in (AlarmState.UNACKNOWLEDGED, AlarmState.ACKNOWLEDGED)


class AuditLog(PlantbusModel, table=True):
    """Who changed what when, with the row before and after (written by the session, not by callers)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "entity", "entity_id"),)
    __audit__ = False

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL", index=True)
    username: str | None = Field(default=None, max_length=128)  # kept when the user row goes
    action: str = Field(max_length=32)  # create, update, delete
    entity: str = Field(max_length=64)  # the table name
    entity_id: str | None = Field(default=None, max_length=64)
    before: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    after: dict[str, Any] | None = Field(default=None, sa_type=JSON)


ENTITIES: tuple[type[PlantbusModel], ...] = (
    User,
    Line,
    Zone,
    Camera,
    Equipment,
    Product,
    ShiftDefinition,
    ShiftCrew,
    ShiftInstance,
    ProductionPlan,
    ProductionActual,
    StopReason,
    EquipmentDowntime,
    PersonnelOperation,
    CvEvent,
    QualityCheck,
    Alarm,
    AuditLog,
)
