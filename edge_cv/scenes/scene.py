"""The scene generator: plans everything random up front from the seed, then renders any frame on its own.

Nothing depends on the order frames are asked for: the product and people plans are fixed at construction, each
product's picture comes from its own seeded generator, and per-frame noise is picked by frame index. A `Scene`
caches product sprites while they are on screen, which is what keeps a 720p frame at a few milliseconds."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_cv.scenes.codes import element_string, make_pairs, render_code
from edge_cv.scenes.people import PersonLook, draw_person, random_look
from edge_cv.scenes.products import DEFECTS_BY_SHAPE, ProductPlan, Sprite, render_product
from edge_cv.scenes.skus import SKUS, line_skus
from edge_cv.scenes.spec import SceneSpec
from edge_cv.scenes.truth import FrameTruth, PersonTruth, ProductTruth, SceneFrame, SceneLayout, SpillTruth

NOISE_BANKS = 4
SLAT_SPACING = 48
SPILL_COLOURS = ((228, 232, 232), (60, 140, 215), (45, 70, 160), (40, 75, 95))


@dataclass(frozen=True, slots=True)
class _Geometry:
    belt: tuple[int, int] | None  # belt band rows (y0, y1)
    horizon: int | None  # top row of the floor; None: no floor
    feet: tuple[float, float]  # rows where people's feet may be
    product_scale: float


@dataclass(frozen=True, slots=True)
class _Visit:
    id: int
    look: PersonLook
    times: tuple[float, ...]  # keyframe times (s)
    points: tuple[tuple[float, float], ...]  # feet position at each keyframe
    dist: tuple[float, ...]  # walked distance at each keyframe

    def at(self, t: float) -> tuple[float, float, float, bool]:
        """(x, y, walked distance, dwelling) at time t, which lies within the visit."""
        i = max(0, min(bisect.bisect_right(self.times, t) - 1, len(self.times) - 2))
        t0, t1 = self.times[i], self.times[i + 1]
        f = 0.0 if t1 <= t0 else min(1.0, max(0.0, (t - t0) / (t1 - t0)))
        (x0, y0), (x1, y1) = self.points[i], self.points[i + 1]
        dwelling = (x0, y0) == (x1, y1)
        return x0 + f * (x1 - x0), y0 + f * (y1 - y0), self.dist[i] + f * (self.dist[i + 1] - self.dist[i]), dwelling


def _geometry(spec: SceneSpec) -> _Geometry:
    h = spec.height
    if spec.kind == "conveyor":
        return _Geometry((int(0.18 * h), int(0.82 * h)), None, (0.0, 0.0), 1.0)
    if spec.kind == "floor":
        return _Geometry(None, int(0.28 * h), (0.52 * h, 0.97 * h), 1.0)
    return _Geometry((int(0.6 * h), int(0.96 * h)), int(0.15 * h), (0.36 * h, 0.56 * h), 0.8)


def scene_layout(spec: SceneSpec) -> SceneLayout:
    """Zones, count lines and belt band of a scene, in frame pixels: what a camera config for it would say."""
    g = _geometry(spec)
    w, h = spec.width, spec.height
    zones: dict[str, tuple[tuple[float, float], ...]] = {}
    lines: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}
    belt = None
    if g.belt is not None:
        y0, y1 = g.belt
        belt = (0.0, float(y0), float(w), float(y1))
        lines["centre"] = ((w / 2.0, float(y0)), (w / 2.0, float(y1)))
        zones["belt"] = ((0.0, float(y0)), (float(w), float(y0)), (float(w), float(y1)), (0.0, float(y1)))
    if g.horizon is not None:
        f0, f1 = g.feet
        top = float(g.horizon)
        bottom = float(g.belt[0]) if g.belt is not None else float(h)
        zones["floor"] = ((0.0, top), (float(w), top), (float(w), bottom), (0.0, bottom))
        wy0, wy1 = f0 + 0.05 * (f1 - f0), f0 + 0.55 * (f1 - f0)
        zones["workstation"] = ((0.62 * w, wy0), (0.95 * w, wy0), (0.95 * w, wy1), (0.62 * w, wy1))
    return SceneLayout(zones=zones, lines=lines, belt=belt, direction=spec.direction)


def _zone_of(layout: SceneLayout, p: tuple[float, float]) -> str | None:
    # Most specific first: a point in the workstation is also on the floor.
    for name in sorted(layout.zones, key=lambda n: _area(layout.zones[n])):
        poly = np.array(layout.zones[name], np.float32)
        if cv2.pointPolygonTest(poly, (float(p[0]), float(p[1])), False) >= 0:
            return name
    return None


def _area(poly) -> float:
    return abs(cv2.contourArea(np.array(poly, np.float32)))


class Scene:
    """A planned synthetic scene; `frame(i)` renders frame i, iteration renders them all in order."""

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        self.layout = scene_layout(spec)
        self._g = _geometry(spec)
        self._rng_bg = np.random.default_rng([spec.seed, 7])
        self._background = self._draw_background()
        self._products = self._plan_products() if self._g.belt is not None else []
        self._visits = self._plan_people() if self._g.horizon is not None and spec.people > 0 else []
        self._spill = self._plan_spill() if self._g.horizon is not None and spec.spill_at_s is not None else None
        self._background_spill = self._draw_spill() if self._spill is not None else None
        rng = np.random.default_rng([spec.seed, 9])
        self._noise: list[tuple[np.ndarray, np.ndarray]] = []
        if spec.noise_sigma > 0:
            for _ in range(NOISE_BANKS):
                n = rng.standard_normal((spec.height, spec.width, 3), dtype=np.float32) * spec.noise_sigma
                self._noise.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))
        self._light_phase = float(rng.uniform(0, 2 * math.pi))
        self._sprites: dict[int, Sprite] = {}

    # ---- planning -------------------------------------------------------------------------------------------
    def _plan_products(self) -> list[ProductPlan]:
        spec, g = self.spec, self._g
        assert g.belt is not None
        skus = line_skus(spec.line)
        sku = spec.sku or skus[0]
        look = SKUS[sku]
        foreign_skus = [s for s in SKUS if s != sku]
        y0, y1 = g.belt
        v = spec.belt_speed * spec.scale
        n_code = render_code(make_pairs(look.gtin, np.random.default_rng(0), spec.code_format), spec.module_px).shape[0]
        applicable = [d for d in DEFECTS_BY_SHAPE[look.shape] if d in spec.defects]
        stream = np.random.default_rng([spec.seed, 0])
        mean_gap = 60.0 / spec.product_rate if spec.product_rate > 0 else math.inf
        plans: list[ProductPlan] = []
        t = -(spec.width + 600 * spec.scale) / v  # start early so the belt is already busy at frame 0
        free_at = t
        while spec.product_rate > 0:
            t += float(stream.exponential(mean_gap))
            i = len(plans)
            rng = np.random.default_rng([spec.seed, 1, i])
            k = spec.scale * g.product_scale
            w = int(look.size[0] * k * rng.uniform(0.92, 1.08))
            h = int(look.size[1] * k * rng.uniform(0.92, 1.08))
            if look.shape == "bowl":
                w = h = max(w, h, int(n_code * 1.55))
            else:
                h = max(h, n_code + 14)
                w = max(w, int(n_code * 2.3))
            angle = float(rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg))
            rad = math.radians(angle)
            ext_w = w * abs(math.cos(rad)) + h * abs(math.sin(rad))
            ext_h = w * abs(math.sin(rad)) + h * abs(math.cos(rad))
            enter = max(t, free_at)
            if enter > spec.duration_s:
                break
            free_at = enter + (ext_w + 40 * spec.scale) / v
            slack = max(0.0, (y1 - y0) - ext_h - 12) / 2
            y = (y0 + y1) / 2 + float(rng.uniform(-1, 1)) * min(slack, 0.12 * (y1 - y0))
            defect = str(rng.choice(applicable)) if applicable and rng.random() < spec.defect_rate else None
            dup = None
            foreign = False
            if plans and rng.random() < spec.duplicate_rate:
                dup = int(rng.integers(max(0, i - 20), i))
                pairs = plans[dup].pairs
                foreign = plans[dup].foreign  # a copy of a foreign code carries the foreign GTIN too
            else:
                if foreign_skus and rng.random() < spec.foreign_rate:
                    foreign = True
                    gtin = SKUS[foreign_skus[int(rng.integers(len(foreign_skus)))]].gtin
                else:
                    gtin = look.gtin
                pairs = make_pairs(gtin, rng, spec.code_format)
            damaged = bool(rng.random() < spec.damaged_rate)
            tint = tuple(int(x) for x in rng.integers(-14, 15, 3))
            plans.append(ProductPlan(i, sku, enter, y, w, h, angle, float(rng.uniform(0.85, 1.12)), tint, defect,
                                     pairs, damaged, dup, foreign, (spec.seed, 2, i)))
            t = max(t, enter)
        return plans

    def _product_x(self, p: ProductPlan, t: float) -> tuple[float, float]:
        """(centre x, extent width) of a product at time t."""
        v = self.spec.belt_speed * self.spec.scale
        rad = math.radians(p.angle)
        ext_w = p.w * abs(math.cos(rad)) + p.h * abs(math.sin(rad))
        travelled = v * (t - p.enter_s) - ext_w / 2
        x = travelled if self.spec.direction == "ltr" else self.spec.width - travelled
        return x, ext_w

    def _cross_index(self, p: ProductPlan) -> int:
        v = self.spec.belt_speed * self.spec.scale
        _, ext_w = self._product_x(p, p.enter_s)
        tc = p.enter_s + (self.spec.width / 2 + ext_w / 2) / v
        return math.ceil(tc * self.spec.fps - 1e-9)

    def _height_at(self, fy: float) -> float:
        g, h = self._g, self.spec.height
        assert g.horizon is not None
        depth = (fy - g.horizon) / (h - g.horizon)
        return h * 0.42 * (0.45 + 0.55 * depth)

    def _plan_people(self) -> list[_Visit]:
        spec, g = self.spec, self._g
        w = spec.width
        f0, f1 = g.feet
        ws = self.layout.zones["workstation"]
        wx0, wy0, wx1, wy1 = ws[0][0], ws[0][1], ws[2][0], ws[2][1]
        visits: list[_Visit] = []
        for slot in range(spec.people):
            rng = np.random.default_rng([spec.seed, 3, slot])
            t = float(rng.uniform(0, 2.0)) if slot == 0 else float(rng.uniform(0, 8.0))
            while t < spec.duration_s:
                vid = len(visits)
                vr = np.random.default_rng([spec.seed, 4, slot, vid])
                look = random_look(vr, mask=bool(vr.random() >= spec.mask_off_rate),
                                   hairnet=bool(vr.random() < spec.hairnet_rate))
                speed = 150 * spec.scale * float(vr.uniform(0.8, 1.2))
                left = vr.random() < 0.5
                margin = 0.12 * w
                start = (-margin if left else w + margin, float(vr.uniform(f0, f1)))
                points = [start]
                pauses = [0.0]
                for _ in range(int(vr.integers(1, 3))):
                    if vr.random() < 0.6:
                        points.append((float(vr.uniform(wx0 + 20, wx1 - 20)), float(vr.uniform(wy0 + 5, wy1 - 5))))
                        pauses.append(float(vr.uniform(*spec.dwell_s)))
                    else:
                        points.append((float(vr.uniform(0.1 * w, 0.9 * w)), float(vr.uniform(f0, f1))))
                        pauses.append(float(vr.uniform(0.0, 1.0)))
                end_left = vr.random() < 0.5
                points.append((-margin if end_left else w + margin, float(vr.uniform(f0, f1))))
                pauses.append(0.0)
                times, pts, dist = [t], [points[0]], [0.0]
                for p, pause in zip(points[1:], pauses[1:]):
                    d = math.dist(pts[-1], p)
                    times.append(times[-1] + d / speed)
                    pts.append(p)
                    dist.append(dist[-1] + d)
                    if pause > 0:
                        times.append(times[-1] + pause)
                        pts.append(p)
                        dist.append(dist[-1])
                visits.append(_Visit(vid, look, tuple(times), tuple(pts), tuple(dist)))
                t = times[-1] + float(vr.uniform(0.5, 5.0))
        return visits

    def _plan_spill(self) -> tuple[np.ndarray, tuple[int, int, int], int]:
        spec, g = self.spec, self._g
        rng = np.random.default_rng([spec.seed, 5])
        f0, f1 = g.feet
        cx = float(rng.uniform(0.12, 0.45)) * spec.width
        cy = float(rng.uniform(f0 + 0.3 * (f1 - f0), f1 - 0.1 * (f1 - f0)))
        r = float(rng.uniform(70, 110)) * spec.scale * self._g.product_scale
        ang = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        rad = np.ones_like(ang)
        for k in range(2, 6):
            rad += rng.uniform(0.04, 0.16) * np.sin(k * ang + rng.uniform(0, 2 * math.pi))
        poly = np.stack([cx + r * rad * np.cos(ang), cy + 0.5 * r * rad * np.sin(ang)], axis=1)
        colour = SPILL_COLOURS[int(rng.integers(len(SPILL_COLOURS)))]
        appear = spec.start_ms + int(round(float(spec.spill_at_s) * 1000))  # type: ignore[arg-type]
        return poly, colour, appear

    # ---- drawing --------------------------------------------------------------------------------------------
    def _draw_background(self) -> np.ndarray:
        spec, g = self.spec, self._g
        w, h, s = spec.width, spec.height, spec.scale
        img = np.empty((h, w, 3), np.uint8)
        img[:] = (72, 76, 80)
        rng = self._rng_bg
        if g.horizon is not None:
            hz = g.horizon
            img[:hz] = (196, 204, 200)
            cv2.rectangle(img, (0, int(hz * 0.55)), (w, int(hz * 0.62)), (150, 160, 150), -1)
            dx = int(rng.uniform(0.1, 0.4) * w)
            cv2.rectangle(img, (dx, int(hz * 0.1)), (dx + int(0.09 * w), hz), (120, 130, 140), -1)
            bottom = g.belt[0] if g.belt is not None else h
            img[hz:bottom] = (118, 128, 120)
            vp = (w / 2, hz - 2.5 * h)
            for k in range(-12, 13):
                xb = w / 2 + k * 0.12 * w
                x_top = vp[0] + (xb - vp[0]) * ((hz - vp[1]) / (h - vp[1]))
                cv2.line(img, (int(x_top), hz), (int(xb), h), (105, 115, 108), 1, cv2.LINE_AA)
            y = float(hz)
            step = 18 * s
            while y < bottom:
                cv2.line(img, (0, int(y)), (w, int(y)), (105, 115, 108), 1, cv2.LINE_AA)
                step *= 1.25
                y += step
            zone = self.layout.zones["workstation"]
            (x0, y0), (x1, y1) = zone[0], zone[2]
            # The workbench stands just behind the workstation zone.
            bench_top = int(y0 - 0.3 * self._height_at(y0))
            cv2.rectangle(img, (int(x0), bench_top), (int(x1), int(y0 - 4)), (140, 140, 135), -1)
            cv2.rectangle(img, (int(x0), bench_top), (int(x1), bench_top + int(10 * s)), (185, 188, 185), -1)
            cv2.polylines(img, [np.array(zone, np.int32)], True, (40, 200, 235), max(2, int(4 * s)), cv2.LINE_AA)
            img[hz:bottom] = cv2.add(img[hz:bottom], rng.integers(0, 6, img[hz:bottom].shape, dtype=np.uint8))
        if g.belt is not None:
            y0, y1 = g.belt
            rail = max(4, int(16 * s))
            img[y0:y1] = (54, 56, 58)
            img[y0:y1] = cv2.add(img[y0:y1], rng.integers(0, 8, img[y0:y1].shape, dtype=np.uint8))
            for yy in (y0 - rail, y1):
                cv2.rectangle(img, (0, yy), (w, yy + rail), (150, 156, 160), -1)
                for x in range(int(40 * s), w, int(120 * s)):
                    cv2.circle(img, (x, yy + rail // 2), max(2, rail // 4), (95, 100, 105), -1, cv2.LINE_AA)
        return img

    def _draw_spill(self) -> np.ndarray:
        assert self._spill is not None
        poly, colour, _ = self._spill
        img = self._background.copy()
        pts = poly.round().astype(np.int32)
        overlay = img.copy()
        cv2.fillPoly(overlay, [pts], colour, cv2.LINE_AA)
        cv2.addWeighted(overlay, 0.78, img, 0.22, 0, dst=img)
        cv2.polylines(img, [pts], True, tuple(int(c * 0.75) for c in colour), 2, cv2.LINE_AA)
        cx, cy = poly.mean(axis=0)
        rx = (poly[:, 0].max() - poly[:, 0].min()) / 2
        ry = (poly[:, 1].max() - poly[:, 1].min()) / 2
        cv2.ellipse(img, (int(cx - 0.3 * rx), int(cy - 0.3 * ry)), (int(rx * 0.25), int(ry * 0.15)), -15, 0, 360,
                    (250, 250, 250), -1, cv2.LINE_AA)
        return img

    # ---- rendering ------------------------------------------------------------------------------------------
    def frame(self, index: int) -> SceneFrame:
        """Render frame `index` (0-based) and its ground truth."""
        spec = self.spec
        if not 0 <= index < spec.frame_count:
            raise IndexError(f"frame {index} outside 0..{spec.frame_count - 1}")
        t = index / spec.fps
        time_ms = spec.time_ms(index)
        w, h = spec.width, spec.height
        spill_truth = None
        if self._spill is not None and time_ms >= self._spill[2]:
            img = self._background_spill.copy()  # type: ignore[union-attr]
            poly = self._spill[0]
            spill_truth = SpillTruth(
                tuple((float(x), float(y)) for x, y in poly),
                (float(poly[:, 0].min()), float(poly[:, 1].min()), float(poly[:, 0].max()), float(poly[:, 1].max())),
                self._spill[2], _zone_of(self.layout, tuple(poly.mean(axis=0))),
            )
        else:
            img = self._background.copy()
        if self._g.belt is not None:
            y0, y1 = self._g.belt
            step = SLAT_SPACING * spec.scale
            shift = (spec.belt_speed * spec.scale * t) % step
            x = shift if spec.direction == "ltr" else step - shift
            while x < w:
                cv2.line(img, (int(x), y0), (int(x), y1 - 1), (40, 42, 44), max(1, int(3 * spec.scale)))
                x += step
        people = self._render_people(img, t)
        products, crossings, total = self._render_products(img, t, index)
        if spec.lighting > 0:
            gain = 1.0 + spec.lighting * math.sin(2 * math.pi * t / 23.0 + self._light_phase)
            cv2.convertScaleAbs(img, dst=img, alpha=gain)
        if self._noise:
            rng = np.random.default_rng([spec.seed, 8, index])
            a, b = rng.integers(0, NOISE_BANKS, 2)
            cv2.add(img, self._noise[a][0], dst=img)
            cv2.subtract(img, self._noise[b][1], dst=img)
        truth = FrameTruth(tuple(products), tuple(people), spill_truth, tuple(crossings), total)
        return SceneFrame(index, time_ms, img, truth)

    def _render_people(self, img: np.ndarray, t: float) -> list[PersonTruth]:
        w, h = self.spec.width, self.spec.height
        active = []
        for v in self._visits:
            if v.times[0] <= t <= v.times[-1]:
                x, y, d, dwelling = v.at(t)
                active.append((y, v, x, d, dwelling))
        out = []
        for y, v, x, d, dwelling in sorted(active, key=lambda a: (a[0], a[1].id)):
            ph = self._height_at(y)
            box = draw_person(img, (x, y), ph, d / (0.35 * ph) * math.pi, v.look, walking=not dwelling)
            clipped, vis = _clip(box, w, h)
            if vis <= 0:
                continue
            out.append(PersonTruth(v.id, clipped, vis, v.look.mask, v.look.hairnet, v.look.coat, (x, y), dwelling,
                                   _zone_of(self.layout, (x, y))))
        return out

    def _render_products(self, img: np.ndarray, t: float, index: int) -> tuple[list[ProductTruth], list[int], int]:
        spec = self.spec
        w, h = spec.width, spec.height
        out, crossings, total = [], [], 0
        alive = set()
        for p in self._products:
            ci = self._cross_index(p)
            if 1 <= ci <= index:
                total += 1
            x, ext_w = self._product_x(p, t)
            if x + ext_w / 2 + 2 < 0 or x - ext_w / 2 - 2 > w:
                continue
            alive.add(p.id)
            sprite = self._sprites.get(p.id)
            if sprite is None:
                sprite = self._sprites[p.id] = render_product(p, spec.module_px)
            sh, sw = sprite.image.shape[:2]
            left, top = int(round(x - sw / 2)), int(round(p.y - sh / 2))
            fx0, fy0, fx1, fy1 = max(0, left), max(0, top), min(w, left + sw), min(h, top + sh)
            if fx1 <= fx0 or fy1 <= fy0:
                continue
            region = img[fy0:fy1, fx0:fx1]
            np.copyto(region, sprite.image[fy0 - top : fy1 - top, fx0 - left : fx1 - left],
                      where=sprite.mask[fy0 - top : fy1 - top, fx0 - left : fx1 - left])
            box, vis = _clip((left, top, left + sw, top + sh), w, h)
            cb = sprite.code_box
            code_box = (cb[0] + left, cb[1] + top, cb[2] + left, cb[3] + top)
            inside = code_box[0] >= 0 and code_box[1] >= 0 and code_box[2] <= w and code_box[3] <= h
            crossed = ci == index and index >= 1
            if crossed:
                crossings.append(p.id)
            out.append(ProductTruth(p.id, p.sku, box, vis, p.defect is not None, p.defect, element_string(p.pairs),
                                    code_box if inside else None, p.code_damaged, p.duplicate_of, p.foreign, crossed))
        for pid in [k for k in self._sprites if k not in alive]:
            del self._sprites[pid]
        return out, crossings, total

    def __iter__(self) -> Iterator[SceneFrame]:
        for i in range(self.spec.frame_count):
            yield self.frame(i)


def _clip(box, w: int, h: int) -> tuple[tuple[float, float, float, float], float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    area = max(1e-6, (x1 - x0) * (y1 - y0))
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
    vis = max(0.0, cx1 - cx0) * max(0.0, cy1 - cy0) / area
    return (cx0, cy0, cx1, cy1), vis


def generate(spec: SceneSpec) -> Iterator[SceneFrame]:
    """Frames of the scene in order, each with its ground truth."""
    return iter(Scene(spec))


def write_video(spec: SceneSpec, path: str | Path) -> int:
    """Write the scene to a video file (.avi: MJPG, .mp4: mp4v); returns the number of frames written."""
    path = Path(path)
    fourcc = {".avi": "MJPG", ".mp4": "mp4v"}.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"write_video supports .avi (MJPG) and .mp4 (mp4v), not {path.suffix!r}")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), spec.fps, (spec.width, spec.height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open a {fourcc} writer for {path} — check the folder exists")
    n = 0
    try:
        for frame in generate(spec):
            writer.write(frame.image)
            n += 1
    finally:
        writer.release()
    return n
