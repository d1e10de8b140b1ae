"""Deterministic simulation of the reference plant's two packaging lines (PLANT.md), in simulated time.

The model knows nothing about protocols: it advances in whole simulated seconds from a seed and exposes a flat
snapshot `{"<line>/<machine>/<tag>": value}` that the OPC UA and Modbus servers publish through connectors/sim/layout.py.
Every random draw comes from one `random.Random` per line, drawn once per simulated second and once per pack, so
the same seed and the same total simulated time give the same states and counts however the time is chunked.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any


class LineState(IntEnum):
    """State code a line or machine reports (Int32 on OPC UA, uint16 on Modbus)."""

    OFF = 0  # no shift scheduled
    IDLE = 1  # ready, waiting for the crew to restart after a planned stop
    RUNNING = 2
    STOPPED = 3  # unplanned stop; the reason code says why
    BREAK = 4  # meal or short break
    CHANGEOVER = 5
    CLEANING = 6


@dataclass(frozen=True, slots=True)
class StopReason:
    """A stop reason from PLANT.md with its numeric code, whether it is planned and the OEE loss it counts against."""

    code: int
    key: str
    planned: bool
    loss: str  # "none" (planned), "availability", "performance"


STOP_REASONS: tuple[StopReason, ...] = (
    StopReason(0, "none", False, "none"),
    StopReason(10, "no_shift", True, "none"),
    StopReason(11, "meal_break", True, "none"),
    StopReason(12, "break", True, "none"),
    StopReason(13, "no_order", True, "none"),
    StopReason(14, "planned_maintenance", True, "none"),
    StopReason(20, "breakdown_mechanical", False, "availability"),
    StopReason(21, "breakdown_electrical", False, "availability"),
    StopReason(30, "jam_infeed", False, "availability"),
    StopReason(31, "jam_outfeed", False, "availability"),
    StopReason(40, "material_film", False, "availability"),
    StopReason(41, "material_bowls", False, "availability"),
    StopReason(42, "material_sleeves", False, "availability"),
    StopReason(43, "material_codes", False, "availability"),
    StopReason(50, "quality_hold", False, "availability"),
    StopReason(51, "operator_absent", False, "availability"),
    StopReason(60, "changeover", False, "availability"),
    StopReason(61, "allergen_changeover", False, "availability"),
    StopReason(70, "cleaning_cip", False, "availability"),
    # The PLC cannot know the cause of a short stop; analytics call unexplained stops under 2 minutes micro-stops.
    StopReason(99, "unknown", False, "availability"),
)
REASONS_BY_CODE: dict[int, StopReason] = {r.code: r for r in STOP_REASONS}
REASONS_BY_KEY: dict[str, StopReason] = {r.key: r for r in STOP_REASONS}


@dataclass(frozen=True, slots=True)
class Sku:
    """A product from PLANT.md's SKU table plus the simulator's fill spread and order size."""

    code: str
    line: str
    nominal_g: float
    tne_g: float
    ideal_rate: float  # packs per minute
    fill_sd_g: float
    order_qty: int
    allergen: bool = False


SKUS: dict[str, Sku] = {
    s.code: s
    for s in (
        Sku("OB-40", "oatbar", 40.0, 3.6, 120.0, 1.8, 20000),
        Sku("OB-40-CH", "oatbar", 40.0, 3.6, 110.0, 1.8, 15000, allergen=True),
        Sku("GR-250", "oatbar", 250.0, 9.0, 40.0, 5.0, 6000),
        Sku("SB-300", "salad", 300.0, 9.0, 30.0, 5.0, 9000),
        Sku("SB-450", "salad", 450.0, 13.5, 20.0, 7.0, 4000),
    )
}

# Numeric SKU codes for protocols without strings (Modbus registers).
SKU_CODES: dict[str, int] = {"OB-40": 1, "OB-40-CH": 2, "GR-250": 3, "SB-300": 11, "SB-450": 12}

SHIFTS: tuple[tuple[str, int], ...] = (("A", 6), ("B", 14), ("C", 22))  # name, start hour; 8 hours each
SHIFT_CODES = {"A": 1, "B": 2, "C": 3}
# Planned stops inside every shift, as (minutes after shift start, minutes long, reason key).
SHIFT_BREAKS: tuple[tuple[int, int, str], ...] = ((120, 10, "break"), (240, 30, "meal_break"), (360, 10, "break"))


@dataclass(frozen=True, slots=True)
class Disturbance:
    """An unplanned event: hazard per running hour, duration range in seconds, the machine it hits, its reason."""

    reason: str
    per_hour: float
    min_s: int
    max_s: int
    machine: str


@dataclass(frozen=True, slots=True)
class LineSpec:
    """Static description of a line: machines in flow order, SKU plan, shifts it runs and its disturbances."""

    name: str
    machines: tuple[str, ...]
    plan: tuple[str, ...]
    shifts: tuple[str, ...]
    max_speed: float
    disturbances: tuple[Disturbance, ...]
    cip_minutes: int = 0  # sanitation window after the last shift of the day


OATBAR = LineSpec(
    name="oatbar",
    machines=("filler", "checkweigher", "printer", "case_packer"),
    plan=("OB-40", "OB-40-CH", "GR-250"),
    shifts=("A", "B", "C"),
    max_speed=130.0,
    disturbances=(
        Disturbance("unknown", 5.0, 10, 100, "filler"),  # micro-stops
        Disturbance("jam_infeed", 0.6, 60, 360, "filler"),
        Disturbance("jam_outfeed", 0.3, 60, 300, "case_packer"),
        Disturbance("material_film", 0.25, 180, 480, "filler"),
        Disturbance("material_codes", 0.1, 180, 600, "printer"),
        Disturbance("breakdown_mechanical", 0.06, 600, 2700, "filler"),
        Disturbance("breakdown_electrical", 0.03, 600, 2400, "case_packer"),
        Disturbance("quality_hold", 0.03, 600, 1200, "checkweigher"),
        Disturbance("operator_absent", 0.04, 120, 600, "filler"),
    ),
)

SALAD = LineSpec(
    name="salad",
    machines=("bowl_filler", "lidder", "sleever", "checkweigher", "printer", "labeller"),
    plan=("SB-300", "SB-450"),
    shifts=("A", "B"),
    max_speed=35.0,
    disturbances=(
        Disturbance("unknown", 4.0, 10, 100, "lidder"),
        Disturbance("jam_infeed", 0.4, 60, 300, "sleever"),
        Disturbance("jam_outfeed", 0.3, 60, 300, "labeller"),
        Disturbance("material_bowls", 0.2, 180, 480, "bowl_filler"),
        Disturbance("material_sleeves", 0.25, 180, 480, "sleever"),
        Disturbance("material_codes", 0.1, 180, 600, "printer"),
        Disturbance("breakdown_mechanical", 0.05, 600, 2700, "sleever"),
        Disturbance("breakdown_electrical", 0.03, 600, 2400, "bowl_filler"),
        Disturbance("quality_hold", 0.03, 600, 1200, "checkweigher"),
        Disturbance("operator_absent", 0.05, 120, 600, "bowl_filler"),
    ),
    cip_minutes=45,
)

LINES: tuple[LineSpec, ...] = (OATBAR, SALAD)

DEFAULT_START = datetime(2026, 3, 2, 5, 50)  # a Monday, ten minutes before shift A


@dataclass(slots=True)
class StopRecord:
    """One finished or ongoing non-running period, for tests and the demo's ground truth."""

    start_s: int
    end_s: int | None
    state: LineState
    reason: str
    machine: str


def tne_for(nominal_g: float) -> float:
    """Tolerable negative error for a nominal quantity in grams (Directive 76/211/EEC)."""
    for upper, tne in ((50, lambda q: q * 0.09), (100, lambda q: 4.5), (200, lambda q: q * 0.045),
                       (300, lambda q: 9.0), (500, lambda q: q * 0.03), (1000, lambda q: 15.0),
                       (10000, lambda q: q * 0.015)):
        if nominal_g <= upper:
            return round(tne(nominal_g), 3)
    raise ValueError(f"no TNE rule for {nominal_g} g; the directive covers 5 g to 10 kg")


@dataclass
class LineModel:
    """One packaging line: schedule, state machine, pack flow through its machines, counters."""

    spec: LineSpec
    rng: random.Random
    start: datetime
    elapsed_s: int = 0
    state: LineState = LineState.OFF
    reason: str = "no_shift"
    stop_machine: str = ""
    sku: str = ""
    order_done: int = 0
    next_sku: str = ""
    event_left_s: int = 0  # remaining seconds of the current unplanned stop or changeover
    event_state: LineState = LineState.RUNNING
    event_reason: str = "none"
    event_machine: str = ""
    idle_left_s: int = 0
    run_enabled: bool = True  # the operator's run permissive (Modbus coil / OPC UA variable)
    reduced_left_s: int = 0
    reduced_factor: float = 1.0
    speed: float = 0.0
    speed_setpoint: float = 0.0
    fill_target_g: float = 0.0
    drift_g: float = 0.0
    pack_carry: float = 0.0
    running_s: int = 0
    last_weight_g: float = 0.0
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per SKU: [packs weighed, sum g, sum of squares, lightest accepted g, heaviest rejected g] (test ground truth).
    weights: dict[str, list[float]] = field(default_factory=dict)
    stops: list[StopRecord] = field(default_factory=list)
    _was_producing: bool = False

    def __post_init__(self) -> None:
        self.sku = self.spec.plan[0]
        self.speed_setpoint = self.spec.max_speed
        self.fill_target_g = self._default_fill_target(SKUS[self.sku])
        self.counters = {m: {"good": 0, "reject": 0} for m in self.spec.machines}
        self.counters["printer"].update(printed=0, verified=0, unreadable=0, duplicate=0)
        if "case_packer" in self.counters:
            self.counters["case_packer"]["cases"] = 0
        if "sleever" in self.counters:
            self.counters["sleever"].update(sleeves_used=0, sleeves_scrapped=0)
        self.last_weight_g = SKUS[self.sku].nominal_g

    @staticmethod
    def _default_fill_target(sku: Sku) -> float:
        # Fill one sd above nominal: the batch mean stays above nominal, as the first packers' rule demands.
        return round(sku.nominal_g + sku.fill_sd_g, 1)

    @property
    def now(self) -> datetime:
        """Simulated wall-clock time."""
        return self.start + timedelta(seconds=self.elapsed_s)

    def shift(self) -> str:
        """Shift letter at the simulated time (A, B or C), whether or not this line runs it."""
        hour = self.now.hour
        for name, start_h in SHIFTS:
            if start_h <= hour < start_h + 8 or (start_h == 22 and hour < 6):
                return name
        raise AssertionError("unreachable: shifts cover the day")

    def planned_stop(self) -> tuple[LineState, str] | None:
        """The planned state the schedule imposes right now, or None inside production time."""
        now = self.now
        shift = self.shift()
        shift_start_h = dict(SHIFTS)[shift]
        minutes_into = ((now.hour - shift_start_h) % 24) * 60 + now.minute
        if shift not in self.spec.shifts:
            if self.spec.cip_minutes and shift_start_h == 22 and minutes_into < self.spec.cip_minutes:
                return LineState.CLEANING, "cleaning_cip"
            return LineState.OFF, "no_shift"
        for at, length, reason in SHIFT_BREAKS:
            if at <= minutes_into < at + length:
                return LineState.BREAK, reason
        return None

    def write_setpoint(self, tag: str, value: float) -> float:
        """Apply an operator setpoint (speed_setpoint packs/min or fill_target_g); returns the value kept after clamping."""
        if not math.isfinite(value):
            raise ValueError(f"setpoint {tag} must be a finite number, got {value!r}")
        if tag == "speed_setpoint":
            self.speed_setpoint = min(max(float(value), 1.0), self.spec.max_speed)
            return self.speed_setpoint
        if tag == "run_enable":
            self.run_enabled = bool(value)
            return float(self.run_enabled)
        if tag == "fill_target_g":
            nominal = SKUS[self.sku].nominal_g
            self.fill_target_g = round(min(max(float(value), nominal * 0.8), nominal * 1.2), 1)
            return self.fill_target_g
        raise ValueError(f"{self.spec.name} has no writable setpoint {tag!r}; use speed_setpoint, fill_target_g or run_enable")

    def advance(self, seconds: int) -> None:
        """Advance the line by whole simulated seconds."""
        for _ in range(seconds):
            self._tick()

    def _set_state(self, state: LineState, reason: str, machine: str = "") -> None:
        if state != self.state or reason != self.reason:
            if self.stops and self.stops[-1].end_s is None:
                self.stops[-1].end_s = self.elapsed_s
            if state != LineState.RUNNING:
                self.stops.append(StopRecord(self.elapsed_s, None, state, reason, machine))
        self.state, self.reason, self.stop_machine = state, reason, machine

    def _tick(self) -> None:
        rng = self.rng
        sku = SKUS[self.sku]
        # Fill drift: an Ornstein-Uhlenbeck walk with a half-hour memory, the slow wander of a real filler.
        tau = 1800.0
        self.drift_g += -self.drift_g / tau + 0.25 * sku.fill_sd_g * math.sqrt(2.0 / tau) * rng.gauss(0.0, 1.0)
        roll = rng.random()
        if self.event_left_s > 0:
            # Repairs and changeovers go on through breaks, as the fitters and the changeover crew do.
            self.event_left_s -= 1
            if self.event_left_s == 0 and self.event_state == LineState.CHANGEOVER:
                self._finish_changeover()
        planned = self.planned_stop()
        if planned is not None:
            self._set_state(planned[0], planned[1])
            self.speed = 0.0
            self.idle_left_s = 60 + int(roll * 180)
            self._was_producing = False
        elif not self.run_enabled and self.event_left_s == 0:
            self._set_state(LineState.IDLE, "no_order")
            self.speed = 0.0
            self._was_producing = False
        elif self.event_left_s > 0:
            self._set_state(self.event_state, self.event_reason, self.event_machine)
            self.speed = 0.0
            self._was_producing = False
        elif self.idle_left_s > 0:
            self.idle_left_s -= 1
            self._set_state(LineState.IDLE, "none")
            self.speed = 0.0
            self._was_producing = False
        elif self.order_done >= sku.order_qty:
            self._start_changeover()
            self.speed = 0.0
            self._was_producing = False
        elif self._maybe_disturb(roll):
            self.speed = 0.0
            self._was_producing = False
        else:
            self._set_state(LineState.RUNNING, "none")
            self._run_one_second(sku)
        self.elapsed_s += 1

    def _maybe_disturb(self, roll: float) -> bool:
        total = sum(d.per_hour for d in self.spec.disturbances) / 3600.0
        if roll >= total:
            if self.reduced_left_s == 0 and roll < total + 0.5 / 3600.0:
                self.reduced_left_s = self.rng.randint(300, 1500)
                self.reduced_factor = self.rng.uniform(0.7, 0.9)
            return False
        acc = 0.0
        for d in self.spec.disturbances:
            acc += d.per_hour / 3600.0
            if roll < acc:
                self.event_left_s = self.rng.randint(d.min_s, d.max_s)
                self.event_state, self.event_reason, self.event_machine = LineState.STOPPED, d.reason, d.machine
                self._set_state(LineState.STOPPED, d.reason, d.machine)
                return True
        return False

    def _start_changeover(self) -> None:
        plan = self.spec.plan
        self.next_sku = plan[(plan.index(self.sku) + 1) % len(plan)]
        allergen = SKUS[self.sku].allergen and not SKUS[self.next_sku].allergen
        self.event_left_s = 3600 if allergen else self.rng.randint(20, 40) * 60
        self.event_state = LineState.CHANGEOVER
        self.event_reason = "allergen_changeover" if allergen else "changeover"
        self.event_machine = self.spec.machines[0]
        self._set_state(LineState.CHANGEOVER, self.event_reason, self.event_machine)

    def _finish_changeover(self) -> None:
        self.sku = self.next_sku
        self.order_done = 0
        self.fill_target_g = self._default_fill_target(SKUS[self.sku])
        self.drift_g = 0.0
        self.idle_left_s = 0

    def _run_one_second(self, sku: Sku) -> None:
        rng = self.rng
        if self.reduced_left_s > 0:
            self.reduced_left_s -= 1
            factor = self.reduced_factor
        else:
            factor = 1.0
        jitter = min(max(rng.gauss(0.98, 0.01), 0.95), 1.0)
        self.speed = round(min(self.speed_setpoint, sku.ideal_rate) * factor * jitter, 2)
        self.running_s += 1
        self.pack_carry += self.speed / 60.0
        packs = int(self.pack_carry)
        self.pack_carry -= packs
        restart = not self._was_producing
        self._was_producing = True
        for _ in range(packs):
            self._one_pack(sku, restart)
            restart = False

    def _one_pack(self, sku: Sku, restart: bool) -> None:
        rng, c = self.rng, self.counters
        first = self.spec.machines[0]
        # The first machine forms/fills the pack; a few fail the seal (wrapper) or the fill (bowl filler).
        if rng.random() < 0.003:
            c[first]["reject"] += 1
            return
        c[first]["good"] += 1
        if "lidder" in c:
            if rng.random() < 0.002:
                c["lidder"]["reject"] += 1
                return
            c["lidder"]["good"] += 1
        if "sleever" in c:
            sl = c["sleever"]
            # Threading the first sleeve after a stop wastes a few; a misfeed now and then wastes one more.
            scrapped = (1 + int(rng.random() * 4)) if restart else (1 if rng.random() < 0.006 else 0)
            sl["sleeves_scrapped"] += scrapped
            sl["sleeves_used"] += scrapped + 1
            sl["good"] += 1
        weight = round(rng.gauss(self.fill_target_g + self.drift_g, sku.fill_sd_g), 2)
        self.last_weight_g = weight
        cw = c["checkweigher"]
        w = self.weights.setdefault(sku.code, [0, 0.0, 0.0, math.inf, -math.inf])
        w[0] += 1
        w[1] += weight
        w[2] += weight * weight
        # The checkweigher enforces the second packers' rule outright: no pack short by more than the TNE leaves.
        if weight < sku.nominal_g - sku.tne_g:
            cw["reject"] += 1
            w[4] = max(w[4], weight)
            return
        w[3] = min(w[3], weight)
        cw["good"] += 1
        pr = c["printer"]
        pr["printed"] += 1
        r = rng.random()
        if r < 0.003:
            pr["unreadable"] += 1
            pr["reject"] += 1
            return
        if r < 0.0032:
            pr["duplicate"] += 1
            pr["reject"] += 1
            return
        pr["verified"] += 1
        pr["good"] += 1
        self.order_done += 1
        last = self.spec.machines[-1]
        if last == "case_packer":
            cp = c["case_packer"]
            cp["good"] += 1
            case_size = 12 if sku.nominal_g < 100 else 8
            if cp["good"] % case_size == 0:
                cp["cases"] += 1
        else:
            if rng.random() < 0.001:
                c[last]["reject"] += 1
            else:
                c[last]["good"] += 1

    def machine_state(self, machine: str) -> tuple[LineState, str]:
        """State and reason a machine reports: the stopped machine shows the reason, the others wait idle."""
        if self.state == LineState.STOPPED and machine != self.stop_machine:
            return LineState.IDLE, "none"
        return self.state, self.reason

    def snapshot(self) -> dict[str, Any]:
        """Flat `{"<line>/<machine>/<tag>": value}` view of everything the servers publish."""
        name, sku = self.spec.name, SKUS[self.sku]
        out: dict[str, Any] = {
            f"{name}/line/state": int(self.state),
            f"{name}/line/state_name": self.state.name.lower(),
            f"{name}/line/stop_reason": REASONS_BY_KEY[self.reason].code,
            f"{name}/line/sku": self.sku,
            f"{name}/line/sku_code": SKU_CODES[self.sku],
            f"{name}/line/run_enable": self.run_enabled,
            f"{name}/line/running": self.state == LineState.RUNNING,
            f"{name}/line/fault": self.state == LineState.STOPPED,
            f"{name}/line/shift": self.shift(),
            f"{name}/line/shift_code": SHIFT_CODES[self.shift()],
            f"{name}/line/speed": self.speed,
            f"{name}/line/runtime_s": self.running_s,
            f"{name}/line/sim_time": self.now.isoformat(),
        }
        for m in self.spec.machines:
            state, reason = self.machine_state(m)
            p = f"{name}/{m}/"
            out[p + "state"] = int(state)
            out[p + "state_name"] = state.name.lower()
            out[p + "stop_reason"] = REASONS_BY_KEY[reason].code
            out[p + "running"] = state == LineState.RUNNING
            out[p + "fault"] = state == LineState.STOPPED and m == self.stop_machine
            out[p + "speed"] = self.speed
            out[p + "good_count"] = self.counters[m]["good"]
            out[p + "reject_count"] = self.counters[m]["reject"]
        first = self.spec.machines[0]
        out[f"{name}/{first}/speed_setpoint"] = self.speed_setpoint
        out[f"{name}/{first}/fill_target_g"] = self.fill_target_g
        out[f"{name}/checkweigher/last_weight_g"] = self.last_weight_g
        out[f"{name}/checkweigher/nominal_g"] = sku.nominal_g
        out[f"{name}/checkweigher/tne_g"] = sku.tne_g
        pr = self.counters["printer"]
        for k in ("printed", "verified", "unreadable", "duplicate"):
            out[f"{name}/printer/codes_{k}"] = pr[k]
        if "case_packer" in self.counters:
            out[f"{name}/case_packer/cases_packed"] = self.counters["case_packer"]["cases"]
        if "sleever" in self.counters:
            out[f"{name}/sleever/sleeves_used"] = self.counters["sleever"]["sleeves_used"]
            out[f"{name}/sleever/sleeves_scrapped"] = self.counters["sleever"]["sleeves_scrapped"]
        return out


class PlantModel:
    """Both lines of the reference plant, advanced together from one seed."""

    def __init__(self, seed: int, start: datetime = DEFAULT_START, lines: tuple[LineSpec, ...] = LINES) -> None:
        self.seed = seed
        self.start = start
        # One generator per line, seeded from (seed, line name), so adding a line never changes the others' story.
        self.lines: dict[str, LineModel] = {
            spec.name: LineModel(spec, random.Random(f"{seed}:{spec.name}"), start) for spec in lines
        }
        self.elapsed_s = 0

    @property
    def now(self) -> datetime:
        """Simulated wall-clock time."""
        return self.start + timedelta(seconds=self.elapsed_s)

    def advance(self, seconds: int) -> None:
        """Advance every line by whole simulated seconds."""
        for line in self.lines.values():
            line.advance(seconds)
        self.elapsed_s += seconds

    def advance_to(self, elapsed_s: float) -> None:
        """Advance to `elapsed_s` simulated seconds after the start (never backwards)."""
        step = int(elapsed_s) - self.elapsed_s
        if step > 0:
            self.advance(step)

    def write(self, path: str, value: float) -> float:
        """Write a setpoint by path `<line>/<machine>/<tag>`; returns the value kept after clamping."""
        line, _machine, tag = path.split("/")
        if line not in self.lines:
            raise ValueError(f"no line {line!r} in the simulated plant; lines are {sorted(self.lines)}")
        return self.lines[line].write_setpoint(tag, value)

    def snapshot(self) -> dict[str, Any]:
        """Every published value of every line."""
        out: dict[str, Any] = {}
        for line in self.lines.values():
            out.update(line.snapshot())
        return out
