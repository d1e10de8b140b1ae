"""The simulated plant's line model: determinism, counters, stops, weights and setpoints (pure logic, no servers)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from connectors.sim.layout import render_markdown
from connectors.sim.model import (
    REASONS_BY_KEY,
    SHIFT_BREAKS,
    SKUS,
    LineState,
    PlantModel,
    tne_for,
)

DAY_S = 86400


@pytest.fixture(scope="module")
def day() -> PlantModel:
    """One simulated day of the whole plant (about a second of CPU), shared by the read-only tests below."""
    model = PlantModel(seed=3)
    model.advance(DAY_S)
    return model


def _story(model: PlantModel) -> list[tuple]:
    return [
        (name, s.start_s, s.end_s, s.state, s.reason, s.machine)
        for name, line in model.lines.items()
        for s in line.stops
    ]


def test_same_seed_replays_same_states_and_counts_however_time_is_chunked() -> None:
    a, b, c = PlantModel(seed=7), PlantModel(seed=7), PlantModel(seed=8)
    a.advance(6 * 3600)
    for _ in range(6 * 3600 // 137):
        b.advance(137)
    b.advance_to(6 * 3600)
    c.advance(6 * 3600)
    assert a.snapshot() == b.snapshot()
    assert _story(a) == _story(b)
    assert a.snapshot()["oatbar/filler/good_count"] != c.snapshot()["oatbar/filler/good_count"]
    assert _story(a) != _story(c)


def test_counters_never_decrease_and_agree_along_the_line() -> None:
    model = PlantModel(seed=5)
    previous = model.snapshot()
    counter_keys = [k for k in previous if k.endswith(("_count", "codes_printed", "codes_verified",
                                                        "codes_unreadable", "codes_duplicate", "sleeves_used",
                                                        "sleeves_scrapped", "cases_packed", "runtime_s"))]
    for _ in range(36):  # 18 hours in half-hour steps
        model.advance(1800)
        snap = model.snapshot()
        for key in counter_keys:
            assert snap[key] >= previous[key], key
        previous = snap
    s = previous
    assert s["oatbar/filler/good_count"] == s["oatbar/checkweigher/good_count"] + s["oatbar/checkweigher/reject_count"]
    assert s["oatbar/checkweigher/good_count"] == s["oatbar/printer/codes_printed"]
    assert s["oatbar/printer/codes_printed"] == (s["oatbar/printer/codes_verified"] + s["oatbar/printer/codes_unreadable"]
                                                 + s["oatbar/printer/codes_duplicate"])
    assert s["oatbar/printer/good_count"] == s["oatbar/case_packer/good_count"]
    assert s["salad/bowl_filler/good_count"] == s["salad/lidder/good_count"] + s["salad/lidder/reject_count"]
    assert s["salad/lidder/good_count"] == s["salad/sleever/good_count"]
    assert s["salad/sleever/sleeves_used"] == s["salad/sleever/good_count"] + s["salad/sleever/sleeves_scrapped"]
    assert s["salad/sleever/sleeves_scrapped"] > 0
    assert s["salad/printer/good_count"] == s["salad/labeller/good_count"] + s["salad/labeller/reject_count"]


def test_pack_count_matches_speed_times_running_time() -> None:
    model = PlantModel(seed=11)
    line = model.lines["oatbar"]
    integral = 0.0
    for _ in range(2 * 3600):  # two hours: still the first OB-40 order (ideal 120 packs/min)
        model.advance(1)
        assert line.sku == "OB-40"
        if line.state == LineState.RUNNING:
            assert 0 < line.speed <= SKUS["OB-40"].ideal_rate
            integral += line.speed / 60.0
        else:
            assert line.speed == 0
    made = line.counters["filler"]["good"] + line.counters["filler"]["reject"]
    assert abs(made - integral) <= 1
    per_running_minute = made / (line.running_s / 60)
    assert 0.7 * 120 < per_running_minute <= 120
    assert line.running_s < 2 * 3600  # it did stop


def test_stops_carry_valid_reasons_and_planned_stops_follow_the_shift_plan(day: PlantModel) -> None:
    for name, line in day.lines.items():
        assert line.stops, name
        for stop in line.stops:
            assert stop.reason in REASONS_BY_KEY, stop
            start = day.start + timedelta(seconds=stop.start_s)
            if stop.state == LineState.BREAK:
                shift_start_h = 22 if start.hour >= 22 or start.hour < 6 else 14 if start.hour >= 14 else 6
                minutes_into = ((start.hour - shift_start_h) % 24) * 60 + start.minute
                assert (minutes_into, stop.reason) in {(at, r) for at, _, r in SHIFT_BREAKS}, stop
                assert REASONS_BY_KEY[stop.reason].planned
            if stop.state == LineState.STOPPED:
                assert not REASONS_BY_KEY[stop.reason].planned
                assert stop.machine in line.spec.machines
    oat = day.lines["oatbar"]
    micro = [s for s in oat.stops if s.reason == "unknown" and s.end_s is not None and s.end_s - s.start_s < 120]
    long_unplanned = [s for s in oat.stops if s.state == LineState.STOPPED and s.reason != "unknown"]
    assert len(micro) >= 10 and long_unplanned
    # Allergen clean after the chocolate bar, ordinary 20-40 minute changeovers otherwise.
    reasons = {s.reason for s in oat.stops if s.state == LineState.CHANGEOVER}
    assert reasons == {"changeover", "allergen_changeover"}
    for s in oat.stops:
        if s.state == LineState.CHANGEOVER and s.end_s is not None:
            assert s.end_s - s.start_s <= (3600 if s.reason == "allergen_changeover" else 40 * 60)
    # The salad line runs shifts A and B only; a CIP window opens at 22:00 and the night is off.
    salad = day.lines["salad"]
    for s in salad.stops:
        start = day.start + timedelta(seconds=s.start_s)
        if s.state == LineState.CLEANING:
            assert (start.hour, start.minute, s.reason) == (22, 0, "cleaning_cip")
    night = PlantModel(seed=3)
    night.advance(int((timedelta(hours=17, minutes=15)).total_seconds()))  # 23:05
    assert night.lines["salad"].state == LineState.OFF and night.lines["salad"].reason == "no_shift"
    assert night.lines["salad"].shift() == "C"


def test_weights_centre_near_nominal_and_only_packs_short_by_more_than_tne_are_rejected(day: PlantModel) -> None:
    seen = 0
    for line in day.lines.values():
        for code, (n, total, _sq, lightest_ok, heaviest_rejected) in line.weights.items():
            sku = SKUS[code]
            if n < 500:
                continue
            seen += 1
            mean = total / n
            assert sku.nominal_g <= mean <= sku.nominal_g + 2 * sku.fill_sd_g, (code, mean)
            assert lightest_ok >= sku.nominal_g - sku.tne_g
            assert heaviest_rejected < sku.nominal_g - sku.tne_g
    assert seen >= 3
    cw = day.lines["salad"].counters["checkweigher"]
    assert 0 < cw["reject"] < 0.025 * (cw["good"] + cw["reject"])


def test_tne_follows_the_directive_table() -> None:
    assert tne_for(40) == 3.6 and tne_for(250) == 9 and tne_for(300) == 9 and tne_for(450) == 13.5
    for sku in SKUS.values():
        assert sku.tne_g == tne_for(sku.nominal_g)


def test_lower_speed_setpoint_slows_the_line_and_run_enable_idles_it() -> None:
    fast, slow = PlantModel(seed=2), PlantModel(seed=2)
    assert slow.write("oatbar/filler/speed_setpoint", 60) == 60
    assert slow.write("oatbar/filler/speed_setpoint", 1000) == slow.lines["oatbar"].spec.max_speed
    slow.write("oatbar/filler/speed_setpoint", 60)
    speeds = []
    for _ in range(3600):
        fast.advance(1)
        slow.advance(1)
        speeds.append(slow.lines["oatbar"].speed)
    assert max(speeds) <= 60
    assert slow.lines["oatbar"].counters["filler"]["good"] < 0.6 * fast.lines["oatbar"].counters["filler"]["good"]
    slow.write("oatbar/line/run_enable", 0)
    slow.advance(600)
    assert slow.lines["oatbar"].state in (LineState.IDLE, LineState.STOPPED, LineState.BREAK)
    if slow.lines["oatbar"].state == LineState.IDLE:
        assert slow.lines["oatbar"].reason == "no_order"
    with pytest.raises(ValueError, match="no writable setpoint"):
        slow.write("oatbar/filler/good_count", 1)


def test_readme_tag_tables_are_generated_from_the_layout() -> None:
    readme = (Path(__file__).parents[1] / "connectors" / "sim" / "README.md").read_text(encoding="utf-8")
    assert render_markdown() in readme, "regenerate: python -c 'from connectors.sim.layout import render_markdown as r; print(r())'"
