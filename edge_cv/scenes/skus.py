"""How the reference plant's SKUs look on camera, and the GTINs their codes carry. The GTINs are invented for the
scenes (prefix 460 = GS1 Russia), with valid check digits."""

from __future__ import annotations

from dataclasses import dataclass

from edge_cv.gs1 import make_gtin14


@dataclass(frozen=True, slots=True)
class SkuLook:
    line: str
    shape: str  # "bar" | "pouch" | "bowl"
    gtin: str
    size: tuple[int, int]  # nominal (width, height) in pixels at 720 p, top-down
    colour: tuple[int, int, int]  # main BGR colour: wrapper, pouch or salad base
    accent: tuple[int, int, int]  # print band / sleeve colour


SKUS: dict[str, SkuLook] = {
    "OB-40": SkuLook("oatbar", "bar", make_gtin14("0460700100001"), (330, 140), (40, 175, 235), (30, 70, 160)),
    "OB-40-CH": SkuLook("oatbar", "bar", make_gtin14("0460700100002"), (330, 140), (35, 65, 115), (60, 180, 230)),
    "GR-250": SkuLook("oatbar", "pouch", make_gtin14("0460700100003"), (250, 200), (110, 160, 200), (40, 110, 60)),
    "SB-300": SkuLook("salad", "bowl", make_gtin14("0460700200001"), (230, 230), (60, 170, 90), (90, 140, 185)),
    "SB-450": SkuLook("salad", "bowl", make_gtin14("0460700200002"), (260, 260), (50, 150, 80), (95, 150, 190)),
}


def line_skus(line: str) -> list[str]:
    """SKUs of one line, in table order."""
    return [s for s, look in SKUS.items() if look.line == line]
