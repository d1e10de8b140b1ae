"""Personnel: people present per zone, time spent at an operation (dwell), and PPE worn (mask, hair net, coat).

PPE verdicts come from classifiers on person crops (`Track.attributes`, e.g. {"mask": ("no_mask", 0.93)}). One bad
frame raises nothing: a violation needs the attribute to say so in at least `min_bad` of the track's last `window`
observations, and a track raises at most one violation per attribute per `cooldown_s`.

Config (`cameras.<camera>.rules.<name>`):

    ppe_and_dwell:
      type: personnel
      labels: [person]
      zones: [sleever_station, floor]      # <zone>/people gauges; dwell where the zone has an `operation`
      dwell_min_s: 20
      ppe: {required: {mask: mask, coat: coat}, window: 10, min_bad: 6, cooldown_s: 120}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_cv.rules.base import Cooldown, RuleSettings, TrackClock, Votes, check_references, select
from edge_cv.types import CvEvent, Detection, Frame, RuleResult, Track
from edge_cv.zones import CameraGeometry, ZoneMembership, ZoneTransition
from hub.events import Severity


class PpeConfig(BaseModel):
    """Which classifier attributes must show protective equipment, and how the verdicts are debounced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: dict[str, tuple[str, ...]] = Field(
        description="attribute -> the label(s) that mean it is worn, e.g. {mask: mask, hairnet: [hairnet, cap]}"
    )
    window: int = Field(10, ge=1, le=1000, description="N: how many recent observations of a track are judged")
    min_bad: int = Field(6, ge=1, description="K: bad observations among the last N that raise a violation")
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="a bad verdict below this confidence counts as good")
    cooldown_s: float = Field(120.0, ge=0.0, description="at most one violation per track and attribute this often")
    zones: tuple[str, ...] = Field((), description="check PPE only inside these zones (empty: anywhere)")

    @field_validator("required", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        if isinstance(v, dict):
            return {k: (x,) if isinstance(x, str) else x for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _check(self) -> PpeConfig:
        if not self.required:
            raise ValueError("ppe.required is empty: name at least one attribute, e.g. {mask: mask}")
        for attr, ok in self.required.items():
            if not ok or any(not label for label in ok):
                raise ValueError(f"ppe.required.{attr}: give the label(s) that mean the equipment is worn")
        if self.min_bad > self.window:
            raise ValueError(f"ppe.min_bad ({self.min_bad}) cannot exceed ppe.window ({self.window})")
        return self


class PersonnelConfig(RuleSettings):
    """People per zone, dwell at operations and PPE for tracks with one of `labels`."""

    type: Literal["personnel"]
    labels: tuple[str, ...] = Field(("person",), min_length=1, description="track labels that are people")
    zones: tuple[str, ...] = Field(
        (), description="zones to count people in (and to time dwell in, where the zone has an operation)"
    )
    dwell_min_s: float = Field(10.0, ge=0.0, description="a stay shorter than this at an operation is not reported")
    ppe: PpeConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> PersonnelConfig:
        for what, names in (("zones", self.zones), ("ppe.zones", self.ppe.zones if self.ppe else ())):
            if any(not n for n in names):
                raise ValueError(f"{what}: zone names must be non-empty")
            twice = sorted(n for n in names if names.count(n) > 1)
            if twice:
                raise ValueError(f"{what}: zone {twice[0]!r} is listed twice")
        return self

    def referenced_zones(self) -> set[str]:
        return set(self.zones) | (set(self.ppe.zones) if self.ppe else set())


class PersonnelRule:
    """See the module docstring."""

    def __init__(self, name: str, config: PersonnelConfig, geometry: CameraGeometry) -> None:
        self.name = name
        self.config = config
        check_references(name, config, geometry.zones, geometry.lines)
        names = list(dict.fromkeys([*config.zones, *(config.ppe.zones if config.ppe else ())]))
        self._members: dict[str, ZoneMembership] = {z: geometry.zones[z].membership() for z in names}
        self._operation = {z: geometry.zones[z].operation for z in names}
        self._closed_ms: dict[str, int] = {z: 0 for z in config.zones if self._operation[z]}
        self._clock = TrackClock()
        self._seen: set[int] = set()
        self._people_seen = 0
        self._dwells = 0
        self._violations: dict[str, int] = {a: 0 for a in (config.ppe.required if config.ppe else {})}
        self._votes = Votes(config.ppe.window) if config.ppe else None
        self._cooldown = Cooldown(config.ppe.cooldown_s) if config.ppe else None

    def process(self, frame: Frame, detections: list[Detection], tracks: list[Track]) -> RuleResult:
        """Update zone membership, dwell and PPE votes from this frame's tracks."""
        now = frame.time_ms
        people = select(tracks, self.config.labels)
        result = RuleResult()
        self._clock.see(people, now)
        for t in people:
            if t.confirmed and t.id not in self._seen:
                self._seen.add(t.id)
                self._people_seen += 1
        for zone, members in self._members.items():
            for change in members.update(people, now):
                if not change.entered and zone in self._closed_ms:
                    self._closed_ms[zone] += change.dwell_ms
                    if change.dwell_ms >= self.config.dwell_min_s * 1000:
                        result.events.append(self._dwell_event(frame, change))
        if self.config.ppe is not None:
            self._judge_ppe(frame, people, result)
        gone = self._clock.expire(now)
        self._seen -= gone
        if self._votes is not None and gone:
            self._votes.drop_tracks(gone)
        if self._cooldown is not None:
            self._cooldown.forget_older_than(now)
        self._metrics(now, people, result)
        return result

    def _judge_ppe(self, frame: Frame, people: list[Track], result: RuleResult) -> None:
        ppe = self.config.ppe
        assert ppe is not None and self._votes is not None and self._cooldown is not None
        for t in people:
            if t.misses > 0:
                continue  # the tracker only predicted this box: its attributes are from an older frame
            zone = self._zone_of(t.id, ppe.zones or self.config.zones)
            if ppe.zones and zone is None:
                continue
            for attr, ok in ppe.required.items():
                verdict = t.attributes.get(attr)
                if verdict is None:
                    continue  # not classified on this frame: no vote either way
                label, score = verdict
                bad = label not in ok and score >= ppe.min_score
                key = (t.id, attr)
                n_bad = self._votes.add(key, bad)
                if bad and n_bad >= ppe.min_bad and self._cooldown.ready(key, frame.time_ms):
                    self._cooldown.fire(key, frame.time_ms)
                    self._violations[attr] += 1
                    result.events.append(
                        CvEvent(
                            camera=frame.camera,
                            rule=self.name,
                            kind="ppe_violation",
                            time_ms=frame.time_ms,
                            label=t.label,
                            zone=zone,
                            score=float(score),
                            box=t.box,
                            track_id=t.id,
                            severity=Severity.MEDIUM,
                            payload={
                                "attribute": attr,
                                "value": label,
                                "expected": list(ok),
                                "bad_frames": n_bad,
                                "window": ppe.window,
                            },
                            image=frame.image,
                        )
                    )

    def _zone_of(self, track_id: int, zones: tuple[str, ...]) -> str | None:
        for z in zones:
            if track_id in self._members[z]:
                return z
        return None

    def _dwell_event(self, frame: Frame, change: ZoneTransition) -> CvEvent:
        self._dwells += 1
        t = change.track
        return CvEvent(
            camera=frame.camera,
            rule=self.name,
            kind="dwell",
            time_ms=frame.time_ms,
            label=t.label,
            zone=change.zone,
            score=float(t.score),
            box=t.box,
            track_id=t.id,
            payload={
                "operation": self._operation[change.zone],
                "duration_s": round(change.dwell_ms / 1000.0, 3),
                "entered_ms": change.entered_ms,
                "left_ms": change.time_ms,
            },
            image=frame.image,
        )

    def _metrics(self, now: int, people: list[Track], result: RuleResult) -> None:
        m = result.metrics
        m["people"] = len(people)
        for zone in self.config.zones:
            members = self._members[zone]
            m[f"{zone}/people"] = len(members)
            if zone in self._closed_ms:
                open_ms = sum(max(0, now - entered) for entered in members.members.values())
                m[f"{zone}/person_seconds"] = round((self._closed_ms[zone] + open_ms) / 1000.0, 3)
        m["people_seen"] = self._people_seen
        m["dwells"] = self._dwells
        if self.config.ppe is not None:
            m["violations"] = sum(self._violations.values())
            for attr, n in self._violations.items():
                m[f"violations/{attr}"] = n
