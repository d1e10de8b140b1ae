"""`seed_reference_plant` loads PLANT.md's plant, on SQLite and PostgreSQL, and a second run changes nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from _db_support import database, database_url, postgres  # noqa: F401  (fixtures)
from sqlmodel import select

from hub.models import AuditLog, Equipment, Line, OeeLoss, Product, ShiftCrew, ShiftDefinition, StopReason
from hub.reference_plant import seed_reference_plant

EXPECTED_COUNTS = {"lines": 2, "equipment": 12, "products": 5, "shift_definitions": 3, "shift_crews": 10,
                   "stop_reasons": 29}


def counts(db) -> dict[str, int]:
    with db.engine.connect() as c:
        return {t: c.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in EXPECTED_COUNTS}


def seed(db) -> str:
    with db.session(actor="test seed") as s:
        return seed_reference_plant(s).summary()


def test_seed_loads_the_reference_plant(database):
    summary = seed(database)
    assert counts(database) == EXPECTED_COUNTS
    assert summary.startswith("lines 2 added, equipment 12 added, products 5 added")
    with database.session() as s:
        sku = {p.sku: p for p in s.exec(select(Product))}
        assert (sku["OB-40"].tne_g, sku["OB-40"].ideal_rate_per_min, sku["OB-40"].shelf_life_days) == (3.6, 120, 180)
        assert (sku["SB-450"].nominal_weight_g, sku["SB-450"].tne_g, sku["SB-450"].shelf_life_days) == (450, 13.5, 5)
        salad = s.exec(select(Line).where(Line.code == "salad")).one()
        assert sku["SB-300"].line_id == salad.id and salad.uns_path == "zdorovo/plant1/packaging/salad"

        sleever = s.exec(select(Equipment).where(Equipment.line_id == salad.id, Equipment.code == "sleever")).one()
        assert (sleever.sparkplug_group, sleever.sparkplug_edge_node, sleever.sparkplug_device) == (
            "plant1", "salad-plc", "sleever")
        assert sleever.uns_path == "zdorovo/plant1/packaging/salad/sleever"
        verifier = s.exec(select(Equipment).where(Equipment.line_id == salad.id, Equipment.code == "verifier")).one()
        assert verifier.sparkplug_edge_node == "cv-salad"


def test_seeded_shifts_and_crews_follow_the_plant(database):
    seed(database)
    with database.session() as s:
        shifts = {d.code: d for d in s.exec(select(ShiftDefinition))}
        assert (shifts["A"].starts_at, shifts["A"].ends_at, shifts["A"].break_minutes) == (time(6), time(14), 50)
        start, end = shifts["C"].bounds(date(2026, 3, 5), ZoneInfo("Europe/Moscow"))
        assert (start, end) == (datetime(2026, 3, 5, 19, tzinfo=UTC), datetime(2026, 3, 6, 3, tzinfo=UTC))
        lines = {line.id: line.code for line in s.exec(select(Line))}
        by_id = {d.id: d.code for d in shifts.values()}
        crews = s.exec(select(ShiftCrew)).all()
    runs = {(lines[c.line_id], by_id[c.shift_definition_id], c.role): c.headcount for c in crews}
    assert {shift for (line, shift, _role) in runs if line == "salad"} == {"A", "B"}  # no night shift for salads
    assert {shift for (line, shift, _role) in runs if line == "oatbar"} == {"A", "B", "C"}
    assert runs[("salad", "A", "operator")] == 5 and runs[("oatbar", "C", "operator")] == 3
    assert all(runs[(line, shift, "sanitation")] == 1 for (line, shift, _role) in runs)


def test_seeded_stop_reasons_carry_planned_flag_loss_category_and_parent(database):
    seed(database)
    with database.session() as s:
        reasons = {r.code: r for r in s.exec(select(StopReason))}
    planned = {code for code, r in reasons.items() if r.planned}
    assert planned == {"no_shift", "break", "no_order", "planned_maintenance"}
    assert all(reasons[code].loss_category is None for code in planned)
    assert reasons["micro_stop"].loss_category is OeeLoss.PERFORMANCE
    assert reasons["reduced_speed"].loss_category is OeeLoss.PERFORMANCE
    assert reasons["startup_scrap"].loss_category is OeeLoss.QUALITY
    assert reasons["shortage_sleeves"].loss_category is OeeLoss.AVAILABILITY
    assert reasons["changeover_allergen"].parent_id == reasons["changeover"].id
    assert reasons["marking_duplicate"].parent_id == reasons["marking_reject"].id
    assert reasons["breakdown"].parent_id is None


def test_seeding_twice_adds_nothing_and_keeps_the_plant_edits(database):
    seed(database)
    with database.session() as s:
        s.exec(select(Product).where(Product.sku == "OB-40")).one().ideal_rate_per_min = 125  # the plant's own figure
    assert seed(database) == "nothing added (61 already there)"
    assert counts(database) == EXPECTED_COUNTS
    with database.session() as s:
        assert s.exec(select(Product).where(Product.sku == "OB-40")).one().ideal_rate_per_min == 125
        seeded = s.exec(select(AuditLog).where(AuditLog.username == "test seed")).all()
    assert len(seeded) == 61 and {row.action for row in seeded} == {"create"}
