"""The reference plant of PLANT.md as data, and `seed_reference_plant` that loads it into a database.

Lines, their machines (with Sparkplug addresses and UNS paths), SKUs, shifts A/B/C with their crews,
and the default stop-reason tree. Seeding is idempotent: rows are found by their natural key (line
code, SKU, shift code, reason code) and only missing ones are added, so a plant's own edits survive a
second run. These are example names; nothing else in Plantbus depends on them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import time
from typing import Any

from sqlmodel import Session, SQLModel, select

from hub.models import Equipment, Line, OeeLoss, Product, ShiftCrew, ShiftDefinition, StopReason

ENTERPRISE_PATH = "zdorovo/plant1/packaging"
SPARKPLUG_GROUP = "plant1"


@dataclass(frozen=True)
class LineSpec:
    code: str
    name: str
    description: str
    plc_edge_node: str
    cv_edge_node: str
    machines: tuple[tuple[str, str, str], ...]  # (code, name, kind); the verifier camera is on the CV edge node


@dataclass(frozen=True)
class ProductSpec:
    sku: str
    name: str
    line: str
    nominal_weight_g: float
    tne_g: float
    ideal_rate_per_min: float
    shelf_life_days: int


@dataclass(frozen=True)
class ShiftSpec:
    code: str
    name: str
    starts_at: time
    ends_at: time
    break_minutes: int


@dataclass(frozen=True)
class ReasonSpec:
    code: str
    name: str
    planned: bool
    loss: OeeLoss | None
    parent: str | None = None
    description: str | None = None


LINES: tuple[LineSpec, ...] = (
    LineSpec(
        "oatbar",
        "Oat bars and granola",
        "filler/flow-wrapper -> checkweigher -> marking printer + code verifier camera -> case packer; PLC on OPC UA",
        "oatbar-plc",
        "cv-oatbar",
        (
            ("filler", "Filler / flow-wrapper", "flow_wrapper"),
            ("checkweigher", "Checkweigher", "checkweigher"),
            ("printer", "Marking printer", "marking_printer"),
            ("verifier", "Code verifier camera", "code_verifier"),
            ("case_packer", "Case packer", "case_packer"),
        ),
    ),
    LineSpec(
        "salad",
        "Fresh salad bowls",
        "bowl filler -> lidder -> sleever -> checkweigher -> marking printer + verifier camera -> labeller; "
        "PLC on Modbus TCP",
        "salad-plc",
        "cv-salad",
        (
            ("bowl_filler", "Bowl filler", "bowl_filler"),
            ("lidder", "Lidder", "lidder"),
            ("sleever", "Sleever", "sleever"),
            ("checkweigher", "Checkweigher", "checkweigher"),
            ("printer", "Marking printer", "marking_printer"),
            ("verifier", "Code verifier camera", "code_verifier"),
            ("labeller", "Labeller", "labeller"),
        ),
    ),
)

PRODUCTS: tuple[ProductSpec, ...] = (
    ProductSpec("OB-40", "Oat bar 40 g", "oatbar", 40, 3.6, 120, 180),
    ProductSpec("OB-40-CH", "Oat bar with chocolate 40 g", "oatbar", 40, 3.6, 110, 180),
    ProductSpec("GR-250", "Granola pouch 250 g", "oatbar", 250, 9, 40, 270),
    ProductSpec("SB-300", "Salad bowl 300 g", "salad", 300, 9, 30, 5),
    ProductSpec("SB-450", "Salad bowl 450 g", "salad", 450, 13.5, 20, 5),
)

# a 30-minute meal break and two 10-minute breaks per shift
SHIFTS: tuple[ShiftSpec, ...] = (
    ShiftSpec("A", "Shift A (morning)", time(6), time(14), 50),
    ShiftSpec("B", "Shift B (afternoon)", time(14), time(22), 50),
    ShiftSpec("C", "Shift C (night)", time(22), time(6), 50),
)

# (line, shift codes it runs, operators per shift); each line also has one sanitation worker per shift
CREWS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("oatbar", ("A", "B", "C"), 3),
    ("salad", ("A", "B"), 5),
)

_A, _P, _Q = OeeLoss.AVAILABILITY, OeeLoss.PERFORMANCE, OeeLoss.QUALITY

STOP_REASONS: tuple[ReasonSpec, ...] = (
    # planned: excluded from planned production time
    ReasonSpec("no_shift", "No shift", True, None),
    ReasonSpec("break", "Meal or break", True, None),
    ReasonSpec("no_order", "No order", True, None),
    ReasonSpec("planned_maintenance", "Planned maintenance", True, None),
    # availability losses
    ReasonSpec("breakdown", "Breakdown", False, _A),
    ReasonSpec("breakdown_mechanical", "Mechanical breakdown", False, _A, "breakdown"),
    ReasonSpec("breakdown_electrical", "Electrical breakdown", False, _A, "breakdown"),
    ReasonSpec("jam", "Jam", False, _A),
    ReasonSpec("jam_infeed", "Infeed jam", False, _A, "jam"),
    ReasonSpec("jam_outfeed", "Outfeed jam", False, _A, "jam"),
    ReasonSpec("material_shortage", "Material shortage", False, _A),
    ReasonSpec("shortage_film", "Film shortage", False, _A, "material_shortage"),
    ReasonSpec("shortage_bowls", "Bowl shortage", False, _A, "material_shortage"),
    ReasonSpec("shortage_sleeves", "Sleeve shortage", False, _A, "material_shortage"),
    ReasonSpec("shortage_codes", "Marking code shortage", False, _A, "material_shortage"),
    ReasonSpec("quality_hold", "Quality hold", False, _A),
    ReasonSpec("operator_absent", "Operator absent", False, _A),
    ReasonSpec("changeover", "Changeover", False, _A, description="20-40 minutes between SKUs"),
    ReasonSpec("changeover_allergen", "Allergen changeover", False, _A, "changeover", "chocolate to plain: 60 minutes"),
    ReasonSpec("cleaning", "Cleaning / CIP", False, _A),
    ReasonSpec("unknown_stop", "Unknown stop", False, _A),
    # performance losses
    ReasonSpec("micro_stop", "Micro-stop", False, _P, description="unexplained stop shorter than 2 minutes"),
    ReasonSpec("reduced_speed", "Reduced speed", False, _P, description="count rate below the SKU's ideal rate"),
    # quality losses
    ReasonSpec("reject_checkweigher", "Checkweigher reject", False, _Q),
    ReasonSpec("marking_reject", "Marking code reject", False, _Q),
    ReasonSpec("marking_unreadable", "Unreadable marking code", False, _Q, "marking_reject"),
    ReasonSpec("marking_duplicate", "Duplicate marking code", False, _Q, "marking_reject"),
    ReasonSpec("cv_appearance_defect", "Appearance defect (camera)", False, _Q),
    ReasonSpec("startup_scrap", "Start-up scrap", False, _Q),
)


@dataclass
class SeedReport:
    """How many rows of each table the seed added and found already there."""

    created: Counter[str] = field(default_factory=Counter)
    existing: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line: `lines 2 added, products 5 added, ... (12 already there)`."""
        added = ", ".join(f"{table} {n} added" for table, n in self.created.items() if n) or "nothing added"
        return f"{added} ({sum(self.existing.values())} already there)"


def _get_or_add(
    session: Session, report: SeedReport, model: type[SQLModel], key: dict[str, Any], values: dict[str, Any]
) -> Any:
    statement = select(model)
    for column, value in key.items():
        statement = statement.where(getattr(model, column) == value)
    found = session.exec(statement).first()
    table = model.__tablename__  # type: ignore[attr-defined]
    if found is not None:
        report.existing[table] += 1
        return found
    row = model(**key, **values)
    session.add(row)
    session.flush()  # the id is needed by the rows that refer to it
    report.created[table] += 1
    return row


def seed_reference_plant(session: Session) -> SeedReport:
    """Add the PLANT.md lines, machines, SKUs, shifts, crews and stop reasons that are missing; flushes only."""
    report = SeedReport()
    lines: dict[str, Line] = {}
    for spec in LINES:
        line_path = f"{ENTERPRISE_PATH}/{spec.code}"
        line = _get_or_add(
            session,
            report,
            Line,
            {"code": spec.code},
            {"name": spec.name, "uns_path": line_path, "description": spec.description},
        )
        lines[spec.code] = line
        for code, name, kind in spec.machines:
            edge_node = spec.cv_edge_node if kind == "code_verifier" else spec.plc_edge_node
            _get_or_add(
                session,
                report,
                Equipment,
                {"line_id": line.id, "code": code},
                {
                    "name": name,
                    "kind": kind,
                    "sparkplug_group": SPARKPLUG_GROUP,
                    "sparkplug_edge_node": edge_node,
                    "sparkplug_device": code,
                    "uns_path": f"{line_path}/{code}",
                },
            )
    for product in PRODUCTS:
        _get_or_add(
            session,
            report,
            Product,
            {"sku": product.sku},
            {
                "name": product.name,
                "line_id": lines[product.line].id,
                "nominal_weight_g": product.nominal_weight_g,
                "tne_g": product.tne_g,
                "ideal_rate_per_min": product.ideal_rate_per_min,
                "shelf_life_days": product.shelf_life_days,
            },
        )
    shifts: dict[str, ShiftDefinition] = {}
    for shift in SHIFTS:
        shifts[shift.code] = _get_or_add(
            session,
            report,
            ShiftDefinition,
            {"code": shift.code},
            {
                "name": shift.name,
                "starts_at": shift.starts_at,
                "ends_at": shift.ends_at,
                "break_minutes": shift.break_minutes,
            },
        )
    for line_code, shift_codes, operators in CREWS:
        for shift_code in shift_codes:
            for role, headcount in (("operator", operators), ("sanitation", 1)):
                _get_or_add(
                    session,
                    report,
                    ShiftCrew,
                    {"shift_definition_id": shifts[shift_code].id, "line_id": lines[line_code].id, "role": role},
                    {"headcount": headcount},
                )
    reasons: dict[str, StopReason] = {}
    for reason in STOP_REASONS:  # parents come before their children in the tuple
        reasons[reason.code] = _get_or_add(
            session,
            report,
            StopReason,
            {"code": reason.code},
            {
                "name": reason.name,
                "planned": reason.planned,
                "loss_category": reason.loss,
                "parent_id": reasons[reason.parent].id if reason.parent else None,
                "description": reason.description,
            },
        )
    return report
