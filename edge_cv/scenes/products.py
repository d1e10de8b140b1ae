"""Top-down pictures of products as the verifier camera sees them: drawn once per product as a sprite (picture +
mask + where its code sits), then pasted on the belt every frame, which keeps a 720p frame at a few milliseconds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_cv.scenes.codes import Pairs, damage_code, render_code
from edge_cv.scenes.skus import SKUS

DEFECTS_BY_SHAPE = {
    "bar": ("torn", "crushed"), "pouch": ("torn", "crushed"), "bowl": ("torn", "crushed", "missing_lid"),
}
OAT = (120, 170, 205)


@dataclass(frozen=True, slots=True)
class ProductPlan:
    """Everything random about one product, drawn up front so any frame can be rendered on its own."""

    id: int
    sku: str
    enter_s: float
    y: float  # centre line of the product across the belt, pixels
    w: int
    h: int
    angle: float
    gain: float
    tint: tuple[int, int, int]
    defect: str | None
    pairs: Pairs
    code_damaged: bool
    duplicate_of: int | None
    foreign: bool
    seed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Sprite:
    image: np.ndarray  # BGR
    mask: np.ndarray  # bool (h, w, 1)
    code_box: tuple[float, float, float, float]  # in sprite pixels


def _shade(colour: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * k, 0, 255)) for c in colour)  # type: ignore[return-value]


def _jagged(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, n: int = 18) -> np.ndarray:
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    rad = rng.uniform(0.45, 1.0, n)
    pts = np.stack([cx + rx * rad * np.cos(ang), cy + ry * rad * np.sin(ang)], axis=1)
    return pts.round().astype(np.int32)


def _rounded_rect(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, r: int, colour, thickness: int = -1) -> None:
    r = max(1, min(r, (x1 - x0) // 2, (y1 - y0) // 2))
    if thickness < 0:
        cv2.rectangle(img, (x0 + r, y0), (x1 - r, y1), colour, -1)
        cv2.rectangle(img, (x0, y0 + r), (x1, y1 - r), colour, -1)
        for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_AA)


def _crush(img: np.ndarray, rng: np.random.Generator, x0: int, y0: int, x1: int, y1: int, bg: np.ndarray) -> None:
    """A dent pressed into the top edge with creases running from it."""
    w, h = x1 - x0, y1 - y0
    dx = int(x0 + w * rng.uniform(0.3, 0.6))
    half = int(w * rng.uniform(0.12, 0.18))
    depth = int(h * rng.uniform(0.3, 0.42))
    dent = np.array([[dx - half, y0 - 2], [dx + half, y0 - 2], [dx + half // 3, y0 + depth],
                     [dx - half // 4, y0 + depth]])
    cv2.fillPoly(img, [dent.astype(np.int32)], (0, 0, 0))
    bg[...] = img.any(axis=2, keepdims=True) & bg  # the dent is a hole in the outline
    tip = (dx, y0 + depth)
    for _ in range(4):
        end = (int(tip[0] + rng.uniform(-0.35, 0.35) * w), int(y0 + h * rng.uniform(0.75, 1.0)))
        cv2.line(img, tip, end, (25, 25, 25), max(2, h // 40), cv2.LINE_AA)
    shadow = np.array([[tip[0] - half, tip[1]], [tip[0] + half, tip[1]], [tip[0] + half // 2, y1 - 4],
                       [tip[0] - half // 2, y1 - 4]])
    overlay = img.copy()
    cv2.fillPoly(overlay, [shadow.astype(np.int32)], (20, 20, 20))
    cv2.addWeighted(overlay, 0.35, img, 0.65, 0, dst=img)


def _tear(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, inside) -> None:
    """A ragged hole showing what is inside, with the torn film's light edge."""
    poly = _jagged(rng, cx, cy, rx, ry)
    cv2.fillPoly(img, [poly], inside, cv2.LINE_AA)
    for _ in range(25):
        p = (int(cx + rng.uniform(-0.6, 0.6) * rx), int(cy + rng.uniform(-0.6, 0.6) * ry))
        c = _shade(inside, rng.uniform(0.55, 0.8))
        cv2.circle(img, p, int(rng.integers(1, 4)), c, -1)
    cv2.polylines(img, [poly], True, (235, 235, 240), 3, cv2.LINE_AA)


def _code_label(img: np.ndarray, code: np.ndarray, x0: int, y0: int) -> tuple[float, float, float, float]:
    n = code.shape[0]
    img[y0 : y0 + n, x0 : x0 + n] = code[:, :, None]
    return (x0, y0, x0 + n, y0 + n)


def render_product(plan: ProductPlan, module_px: int) -> Sprite:
    """Draw one product (defect, code, tint, lighting and rotation included)."""
    look = SKUS[plan.sku]
    rng = np.random.default_rng(plan.seed)
    code = render_code(plan.pairs, module_px)
    if plan.code_damaged:
        code = damage_code(code, module_px, rng)
    n = code.shape[0]
    w, h = plan.w, plan.h
    m = 4
    canvas = np.zeros((h + 2 * m, w + 2 * m, 3), np.uint8)
    x0, y0, x1, y1 = m, m, m + w - 1, m + h - 1
    colour = tuple(int(np.clip(c + t, 0, 255)) for c, t in zip(look.colour, plan.tint))
    accent = look.accent
    if look.shape in ("bar", "pouch"):
        if look.shape == "bar":
            _rounded_rect(canvas, x0, y0, x1, y1, int(h * 0.12), colour)
            seal = int(w * 0.07)
            for sx0, sx1 in ((x0, x0 + seal), (x1 - seal, x1)):
                cv2.rectangle(canvas, (sx0, y0 + 3), (sx1, y1 - 3), _shade(colour, 1.18), -1)
                for yy in range(y0 + 6, y1 - 6, max(4, h // 18)):
                    cv2.line(canvas, (sx0 + 2, yy), (sx1 - 2, yy), _shade(colour, 0.7), 1)
            cv2.rectangle(canvas, (x0 + seal, int(y1 - h * 0.28)), (x1 - seal, int(y1 - h * 0.12)), accent, -1)
            cv2.ellipse(canvas, (int(x0 + w * 0.3), int(y0 + h * 0.42)), (int(w * 0.13), int(h * 0.22)), 0, 0, 360,
                        accent, -1, cv2.LINE_AA)
            cv2.line(canvas, (x0 + seal, int(y0 + h * 0.1)), (x1 - seal, int(y0 + h * 0.1)), _shade(colour, 1.35),
                     max(2, h // 25), cv2.LINE_AA)
            cx_code = int(x1 - seal - n - w * 0.04)
        else:
            _rounded_rect(canvas, x0, y0, x1, y1, int(h * 0.08), colour)
            cv2.rectangle(canvas, (x0, y0), (x1, int(y0 + h * 0.12)), _shade(colour, 0.8), -1)
            cv2.ellipse(canvas, (int(x0 + w * 0.3), int(y0 + h * 0.55)), (int(w * 0.18), int(h * 0.28)), 0, 0, 360,
                        accent, -1, cv2.LINE_AA)
            for _ in range(30):
                p = (int(x0 + w * 0.3 + rng.uniform(-0.13, 0.13) * w), int(y0 + h * 0.55 + rng.uniform(-0.2, 0.2) * h))
                cv2.circle(canvas, p, 3, _shade(OAT, rng.uniform(0.6, 1.1)), -1)
            cx_code = int(x1 - n - w * 0.06)
        cy_code = int(y0 + (h - n) / 2)
        code_at = (cx_code, cy_code)
        body = canvas.any(axis=2, keepdims=True)
        if plan.defect == "torn":
            _tear(canvas, rng, x0 + w * rng.uniform(0.2, 0.4), y0 + h * rng.uniform(0.4, 0.6), w * 0.14, h * 0.32, OAT)
        elif plan.defect == "crushed":
            _crush(canvas, rng, x0, y0, x1, y1, body)
    else:  # bowl, seen from above: contents, sleeve band with the code, clear lid
        cx, cy, rx, ry = (x0 + x1) // 2, (y0 + y1) // 2, w // 2, h // 2
        if plan.defect == "crushed":
            ry = int(ry * 0.8)
        cv2.ellipse(canvas, (cx, cy), (rx, ry), 0, 0, 360, (200, 205, 205), -1, cv2.LINE_AA)
        cv2.ellipse(canvas, (cx, cy), (rx - 6, ry - 6), 0, 0, 360, colour, -1, cv2.LINE_AA)
        for _ in range(60):
            p = (int(cx + rng.uniform(-0.75, 0.75) * rx), int(cy + rng.uniform(-0.75, 0.75) * ry))
            kind = rng.random()
            if kind < 0.15:
                c = (40, 60, 200)  # tomato
            elif kind < 0.25:
                c = (40, 200, 230)  # corn
            else:
                c = _shade(colour, rng.uniform(0.6, 1.3))
            cv2.ellipse(canvas, p, (int(rng.integers(6, 18)), int(rng.integers(4, 10))), float(rng.uniform(0, 180)),
                        0, 360, c, -1)
        mask_bowl = np.zeros(canvas.shape[:2], np.uint8)
        cv2.ellipse(mask_bowl, (cx, cy), (rx - 6, ry - 6), 0, 0, 360, 255, -1)
        canvas[mask_bowl == 0] = 0
        cv2.ellipse(canvas, (cx, cy), (rx, ry), 0, 0, 360, (200, 205, 205), 5, cv2.LINE_AA)
        band = max(int(w * 0.42), n + 16)
        sleeve = canvas.copy()
        cv2.rectangle(sleeve, (cx - band // 2, 0), (cx + band // 2, canvas.shape[0]), accent, -1)
        canvas = np.where(canvas.any(axis=2, keepdims=True), sleeve, canvas)
        code_at = (cx - n // 2, cy - n // 2)
        if plan.defect == "torn":
            _tear(canvas, rng, cx + rng.choice([-1, 1]) * band * 0.45, cy + ry * rng.uniform(-0.3, 0.3),
                  band * 0.35, ry * 0.4, _shade(colour, 0.45))
        if plan.defect != "missing_lid":
            lid = canvas.copy()
            cv2.ellipse(lid, (cx, cy), (rx, ry), 0, 0, 360, (250, 250, 250), -1, cv2.LINE_AA)
            cv2.addWeighted(lid, 0.18, canvas, 0.82, 0, dst=canvas)
            cv2.ellipse(canvas, (cx, cy), (rx - 2, ry - 2), 0, 0, 360, (245, 248, 250), 7, cv2.LINE_AA)
            cv2.ellipse(canvas, (cx, cy), (rx - 16, ry - 16), 0, 0, 360, (230, 235, 235), 3, cv2.LINE_AA)
            cv2.ellipse(canvas, (cx - rx // 4, cy - ry // 4), (rx // 2, ry // 2), 0, 200, 260, (255, 255, 255), 5,
                        cv2.LINE_AA)
        else:
            cv2.ellipse(canvas, (cx, cy), (rx - 5, ry - 5), 0, 0, 360, (90, 95, 95), 2, cv2.LINE_AA)
        if plan.defect == "crushed":
            for _ in range(4):
                a, b = rng.uniform(0, 2 * math.pi, 2)
                p1 = (int(cx + 0.9 * rx * math.cos(a)), int(cy + 0.9 * ry * math.sin(a)))
                p2 = (int(cx + 0.3 * rx * math.cos(b)), int(cy + 0.3 * ry * math.sin(b)))
                cv2.line(canvas, p1, p2, (30, 30, 30), 5, cv2.LINE_AA)
        body = np.zeros(canvas.shape[:2] + (1,), bool)
        mb = np.zeros(canvas.shape[:2], np.uint8)
        cv2.ellipse(mb, (cx, cy), (rx, ry), 0, 0, 360, 255, -1)
        body[..., 0] = mb > 0
    # The label goes on last: defects damage the pack, and whether the code is readable is `code_damaged`'s job.
    code_box = _code_label(canvas, code, *code_at)
    body[code_at[1] : code_at[1] + n, code_at[0] : code_at[0] + n] = True
    canvas = cv2.convertScaleAbs(canvas, alpha=plan.gain)
    return _rotate(canvas, body, code_box, plan.angle)


def _rotate(img: np.ndarray, body: np.ndarray, code_box, angle: float) -> Sprite:
    h, w = img.shape[:2]
    rad = math.radians(angle)
    nw = int(math.ceil(w * abs(math.cos(rad)) + h * abs(math.sin(rad)))) + 2
    nh = int(math.ceil(w * abs(math.sin(rad)) + h * abs(math.cos(rad)))) + 2
    mat = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    mat[0, 2] += (nw - w) / 2
    mat[1, 2] += (nh - h) / 2
    out = cv2.warpAffine(img, mat, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    m = cv2.warpAffine(body.astype(np.uint8) * 255, mat, (nw, nh), flags=cv2.INTER_LINEAR) > 127
    ys, xs = np.nonzero(m)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    x0, y0, x1, y1 = code_box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], float) @ mat.T
    cb = (corners[:, 0].min() - left, corners[:, 1].min() - top, corners[:, 0].max() - left, corners[:, 1].max() - top)
    return Sprite(out[top:bottom, left:right].copy(), m[top:bottom, left:right, None].copy(), cb)
