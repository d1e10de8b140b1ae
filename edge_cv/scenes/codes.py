"""Chestny ZNAK code contents for the scenes and their GS1 DataMatrix pictures (made with zxing-cpp's encoder)."""

from __future__ import annotations

import string

import cv2
import numpy as np
import zxingcpp

from edge_cv.gs1 import compose

# GS1 AI encodable character set 82 without '[' ']' (never in it) so the bracketed encoder input stays unambiguous.
SERIAL_CHARS = string.ascii_letters + string.digits + "!\"%&'()*+,-./:;<=>?_"
CRYPTO_CHARS = string.ascii_letters + string.digits + "+/="
QUIET_MODULES = 2

Pairs = tuple[tuple[str, str], ...]


def _pick(rng: np.random.Generator, chars: str, n: int) -> str:
    return "".join(chars[i] for i in rng.integers(0, len(chars), n))


def make_pairs(gtin: str, rng: np.random.Generator, fmt: str) -> Pairs:
    """(AI, value) pairs of one code: long = (01)(21)13 (91)4 (92)44; short = (01)(21)6 (93)4."""
    if fmt == "long":
        return (("01", gtin), ("21", _pick(rng, SERIAL_CHARS, 13)), ("91", _pick(rng, SERIAL_CHARS[:62], 4)),
                ("92", _pick(rng, CRYPTO_CHARS, 44)))
    return (("01", gtin), ("21", _pick(rng, SERIAL_CHARS, 6)), ("93", _pick(rng, CRYPTO_CHARS, 4)))


def element_string(pairs: Pairs) -> str:
    """The string a reader returns (GS separators), built by `edge_cv.gs1.compose`."""
    d = dict(pairs)
    extra = [(ai, v) for ai, v in pairs if ai not in ("01", "21", "91", "92")]
    return compose(d["01"], d["21"], d.get("91", ""), d.get("92", ""), extra=extra)


def render_code(pairs: Pairs, module_px: int) -> np.ndarray:
    """Grey uint8 picture of the square GS1 DataMatrix, `module_px` pixels per module, with a 2-module quiet zone."""
    text = "".join(f"[{ai}]{value}" for ai, value in pairs)
    symbol = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.DataMatrix, gs1=True, forceSquare=True)
    modules = np.asarray(symbol.to_image(scale=1, add_quiet_zones=False), dtype=np.uint8)
    modules = np.pad(modules, QUIET_MODULES, constant_values=255)
    return np.kron(modules, np.ones((module_px, module_px), dtype=np.uint8))


def damage_code(img: np.ndarray, module_px: int, rng: np.random.Generator) -> np.ndarray:
    """A scuffed copy no reader can decode: the solid L finder is wiped out and an ink smear covers part of the
    data, the way a print head dropout plus a smudge ruins a real code."""
    out = img.copy()
    q = QUIET_MODULES * module_px
    size = out.shape[0]
    inner = size - 2 * q
    band = int(round(module_px * 1.6))
    # Wipe the whole left column and bottom row: with no L finder the symbol cannot even be located.
    out[q - 1 : size - q + 1, q - 1 : q + band] = 255
    out[size - q - band : size - q + 1, q - 1 : size - q + 1] = 255
    cx, cy = q + inner * rng.uniform(0.4, 0.65), q + inner * rng.uniform(0.3, 0.6)
    axes = (int(inner * rng.uniform(0.2, 0.3)), int(inner * rng.uniform(0.12, 0.2)))
    cv2.ellipse(out, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 20, -1, cv2.LINE_AA)
    return out
