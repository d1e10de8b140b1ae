"""Workers drawn from primitives, facing the camera: head with eyes, hair or a hair net, an optional face mask,
a work coat with sleeves, trousers and shoes. Legs and arms swing with the walking phase."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

COATS: dict[str, tuple[int, int, int]] = {"white": (232, 234, 236), "blue": (205, 160, 95), "green": (120, 165, 95)}
SKIN = ((150, 185, 225), (115, 150, 200), (80, 110, 160), (175, 205, 235))
HAIR = ((30, 30, 35), (40, 70, 110), (60, 100, 150), (150, 150, 150))


@dataclass(frozen=True, slots=True)
class PersonLook:
    coat: str
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    trousers: tuple[int, int, int]
    mask: bool
    hairnet: bool
    mask_colour: tuple[int, int, int]
    width: float  # body width factor


def random_look(rng: np.random.Generator, mask: bool, hairnet: bool) -> PersonLook:
    """A worker's appearance."""
    coat = str(rng.choice(list(COATS)))
    trousers = (55, 50, 45) if rng.random() < 0.6 else (225, 225, 225)
    mask_colour = (235, 205, 160) if rng.random() < 0.6 else (240, 240, 240)
    return PersonLook(coat, SKIN[rng.integers(len(SKIN))], HAIR[rng.integers(len(HAIR))], trousers, mask, hairnet,
                      mask_colour, float(rng.uniform(0.9, 1.12)))


def draw_person(img: np.ndarray, feet: tuple[float, float], height: float, phase: float, look: PersonLook,
                walking: bool) -> tuple[float, float, float, float]:
    """Draw a worker standing at `feet` (between the shoes), `height` pixels tall; returns the box (unclipped)."""
    fx, fy = feet
    h = height
    k = look.width
    swing = math.sin(phase) if walking else 0.0
    r = 0.075 * h
    head = (fx, fy - h + r)
    shoulder_y = fy - h + 2 * r + 0.03 * h
    hip_y = fy - 0.46 * h
    hem_y = fy - 0.3 * h
    coat = COATS[look.coat]
    edge = tuple(int(c * 0.7) for c in coat)
    lw = max(2, int(0.065 * h * k))
    xs: list[float] = []
    # Legs (behind the coat), then shoes.
    for side in (-1, 1):
        hip = (fx + side * 0.05 * h * k, hip_y)
        foot = (fx + side * 0.06 * h + side * swing * 0.07 * h, fy - 0.02 * h)
        cv2.line(img, _p(hip), _p(foot), look.trousers, lw, cv2.LINE_AA)
        cv2.ellipse(img, _p((foot[0] + side * 0.01 * h, fy - 0.012 * h)), (int(0.04 * h), max(1, int(0.015 * h))),
                    0, 0, 360, (25, 25, 25), -1, cv2.LINE_AA)
        xs += [foot[0] - 0.05 * h, foot[0] + 0.05 * h]
    # Arms swing against the legs.
    aw = max(2, int(0.05 * h * k))
    for side in (-1, 1):
        sh = (fx + side * 0.12 * h * k, shoulder_y + 0.02 * h)
        hand = (fx + side * (0.16 * h * k) - side * swing * 0.06 * h, fy - 0.48 * h)
        cv2.line(img, _p(sh), _p(hand), coat, aw, cv2.LINE_AA)
        cv2.circle(img, _p(hand), max(2, int(0.028 * h)), look.skin, -1, cv2.LINE_AA)
        xs += [hand[0] - 0.03 * h - aw / 2, hand[0] + 0.03 * h + aw / 2]
    body = np.array([
        [fx - 0.13 * h * k, shoulder_y], [fx + 0.13 * h * k, shoulder_y],
        [fx + 0.15 * h * k, hem_y], [fx - 0.15 * h * k, hem_y],
    ]).round().astype(np.int32)
    cv2.fillPoly(img, [body], coat, cv2.LINE_AA)
    cv2.polylines(img, [body], True, edge, max(1, int(0.008 * h)), cv2.LINE_AA)
    cv2.line(img, _p((fx, shoulder_y + 0.03 * h)), _p((fx, hem_y)), edge, max(1, int(0.006 * h)), cv2.LINE_AA)
    cv2.line(img, _p((fx, shoulder_y - 0.02 * h)), _p((fx, shoulder_y + 0.02 * h)), look.skin, max(2, int(0.04 * h)))
    # Head: face, eyes, then hair or a net over the top, then the mask over the lower face.
    cv2.circle(img, _p(head), int(r), look.skin, -1, cv2.LINE_AA)
    top = (look.hair if not look.hairnet else (235, 225, 215))
    cv2.ellipse(img, _p((head[0], head[1] - 0.25 * r)), (int(r * 1.05), int(r * 0.85)), 0, 180, 360, top, -1,
                cv2.LINE_AA)
    if look.hairnet:
        for i in range(-2, 3):
            top_pt, bottom_pt = (head[0] + i * 0.3 * r, head[1] - 1.05 * r), (head[0] + i * 0.35 * r, head[1] - 0.3 * r)
            cv2.line(img, _p(top_pt), _p(bottom_pt),
                     (205, 190, 175), 1, cv2.LINE_AA)
    eye_r = max(1, int(0.12 * r))
    for side in (-1, 1):
        cv2.circle(img, _p((head[0] + side * 0.38 * r, head[1] - 0.05 * r)), eye_r, (30, 30, 30), -1, cv2.LINE_AA)
    if look.mask:
        x0, y0 = head[0] - 0.72 * r, head[1] + 0.15 * r
        x1, y1 = head[0] + 0.72 * r, head[1] + 0.9 * r
        cv2.rectangle(img, _p((x0, y0)), _p((x1, y1)), look.mask_colour, -1, cv2.LINE_AA)
        for yy in (0.35, 0.6):
            cv2.line(img, _p((x0 + 2, y0 + yy * (y1 - y0))), _p((x1 - 2, y0 + yy * (y1 - y0))),
                     tuple(int(c * 0.85) for c in look.mask_colour), 1, cv2.LINE_AA)
        for side in (-1, 1):
            cv2.line(img, _p((head[0] + side * 0.72 * r, y0)), _p((head[0] + side * r, head[1] - 0.1 * r)),
                     (200, 200, 200), 1, cv2.LINE_AA)
    else:
        cv2.ellipse(img, _p((head[0], head[1] + 0.5 * r)), (int(0.3 * r), max(1, int(0.1 * r))), 0, 0, 360,
                    (60, 60, 140), -1, cv2.LINE_AA)
    xs += [fx - 0.16 * h * k, fx + 0.16 * h * k, head[0] - 1.05 * r, head[0] + 1.05 * r]
    return (min(xs), fy - h - 0.1 * r, max(xs), fy)


def _p(pt: tuple[float, float]) -> tuple[int, int]:
    return int(round(pt[0])), int(round(pt[1]))
