"""The models in a real database, SQLite and PostgreSQL: CRUD through Database.session, constraints, UTC, audit."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
import sqlalchemy as sa
from _db_support import database, database_url, postgres  # noqa: F401  (fixtures)
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import select

from hub.db import Database
from hub.events import Severity
from hub.models import (
    Alarm,
    AlarmState,
    AuditLog,
    CvEvent,
    EquipmentDowntime,
    Line,
    OeeLoss,
    ProductionActual,
    ProductionPlan,
    Product,
    Role,
    ShiftDefinition,
    StopReason,
    User,
)

MSK = timezone(timedelta(hours=3))


def add_basics(db) -> dict[str, int]:
    """A line, a SKU and a shift; returns their ids."""
    with db.session() as s:
        line = Line(code="oatbar", name="Oat bars")
        s.add(line)
        s.flush()
        bar = Product(sku="OB-40", name="Oat bar 40 g", line_id=line.id, nominal_weight_g=40, tne_g=3.6,
                      ideal_rate_per_min=120, shelf_life_days=180)
        shift = ShiftDefinition(code="A", name="morning", starts_at=time(6), ends_at=time(14), break_minutes=50)
        s.add_all([bar, shift])
        s.flush()
        return {"line": line.id, "product": bar.id, "shift": shift.id}


def audit_rows(db, entity: str) -> list[AuditLog]:
    with db.session() as s:
        return list(s.exec(select(AuditLog).where(AuditLog.entity == entity).order_by(AuditLog.id)))


def test_create_read_update_delete_through_sessions(database):
    ids = add_basics(database)
    with database.session() as s:
        bar = s.get(Product, ids["product"])
        assert (bar.sku, bar.tne_g, bar.line_id) == ("OB-40", 3.6, ids["line"])
        bar.ideal_rate_per_min = 115
    with database.session() as s:
        assert s.get(Product, ids["product"]).ideal_rate_per_min == 115
        s.delete(s.get(Product, ids["product"]))
    with database.session() as s:
        assert s.get(Product, ids["product"]) is None
        assert s.exec(select(Line)).one().code == "oatbar"


def test_a_failing_block_rolls_the_session_back(database):
    with pytest.raises(RuntimeError), database.session() as s:
        s.add(Line(code="salad", name="Salads"))
        s.flush()
        raise RuntimeError("operator cancelled")
    with database.session() as s:
        assert s.exec(select(Line)).all() == []


def test_a_second_plan_for_the_same_date_shift_line_and_product_is_rejected(database):
    ids = add_basics(database)
    slot = dict(production_date=date(2026, 3, 5), shift_definition_id=ids["shift"], line_id=ids["line"],
                product_id=ids["product"])
    with database.session() as s:
        s.add(ProductionPlan(**slot, planned_quantity=40_000))
    with pytest.raises(IntegrityError), database.session() as s:
        s.add(ProductionPlan(**slot, planned_quantity=100))
    with database.session() as s:
        s.add(ProductionPlan(**{**slot, "production_date": date(2026, 3, 6)}, planned_quantity=100))  # next day is fine
        assert [p.planned_quantity for p in s.exec(select(ProductionPlan).order_by(ProductionPlan.id))] == [40_000, 100]


def test_foreign_keys_are_enforced(database):
    with pytest.raises(IntegrityError), database.session() as s:
        s.add(Product(sku="GHOST", name="no line", line_id=999, nominal_weight_g=1, tne_g=0, ideal_rate_per_min=1,
                      shelf_life_days=1))
    ids = add_basics(database)
    with pytest.raises(IntegrityError), database.session() as s:
        s.delete(s.get(Line, ids["line"]))  # a product still refers to it


def test_every_sqlite_connection_has_foreign_keys_on(tmp_path):
    with Database(f"sqlite:///{tmp_path / 'fk.sqlite'}") as db:
        connections = [db.engine.connect() for _ in range(3)]  # several pooled connections, not just one
        try:
            assert [c.exec_driver_sql("PRAGMA foreign_keys").scalar() for c in connections] == [1, 1, 1]
        finally:
            for c in connections:
                c.close()


def test_sqlite_ddl_is_transactional(tmp_path):
    # what makes a failed migration on SQLite leave nothing half done
    with Database(f"sqlite:///{tmp_path / 'ddl.sqlite'}") as db:
        with db.engine.connect() as c:
            c.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
            c.rollback()
        assert "scratch" not in sa.inspect(db.engine).get_table_names()


def test_check_constraints_guard_the_data(database):
    ids = add_basics(database)
    bad_rows = [
        ProductionPlan(production_date=date(2026, 3, 5), shift_definition_id=ids["shift"], line_id=ids["line"],
                       product_id=ids["product"], planned_quantity=-1),
        StopReason(code="odd", name="planned yet a loss", planned=True, loss_category=OeeLoss.AVAILABILITY),
        StopReason(code="odd2", name="unplanned without a loss", planned=False),
        EquipmentDowntime(line_id=ids["line"], started_at=datetime(2026, 3, 5, 9, tzinfo=UTC),
                          ended_at=datetime(2026, 3, 5, 8, tzinfo=UTC)),
        CvEvent(occurred_at=datetime(2026, 3, 5, 9, tzinfo=UTC), kind="spill", confidence=1.5),
    ]
    for row in bad_rows:
        with pytest.raises(IntegrityError), database.session() as s:
            s.add(row)


def test_enum_columns_hold_strings_and_refuse_others(database):
    with database.session() as s:
        s.add(User(username="sidorov", display_name="S. Sidorov", role=Role.ENGINEER))
    with database.engine.connect() as c:
        assert c.exec_driver_sql("SELECT role FROM users").scalar() == "engineer"
    with pytest.raises(IntegrityError), database.engine.begin() as c:
        # written around the ORM, as an ERP import might: the database itself says no
        c.exec_driver_sql(
            "INSERT INTO users (username, display_name, role, active, created_at) "
            "VALUES ('x', 'X', 'superuser', true, '2026-03-05 09:00:00')"
        )


def test_timestamps_are_stored_in_utc_and_come_back_aware(database):
    ids = add_basics(database)
    local = datetime(2026, 3, 5, 9, 30, tzinfo=MSK)
    with database.session() as s:
        s.add(Alarm(source="zdorovo/plant1/packaging/oatbar/checkweigher/mean_g", condition="low",
                    message="mean weight below nominal", priority=Severity.HIGH, activated_at=local,
                    line_id=ids["line"]))
    with database.session() as s:
        alarm = s.exec(select(Alarm)).one()
        assert alarm.activated_at == local and alarm.activated_at.utcoffset() == timedelta(0)
        assert alarm.activated_at.hour == 6
        assert (alarm.state, alarm.priority, alarm.active) == (AlarmState.UNACKNOWLEDGED, Severity.HIGH, True)
        # comparisons in SQL use the same instant whatever offset the caller writes it in
        later = s.exec(select(Alarm).where(Alarm.activated_at > datetime(2026, 3, 5, 6, 29, tzinfo=UTC))).all()
        assert len(later) == 1


def test_a_naive_timestamp_is_refused(database):
    with pytest.raises(StatementError, match="timezone"), database.session() as s:
        s.add(CvEvent(occurred_at=datetime(2026, 3, 5, 9, 30), kind="no_hairnet"))


def test_audit_log_records_who_and_the_row_before_and_after(database):
    with database.session(actor="setup") as s:
        admin = User(username="admin", display_name="Administrator", role=Role.ADMIN, password_hash="$argon2id$secret")
        s.add(admin)
    with database.session() as s:
        admin = s.get(User, 1)
    ids = add_basics(database)
    with database.session(actor=admin) as s:
        bar = s.get(Product, ids["product"])
        bar.ideal_rate_per_min = 100
        bar.tne_g = 3.6  # unchanged: not reported as a change
    with database.session(actor=admin) as s:
        s.delete(s.get(Product, ids["product"]))

    create, update, delete = audit_rows(database, "products")
    assert (create.action, create.before, create.after["sku"]) == ("create", None, "OB-40")
    assert (update.action, update.user_id, update.username) == ("update", admin.id, "admin")
    assert update.before["ideal_rate_per_min"] == 120 and update.after["ideal_rate_per_min"] == 100
    assert {k for k in update.after if update.after[k] != update.before[k]} == {"ideal_rate_per_min"}
    assert update.entity_id == str(ids["product"]) and update.at.tzinfo is not None
    assert (delete.action, delete.before["sku"], delete.after) == ("delete", "OB-40", None)

    (user_created,) = audit_rows(database, "users")
    assert user_created.username == "setup" and user_created.user_id is None
    assert user_created.after["password_hash"] == "<redacted>"  # the audit log is read by more people


def test_a_password_change_is_audited_without_the_hash(database):
    with database.session() as s:
        s.add(User(username="operator1", display_name="Operator", role=Role.OPERATOR, password_hash="$argon2id$old"))
    with database.session(actor="operator1") as s:
        s.exec(select(User)).one().password_hash = "$argon2id$new"
    update = audit_rows(database, "users")[-1]
    assert (update.before["password_hash"], update.after["password_hash"]) == ("<redacted>", "<redacted, changed>")
    assert "argon2" not in str(update.before) + str(update.after)


def test_audit_before_is_the_stored_row_even_for_an_object_never_read(database):
    ids = add_basics(database)
    with database.session() as s:
        bar = s.get(Product, ids["product"])
        s.expire(bar)  # nothing loaded: the session alone does not know the old value
        bar.name = "Oat bar 40 g (new wrapper)"
    (update,) = [r for r in audit_rows(database, "products") if r.action == "update"]
    assert update.before["name"] == "Oat bar 40 g" and update.after["name"] == "Oat bar 40 g (new wrapper)"
    assert update.before["sku"] == "OB-40"


def test_reclassifying_a_stop_keeps_the_original_reason_and_the_audit_trail(database):
    ids = add_basics(database)
    with database.session() as s:
        foreman = User(username="petrov", display_name="P. Petrov", role=Role.OPERATOR)
        unknown = StopReason(code="unknown_stop", name="Unknown stop", loss_category=OeeLoss.AVAILABILITY)
        maintenance = StopReason(code="planned_maintenance", name="Planned maintenance", planned=True)
        s.add_all([foreman, unknown, maintenance])
        s.flush()
        stop = EquipmentDowntime(line_id=ids["line"], started_at=datetime(2026, 3, 5, 8, tzinfo=UTC),
                                 ended_at=datetime(2026, 3, 5, 8, 40, tzinfo=UTC))
        stop.classify(unknown)
        s.add(stop)
    with database.session(actor=foreman) as s:
        stop = s.exec(select(EquipmentDowntime)).one()
        stop.classify(s.exec(select(StopReason).where(StopReason.code == "planned_maintenance")).one(), by=foreman)
    with database.session() as s:
        stop = s.exec(select(EquipmentDowntime)).one()
        assert stop.reason_id == maintenance.id and stop.original_reason_id == unknown.id and stop.planned is True
        assert stop.reclassified_by_id == foreman.id and stop.reclassified_at.tzinfo is not None
    reclassified = audit_rows(database, "equipment_downtime")[-1]
    assert reclassified.username == "petrov"
    assert (reclassified.before["reason_id"], reclassified.after["reason_id"]) == (unknown.id, maintenance.id)
    assert (reclassified.before["planned"], reclassified.after["planned"]) == (False, True)


def test_machine_written_records_stay_out_of_the_audit_log(database):
    with database.session() as s:
        s.add(CvEvent(occurred_at=datetime(2026, 3, 5, 9, tzinfo=UTC), kind="no_hairnet", severity=Severity.MEDIUM,
                      payload={"track": 17, "bbox": [10, 20, 60, 90]}))
    with database.session() as s:
        event = s.exec(select(CvEvent)).one()
        assert event.payload == {"track": 17, "bbox": [10, 20, 60, 90]} and event.severity is Severity.MEDIUM
        assert s.exec(select(sa.func.count()).select_from(AuditLog)).one() == 0


def test_actuals_are_one_row_per_shift_line_and_product(database):
    ids = add_basics(database)
    with database.session() as s:
        shift = s.get(ShiftDefinition, ids["shift"])
        instance = shift.instance(date(2026, 3, 5), MSK, crew="crew 1")
        s.add(instance)
        s.flush()
        s.add(ProductionActual(shift_instance_id=instance.id, line_id=ids["line"], product_id=ids["product"],
                               packed=38_500, marked=38_480, scrap=120))
        instance_id = instance.id
    with pytest.raises(IntegrityError), database.session() as s:
        s.add(ProductionActual(shift_instance_id=instance_id, line_id=ids["line"], product_id=ids["product"]))
