"""Pure logic of the models: shift bounds across midnight and DST, enum storage, derived values, reclassification."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.errors import PlantbusError
from hub.events import Severity
from hub.models import (
    ENTITIES,
    AlarmState,
    EnumText,
    EquipmentDowntime,
    Product,
    Role,
    ShiftDefinition,
    StopReason,
    User,
    metadata,
)

MOSCOW = ZoneInfo("Europe/Moscow")


def test_a_night_shift_ends_on_the_next_day_in_utc():
    c = ShiftDefinition(id=3, code="C", name="night", starts_at=time(22), ends_at=time(6))
    start, end = c.bounds(date(2026, 3, 5), MOSCOW)  # Moscow is UTC+3 all year
    assert start == datetime(2026, 3, 5, 19, tzinfo=UTC)
    assert end == datetime(2026, 3, 6, 3, tzinfo=UTC)
    assert start.tzinfo is UTC and end.tzinfo is UTC


def test_a_shift_over_a_clock_change_lasts_its_real_length():
    c = ShiftDefinition(id=3, code="C", name="night", starts_at=time(22), ends_at=time(6))
    start, end = c.bounds(date(2026, 3, 28), ZoneInfo("Europe/Berlin"))  # clocks go forward that night
    assert end - start == timedelta(hours=7)


def test_shift_instance_carries_definition_date_and_bounds():
    a = ShiftDefinition(id=1, code="A", name="morning", starts_at=time(6), ends_at=time(14))
    instance = a.instance(date(2026, 3, 5), MOSCOW, crew="crew 2")
    assert (instance.shift_definition_id, instance.production_date, instance.crew) == (1, date(2026, 3, 5), "crew 2")
    assert instance.starts_at == datetime(2026, 3, 5, 3, tzinfo=UTC)
    assert instance.ends_at == datetime(2026, 3, 5, 11, tzinfo=UTC)


def test_shift_instance_of_an_unsaved_definition_is_refused():
    with pytest.raises(PlantbusError, match="flush first"):
        ShiftDefinition(code="A", name="a", starts_at=time(6), ends_at=time(14)).instance(date(2026, 1, 1), MOSCOW)


def test_ideal_cycle_time_follows_the_ideal_rate():
    bar = Product(sku="OB-40", name="oat bar", line_id=1, nominal_weight_g=40, tne_g=3.6, ideal_rate_per_min=120,
                  shelf_life_days=180)
    assert bar.ideal_cycle_time_s == pytest.approx(0.5)


def test_enums_are_stored_as_strings_and_int_enums_by_name():
    roles = EnumText(Role)
    assert roles.process_bind_param(Role.ENGINEER, None) == "engineer"
    assert roles.process_bind_param("operator", None) == "operator"
    assert roles.process_result_value("admin", None) is Role.ADMIN
    severities = EnumText(Severity)
    assert severities.process_bind_param(Severity.HIGH, None) == "high"
    assert severities.process_result_value("critical", None) is Severity.CRITICAL


def test_an_unknown_enum_value_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="use one of admin, engineer, operator, viewer"):
        EnumText(Role).process_bind_param("superuser", None)
    with pytest.raises(ValueError, match="not a AlarmState"):
        EnumText(AlarmState).process_result_value("cleared", None)


def test_reclassifying_a_stop_keeps_the_first_reason():
    jam = StopReason(id=1, code="jam", name="Jam", planned=False)
    changeover = StopReason(id=2, code="changeover", name="Changeover", planned=False)
    maintenance = StopReason(id=3, code="planned_maintenance", name="Planned maintenance", planned=True)
    foreman = User(id=7, username="petrov", display_name="P. Petrov")
    stop = EquipmentDowntime(line_id=1, started_at=datetime(2026, 3, 5, 8, tzinfo=UTC))

    stop.classify(jam)
    assert (stop.reason_id, stop.original_reason_id, stop.reclassified_at) == (1, None, None)

    stop.classify(changeover, by=foreman)
    assert (stop.reason_id, stop.original_reason_id, stop.reclassified_by_id) == (2, 1, 7)
    assert stop.reclassified_at is not None and stop.planned is False

    stop.classify(maintenance)
    assert (stop.reason_id, stop.original_reason_id, stop.planned) == (3, 1, True)


def test_downtime_duration_is_none_while_the_stop_lasts():
    stop = EquipmentDowntime(line_id=1, started_at=datetime(2026, 3, 5, 8, tzinfo=UTC))
    assert stop.duration is None
    stop.ended_at = datetime(2026, 3, 5, 8, 7, tzinfo=UTC)
    assert stop.duration == timedelta(minutes=7)


def test_every_entity_is_in_the_migrated_metadata():
    assert {e.__tablename__ for e in ENTITIES} == set(metadata.tables)
