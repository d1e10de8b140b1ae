"""Multi-object tracking across a camera's frames: detections in, `Track`s with stable ids out.

Each frame, live tracks are moved to where their constant-velocity model expects them at the frame's time, then
matched one-to-one to detections of the same label by minimum total cost (Hungarian method,
`scipy.optimize.linear_sum_assignment`), the cost of a pair being (1 - IoU) plus a weight times the centre
distance in units of the track box's diagonal. A pair is allowed only when the boxes overlap enough or the centres
are close enough, and leaving a track and a detection unmatched costs as much as the worst allowed pair, so
the matching never trades right pairs for more pairs. Unmatched detections start tentative tracks; a track is
confirmed after 3 hits (`Track.confirmed`), coasts on its prediction while missed, and is dropped after
`max_misses` misses (a tentative one after `tentative_misses`).

Why our own tracker and not norfair: norfair 2.3.0 (the current release) requires numpy < 2 and filterpy < 2,
while Plantbus pins numpy 2.4; it would also pull in rich. And what we need is small and specific: time-based
prediction (motion gating makes frame intervals irregular, so velocity is per millisecond, not per frame),
per-label tracks, a bounded history of bottom-centre points for line counting, and classifier attributes carried
on the track with a vote window so rules can debounce PPE verdicts. That is ~200 lines on numpy and scipy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment

from edge_cv.detectors.boxes import as_array, iou_matrix
from edge_cv.types import Box, Detection, Track, bottom_centre, centre


class TrackerConfig(BaseModel):
    """Association and lifetime settings; the defaults suit 5-15 frames/s."""

    model_config = ConfigDict(extra="forbid")

    min_iou: float = Field(default=0.1, ge=0.0, le=1.0, description="overlap that allows a match on its own")
    max_distance: float = Field(
        default=1.0, gt=0.0, le=10.0, description="centre distance (in track box diagonals) that allows a match"
    )
    distance_weight: float = Field(default=0.5, ge=0.0, le=10.0, description="weight of centre distance in the cost")
    max_misses: int = Field(default=15, ge=0, le=1000, description="frames a confirmed track coasts before it goes")
    tentative_misses: int = Field(default=1, ge=0, le=100, description="… an unconfirmed one")
    history: int = Field(default=64, ge=2, le=10000, description="bottom-centre points kept per track")
    vote_window: int = Field(default=7, ge=1, le=1000, description="classifier verdicts kept per attribute")
    velocity_smoothing: float = Field(
        default=0.5, gt=0.0, le=1.0, description="weight of the newest observed velocity (1: no smoothing)"
    )
    per_label: bool = Field(default=True, description="a detection only continues a track with the same label")
    merge_overlap: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="for views where objects of one label never overlap (packs in single file on a belt): two "
        "detections of a label sharing more than this share of the smaller box are fragments of one object and are "
        "tracked as their union; default off (people do stand in front of each other)",
    )


@dataclass(slots=True)
class _Motion:
    observed: Box  # the last matched detection's box …
    observed_ms: int  # … and its frame time
    vx: float = 0.0  # pixels per millisecond
    vy: float = 0.0
    moved: bool = False  # velocity has been measured at least once


def attribute_vote(track: Track, attribute: str) -> tuple[str, float, int] | None:
    """The majority verdict of a track's recent votes for `attribute`: (label, share of votes, number of votes),
    or None when it has none. A rule can demand, say, share ≥ 0.8 over ≥ 5 votes before raising anything."""
    votes = track.votes.get(attribute)
    if not votes:
        return None
    label, count = Counter(v[0] for v in votes).most_common(1)[0]
    return label, count / len(votes), len(votes)


def merge_fragments(detections: list[Detection], min_share: float) -> list[Detection]:
    """Detections with, for each label, any two sharing more than `min_share` of the smaller box's area merged into
    their union (score and attributes of the surer one), until no such pair is left.

    A detector sometimes answers one pack with two overlapping part boxes, in alternate frames; followed as two
    objects they give a second track that crosses a count line as well. Where objects of a label cannot overlap,
    such boxes are one object, and their union is nearer its true extent than either part.
    """
    out = sorted(detections, key=lambda d: -d.score)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a.label != b.label or _shared(a.box, b.box) <= min_share:
                    continue
                box = (min(a.box[0], b.box[0]), min(a.box[1], b.box[1]), max(a.box[2], b.box[2]),
                       max(a.box[3], b.box[3]))  # fmt: skip
                out[i] = replace(a, box=box, attributes=dict(a.attributes))
                del out[j]
                merged = True
                break
            if merged:
                break
    return out


def _shared(a: Box, b: Box) -> float:
    """Intersection of two boxes over the smaller one's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0


class Tracker:
    """Tracks for one camera; call `update` once per processed frame, in time order."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: dict[int, Track] = {}
        self._motion: dict[int, _Motion] = {}
        self._next_id = 1
        self.counters = {"created": 0, "confirmed": 0, "deleted": 0}

    @property
    def tracks(self) -> list[Track]:
        """Live tracks, confirmed or not, oldest first."""
        return list(self._tracks.values())

    def predict(self, time_ms: int) -> list[Box]:
        """Where the live tracks should be at `time_ms` (same order as `tracks`), without changing anything."""
        return [self._predicted(t, time_ms) for t in self._tracks.values()]

    def update(self, detections: list[Detection], time_ms: int) -> list[Track]:
        """Match `detections` of the frame taken at `time_ms` to tracks; returns the live tracks afterwards."""
        if self.config.merge_overlap is not None:
            detections = merge_fragments(detections, self.config.merge_overlap)
        tracks = list(self._tracks.values())
        predicted = [self._predicted(t, time_ms) for t in tracks]
        pairs = self._associate(tracks, predicted, detections)
        matched_tracks = {ti for ti, _ in pairs}
        matched_dets = {di for _, di in pairs}
        for ti, di in pairs:
            self._hit(tracks[ti], detections[di], time_ms)
        for ti, track in enumerate(tracks):
            if ti not in matched_tracks:
                self._miss(track, predicted[ti])
        for di, det in enumerate(detections):
            if di not in matched_dets:
                self._start(det, time_ms)
        return list(self._tracks.values())

    def _predicted(self, track: Track, time_ms: int) -> Box:
        motion = self._motion[track.id]
        dt = time_ms - motion.observed_ms
        if not motion.moved or dt <= 0:
            return track.box
        # The box moves from its last observed place; during a miss track.box already holds an earlier prediction,
        # so predict from the observation and the elapsed time, not step by step (no drift from compounding).
        base = motion.observed
        dx, dy = motion.vx * dt, motion.vy * dt
        return (base[0] + dx, base[1] + dy, base[2] + dx, base[3] + dy)

    def _associate(
        self, tracks: list[Track], predicted: list[Box], detections: list[Detection]
    ) -> list[tuple[int, int]]:
        if not tracks or not detections:
            return []
        c = self.config
        p = as_array(predicted)
        d = as_array([det.box for det in detections])
        iou = iou_matrix(p, d)
        pc = np.stack([(p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2], axis=1)
        dc = np.stack([(d[:, 0] + d[:, 2]) / 2, (d[:, 1] + d[:, 3]) / 2], axis=1)
        diag = np.maximum(np.hypot(p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]), 1.0)
        dist = np.linalg.norm(pc[:, None, :] - dc[None, :, :], axis=2) / diag[:, None]
        cost = (1.0 - iou) + c.distance_weight * dist
        allowed = (iou >= max(c.min_iou, 1e-9)) | (dist <= c.max_distance)
        if c.per_label:
            t_labels = np.array([t.label for t in tracks], dtype=object)
            d_labels = np.array([det.label for det in detections], dtype=object)
            allowed &= t_labels[:, None] == d_labels[None, :]
        # Leaving a track and a detection both unmatched costs as much as the worst pair the gate allows, and a
        # pair is worth what it saves on that. Minimising the raw cost with a huge finite cost for forbidden pairs
        # would first maximise the number of allowed pairs: when a pack leaves the frame while the next one enters
        # (a coasting track, a new detection at the other edge), every track on the belt would shift to its
        # neighbour's detection so that one more pair gets made — the id switches that crossed count lines
        # backwards. With the gain, a worse chain of neighbours never beats the right pairs plus one new track.
        worst = 1.0 + c.distance_weight * c.max_distance
        gain = np.where(allowed, np.maximum(worst - cost, 1e-6), 0.0)
        rows, cols = linear_sum_assignment(gain, maximize=True)
        return [(int(r), int(k)) for r, k in zip(rows, cols, strict=True) if allowed[r, k]]

    def _hit(self, track: Track, det: Detection, time_ms: int) -> None:
        c = self.config
        motion = self._motion[track.id]
        dt = time_ms - motion.observed_ms
        if dt > 0:
            (ox, oy), (nx, ny) = centre(motion.observed), centre(det.box)
            vx, vy = (nx - ox) / dt, (ny - oy) / dt
            a = c.velocity_smoothing if motion.moved else 1.0
            motion.vx, motion.vy = a * vx + (1 - a) * motion.vx, a * vy + (1 - a) * motion.vy
            motion.moved = True
        motion.observed, motion.observed_ms = det.box, time_ms
        was_confirmed = track.confirmed
        track.box, track.score, track.last_seen_ms = det.box, det.score, time_ms
        track.hits += 1
        track.misses = 0
        self._remember(track, det)
        if track.confirmed and not was_confirmed:
            self.counters["confirmed"] += 1

    def _miss(self, track: Track, predicted: Box) -> None:
        track.misses += 1
        track.box = predicted
        limit = self.config.max_misses if track.confirmed else self.config.tentative_misses
        if track.misses > limit:
            del self._tracks[track.id]
            del self._motion[track.id]
            self.counters["deleted"] += 1

    def _start(self, det: Detection, time_ms: int) -> None:
        track = Track(
            id=self._next_id,
            box=det.box,
            label=det.label,
            score=det.score,
            first_seen_ms=time_ms,
            last_seen_ms=time_ms,
        )
        self._next_id += 1
        self._tracks[track.id] = track
        self._motion[track.id] = _Motion(observed=det.box, observed_ms=time_ms)
        self._remember(track, det)
        self.counters["created"] += 1

    def _remember(self, track: Track, det: Detection) -> None:
        c = self.config
        track.history.append(bottom_centre(det.box))
        if len(track.history) > c.history:
            del track.history[: len(track.history) - c.history]
        for name, verdict in det.attributes.items():
            track.attributes[name] = verdict
            votes = track.votes.setdefault(name, [])
            votes.append(verdict)
            if len(votes) > c.vote_window:
                del votes[: len(votes) - c.vote_window]
