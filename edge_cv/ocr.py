"""Printed date/batch text next to a marking code, read offline with Debian's tesseract (apt packages
`tesseract-ocr tesseract-ocr-rus`) through its command line, and checked against the code's (17) and (10).

tesseract runs as a subprocess per crop (~0.1–0.3 s here), so the marking rule reads only every n-th pack; it runs
on the pipeline thread, never in the event loop. No Python binding is needed (pytesseract only wraps the same call).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_cv.gs1 import Gs1Element
from hub.errors import PlantbusError


class OcrError(PlantbusError):
    """tesseract is missing, lacks a language, or failed on an image."""


class TesseractOcr:
    """Reads text from a crop with the tesseract command line; `lang` like `rus+eng` needs those traineddata."""

    def __init__(self, lang: str = "rus+eng", psm: int = 6, timeout_s: float = 5.0, binary: str = "tesseract"):
        self.lang = lang
        self.psm = psm
        self.timeout_s = timeout_s
        self.binary = binary

    def check(self) -> None:
        """Raise OcrError unless the binary and every language of `lang` are installed."""
        path = shutil.which(self.binary)
        if path is None:
            raise OcrError(
                f"OCR needs the {self.binary!r} program: install the Debian packages tesseract-ocr and "
                "tesseract-ocr-rus, or remove `ocr:` from the marking rule"
            )
        out = subprocess.run([path, "--list-langs"], capture_output=True, text=True, timeout=self.timeout_s)
        have = {line.strip() for line in (out.stdout + out.stderr).splitlines()[1:]}
        missing = [lang for lang in self.lang.split("+") if lang not in have]
        if missing:
            raise OcrError(
                f"tesseract lacks language data {missing}: install tesseract-ocr-{missing[0]} "
                f"(installed: {sorted(have) or 'none'})"
            )

    def read(self, image: np.ndarray) -> str:
        """The text tesseract finds in a BGR or grey crop (upscaled and binarised first)."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if gray.size == 0:
            return ""
        # tesseract reads best at ~30 px capital height; labels seen by a line camera are often smaller
        if gray.shape[0] < 120:
            scale = 120 / gray.shape[0]
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        ok, png = cv2.imencode(".png", binary)
        if not ok:
            raise OcrError("could not encode the crop for tesseract")
        try:
            done = subprocess.run(
                [self.binary, "stdin", "stdout", "-l", self.lang, "--psm", str(self.psm)],
                input=png.tobytes(),
                capture_output=True,
                timeout=self.timeout_s,
            )
        except FileNotFoundError:
            raise OcrError(f"{self.binary!r} not found: install tesseract-ocr and tesseract-ocr-rus") from None
        except subprocess.TimeoutExpired:
            raise OcrError(f"tesseract took longer than {self.timeout_s} s on a {gray.shape[1]}x{gray.shape[0]} crop")
        if done.returncode != 0:
            raise OcrError(f"tesseract failed ({done.returncode}): {done.stderr.decode(errors='replace')[-200:]}")
        return done.stdout.decode("utf-8", errors="replace").strip()


_DATE = re.compile(r"(?<!\d)(\d{1,2})\s?[./-]\s?(\d{1,2})\s?[./-]\s?(\d{4}|\d{2})(?!\d)")
# OCR confusions inside dates and batches on small print
_DIGIT_FIX = str.maketrans({"O": "0", "o": "0", "О": "0", "о": "0", "l": "1", "I": "1", "З": "3", "б": "6"})
# With rus+eng, a Latin batch letter often comes back as its Cyrillic twin (B-17 as В-17): compare as Latin.
_LATIN = str.maketrans(dict(zip("АВЕКМНОРСТХУ", "ABEKMHOPCTXY", strict=True)))


def _normal(text: str) -> str:
    return re.sub(r"\s+", "", text).upper().translate(_LATIN)


def find_dates(text: str) -> list[dt.date]:
    """Dates printed as DD.MM.YYYY / DD.MM.YY (also / or -), in the order they appear; impossible ones skipped."""
    out = []
    for m in _DATE.finditer(text.translate(_DIGIT_FIX)):
        day, month, year = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if year < 100:
            year += 2000
        try:
            out.append(dt.date(year, month, day))
        except ValueError:
            continue
    return out


@dataclass(frozen=True, slots=True)
class PrintCheck:
    """The printed text next to a code compared with what the code carries; None = nothing to compare."""

    text: str
    dates: tuple[dt.date, ...]
    expiry_matches: bool | None
    batch_matches: bool | None
    problems: tuple[str, ...] = field(default=())

    @property
    def mismatch(self) -> bool:
        """True when the print says something other than the code."""
        return bool(self.problems)


def check_print(text: str, element: Gs1Element) -> PrintCheck:
    """Compare OCR text with the code's (17) expiry and (10) batch.

    A date mismatch is only claimed when the print shows dates and none is the code's expiry (an unread print is
    not a mismatch: OCR misses are common on film). The batch must appear in the text, spaces and case ignored.
    """
    dates = tuple(find_dates(text))
    problems: list[str] = []
    expiry_ok: bool | None = None
    expiry = element.expiry
    if expiry is not None and dates:
        expiry_ok = expiry in dates
        if not expiry_ok:
            printed = ", ".join(d.strftime("%d.%m.%Y") for d in dates)
            problems.append(f"printed dates {printed} do not include the code's expiry {expiry:%d.%m.%Y}")
    batch_ok: bool | None = None
    batch = element.get("10")
    if batch is not None and text:
        printed, wanted = _normal(text), _normal(batch)
        batch_ok = wanted in printed or wanted.translate(_DIGIT_FIX) in printed.translate(_DIGIT_FIX)
        if not batch_ok:
            problems.append(f"the code's batch {batch!r} is not in the printed text")
    return PrintCheck(text, dates, expiry_ok, batch_ok, tuple(problems))
