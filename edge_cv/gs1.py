"""GS1 element strings as printed in Chestny ZNAK DataMatrix codes: composing them (for the synthetic scenes and
tests) and, see `parse`, reading them back. FNC1/GS is 0x1D; AI (01) GTIN-14 is fixed-length, (21) serial and the
crypto tail are variable-length and end with GS unless they come last.

`parse` turns the text a scanner returns into ordered (AI, value) pairs and checks each value against the GS1 AI
table (length, digits, check digit, dates). `check_chestny_znak` then checks the structure Chestny ZNAK prescribes.
Both are offline checks of *structure* only: the crypto tail ((92) signature or (93) check code) is verified by the
operator's (CRPT) servers against the issued code list, which no camera can do offline.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from hub.errors import PlantbusError

GS = "\x1d"


def gtin_check_digit(body: str) -> int:
    """GS1 mod-10 check digit of the digits before it (weights 3,1,3,… from the right)."""
    if not body.isdigit():
        raise ValueError(f"GTIN body must be digits, got {body!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def make_gtin14(body13: str) -> str:
    """A GTIN-14 from its first 13 digits."""
    return body13 + str(gtin_check_digit(body13))


def compose(gtin: str, serial: str, key_id: str = "", crypto: str = "", *, extra: list[tuple[str, str]] = ()) -> str:
    """The element string of a Chestny ZNAK code: (01)(21) GS (91) GS (92), then any `extra` (ai, value) pairs.
    Fixed-length AIs need no separator after them; variable-length ones get GS unless they come last."""
    parts: list[tuple[str, str]] = [("01", gtin), ("21", serial)]
    if key_id:
        parts.append(("91", key_id))
    if crypto:
        parts.append(("92", crypto))
    parts.extend(extra)
    return compose_elements(parts)


def compose_elements(parts: Iterable[tuple[str, str]]) -> str:
    """The element string of any (ai, value) pairs in order, GS after each variable-length value but the last."""
    parts = list(parts)
    out = []
    for i, (ai, value) in enumerate(parts):
        out.append(ai + value)
        if predefined_length(ai) is None and i < len(parts) - 1:
            out.append(GS)
    return "".join(out)


# AIs with a predefined length (GS1 General Specifications, figure 5.10.1-2), value length excluding the AI.
FIXED_LENGTH: dict[str, int] = {
    "00": 18, "01": 14, "02": 14, "03": 14, "04": 16,
    "11": 6, "12": 6, "13": 6, "14": 6, "15": 6, "16": 6, "17": 6, "18": 6, "19": 6, "20": 2,
}  # fmt: skip
# Two-digit prefixes of 3- and 4-digit AIs whose whole element has a predefined length (AI + value), same figure:
# 31nn–36nn are 4+6, 41n is 3+13. Only these, and the AIs above, may be followed by the next AI without a GS.
_PREDEFINED_PREFIX_TOTAL: dict[str, int] = {"31": 10, "32": 10, "33": 10, "34": 10, "35": 10, "36": 10, "41": 16}


def predefined_length(ai: str) -> int | None:
    """The value length of an AI that needs no GS after it, or None if its value must be GS-terminated."""
    if ai in FIXED_LENGTH:
        return FIXED_LENGTH[ai]
    total = _PREDEFINED_PREFIX_TOTAL.get(ai[:2])
    return None if total is None else total - len(ai)


# ---------------------------------------------------------------------------------------------------------------
# The AI table: the AIs a food plant's codes carry (GS1 General Specifications §3, Chestny ZNAK additions 91–93).

Charset = Literal["N", "X"]


@dataclass(frozen=True, slots=True)
class AiSpec:
    """One application identifier: its data title, charset (N digits / X GS1 charset 82) and value length."""

    ai: str
    title: str
    charset: Charset
    min_len: int
    max_len: int
    check_digit: bool = False
    date: bool = False

    @property
    def fixed(self) -> bool:
        """True when the value needs no GS after it (GS1's predefined-length AIs)."""
        return predefined_length(self.ai) is not None


def _ai_table() -> dict[str, AiSpec]:
    specs = [
        AiSpec("00", "SSCC", "N", 18, 18, check_digit=True),
        AiSpec("01", "GTIN", "N", 14, 14, check_digit=True),
        AiSpec("02", "CONTENT", "N", 14, 14, check_digit=True),
        AiSpec("10", "BATCH/LOT", "X", 1, 20),
        AiSpec("11", "PROD DATE", "N", 6, 6, date=True),
        AiSpec("12", "DUE DATE", "N", 6, 6, date=True),
        AiSpec("13", "PACK DATE", "N", 6, 6, date=True),
        AiSpec("15", "BEST BEFORE", "N", 6, 6, date=True),
        AiSpec("16", "SELL BY", "N", 6, 6, date=True),
        AiSpec("17", "USE BY OR EXPIRY", "N", 6, 6, date=True),
        AiSpec("20", "VARIANT", "N", 2, 2),
        AiSpec("21", "SERIAL", "X", 1, 20),
        AiSpec("22", "CPV", "X", 1, 20),
        AiSpec("240", "ADDITIONAL ID", "X", 1, 30),
        AiSpec("241", "CUST. PART No.", "X", 1, 30),
        AiSpec("250", "SECONDARY SERIAL", "X", 1, 30),
        AiSpec("30", "VAR. COUNT", "N", 1, 8),
        AiSpec("37", "COUNT", "N", 1, 8),
        AiSpec("400", "ORDER NUMBER", "X", 1, 30),
        AiSpec("7003", "EXPIRY TIME", "N", 10, 10),
        AiSpec("8005", "PRICE PER UNIT", "N", 6, 6),
        AiSpec("90", "INTERNAL", "X", 1, 30),
    ]
    # (91)–(99) are company-internal in GS1; Chestny ZNAK uses 91 key id, 92 signature, 93 check code.
    specs += [AiSpec(f"9{d}", "INTERNAL", "X", 1, 90) for d in range(1, 10)]
    # Trade measures 310n–369n (n = implied decimals), e.g. 3103 net weight in kg with 3 decimals: six digits.
    measures = {"10": "NET WEIGHT (kg)", "20": "NET WEIGHT (lb)", "30": "GROSS WEIGHT (kg)"}
    specs += [AiSpec(f"3{t}{d}", measures.get(f"{t}", "MEASURE"), "N", 6, 6) for t in range(10, 70) for d in range(6)]
    specs += [AiSpec(f"39{t}{d}", "AMOUNT", "N", 1, 15) for t in (0, 2) for d in range(10)]
    specs += [AiSpec(f"41{d}", "GLN", "N", 13, 13, check_digit=True) for d in range(6)]
    return {s.ai: s for s in specs}


AI_TABLE: dict[str, AiSpec] = _ai_table()

# GS1 AI encodable character set 82 (General Specifications figure 7.11-1).
CSET82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")


# ---------------------------------------------------------------------------------------------------------------
# Errors


class Gs1Error(PlantbusError, ValueError):
    """A code's text is not a valid GS1 element string; `position` is the character offset, `ai` the AI at fault."""

    def __init__(self, message: str, *, ai: str | None = None, position: int | None = None) -> None:
        super().__init__(message)
        self.ai = ai
        self.position = position

    @property
    def code(self) -> str:
        """A stable short name for counters and event payloads, e.g. `bad_check_digit`."""
        return _CODES.get(type(self), "gs1_error")


class EmptyCodeError(Gs1Error):
    """The scanner returned no data after the symbology identifier."""


class UnknownAiError(Gs1Error):
    """Digits where an AI should start that are no AI of the table."""


class TruncatedError(Gs1Error):
    """The data ends inside an AI or a fixed-length value, or an AI has no value."""


class MissingSeparatorError(Gs1Error):
    """A variable-length value runs past its maximum length: the GS that should end it is missing."""


class NonDigitError(Gs1Error):
    """A numeric AI's value holds something other than digits."""


class InvalidCharacterError(Gs1Error):
    """An alphanumeric value holds a character outside GS1 charset 82."""


class CheckDigitError(Gs1Error):
    """A GTIN/SSCC/GLN check digit does not match its body."""


class DateError(Gs1Error):
    """A YYMMDD date AI holds no real date."""


class RepeatedAiError(Gs1Error):
    """The same AI occurs twice with different values."""


class ChestnyZnakError(Gs1Error):
    """The element string parses as GS1 but lacks the structure Chestny ZNAK prescribes; `problems` lists why."""

    def __init__(self, problems: list[str], *, ai: str | None = None) -> None:
        super().__init__("not a Chestny ZNAK code: " + "; ".join(problems), ai=ai)
        self.problems = tuple(problems)


_CODES: dict[type, str] = {
    EmptyCodeError: "empty",
    UnknownAiError: "unknown_ai",
    TruncatedError: "truncated",
    MissingSeparatorError: "missing_separator",
    NonDigitError: "non_digit",
    InvalidCharacterError: "invalid_character",
    CheckDigitError: "bad_check_digit",
    DateError: "bad_date",
    RepeatedAiError: "repeated_ai",
    ChestnyZnakError: "not_chestny_znak",
}


# ---------------------------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, slots=True)
class Gs1Element:
    """A parsed GS1 element string: its (AI, value) pairs in printed order and the symbology id it came with."""

    elements: tuple[tuple[str, str], ...]
    symbology: str = ""

    def get(self, ai: str, default: str | None = None) -> str | None:
        """The value of `ai`, or `default` when the code does not carry it."""
        for key, value in self.elements:
            if key == ai:
                return value
        return default

    def __getitem__(self, ai: str) -> str:
        value = self.get(ai)
        if value is None:
            raise KeyError(ai)
        return value

    def __contains__(self, ai: object) -> bool:
        return any(key == ai for key, _ in self.elements)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.elements)

    @property
    def gtin(self) -> str | None:
        """(01) GTIN-14, if present."""
        return self.get("01")

    @property
    def serial(self) -> str | None:
        """(21) serial number, if present."""
        return self.get("21")

    @property
    def identity(self) -> str:
        """What makes a marking code unique: GTIN + serial (the crypto tail belongs to that pair, it adds nothing),
        or the whole element string for codes that carry no serial."""
        if self.gtin is not None and self.serial is not None:
            return f"01{self.gtin}21{self.serial}"
        return self.text

    @property
    def expiry(self) -> dt.date | None:
        """(17) as a date; day 00 means the last day of the month (GS1 §7.12)."""
        value = self.get("17")
        return None if value is None else yymmdd_to_date(value)

    @property
    def text(self) -> str:
        """The element string with GS separators, as `compose` builds it (no symbology id)."""
        return compose_elements(self.elements)

    def hri(self) -> str:
        """Human-readable interpretation, e.g. `(01)04601234567893(21)ABC…`."""
        return "".join(f"({ai}){value}" for ai, value in self.elements)


_SYMBOLOGY_ID = re.compile(r"^\][A-Za-z][0-9A-Za-z]")
# What keyboard-wedge scanners and libraries put for FNC1 when they do not send 0x1D.
_GS_ALIASES = ("<GS>", "\u241d", "\u2194")


def parse(text: str) -> Gs1Element:
    """Parse a scanner's GS1 text into AIs in order; raises a `Gs1Error` subclass saying what is wrong and where.

    Accepts a leading symbology identifier (`]d2`, `]C1`, `]Q3`), a leading FNC1 sent as GS, GS written as `<GS>`,
    and a superfluous GS after a predefined-length value (some printers emit one).
    """
    symbology = ""
    match = _SYMBOLOGY_ID.match(text)
    if match:
        symbology = match.group(0)
        text = text[match.end() :]
    for alias in _GS_ALIASES:
        text = text.replace(alias, GS)
    offset = len(symbology)
    while text.startswith(GS):
        text = text[1:]
        offset += 1
    if not text:
        raise EmptyCodeError("the code holds no data", position=offset)

    elements: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    pos = 0
    n = len(text)
    while pos < n:
        spec = _lookup_ai(text, pos, offset)
        ai = spec.ai
        start = pos + len(ai)
        fixed = predefined_length(ai)
        if fixed is not None:
            end = start + fixed
            if end > n:
                raise TruncatedError(
                    f"({ai}) {spec.title} needs {fixed} characters but the data ends after {n - start}",
                    ai=ai,
                    position=offset + start,
                )
            value = text[start:end]
            if GS in value:
                raise TruncatedError(
                    f"({ai}) {spec.title} needs {fixed} characters but a GS cuts it after {value.index(GS)}",
                    ai=ai,
                    position=offset + start,
                )
            pos = end
        else:
            end = text.find(GS, start)
            if end < 0:
                end = n
            value = text[start:end]
            pos = end
        if pos < n and text[pos] == GS:
            pos += 1
        _check_value(spec, value, offset + start)
        if ai in seen:
            if seen[ai] != value:
                raise RepeatedAiError(
                    f"({ai}) occurs twice with different values {seen[ai]!r} and {value!r}",
                    ai=ai,
                    position=offset + start,
                )
            continue
        seen[ai] = value
        elements.append((ai, value))
    return Gs1Element(tuple(elements), symbology)


def _lookup_ai(text: str, pos: int, offset: int) -> AiSpec:
    # GS1 AIs form a prefix-free code, so the first table hit of length 2, 3 or 4 is the only possible one.
    for length in (2, 3, 4):
        spec = AI_TABLE.get(text[pos : pos + length])
        if spec is not None:
            return spec
    head = text[pos : pos + 4]
    if head.isdigit() and len(head) < 4 and any(key.startswith(head) for key in AI_TABLE):
        raise TruncatedError(f"the data ends inside application identifier {head!r}", position=offset + pos)
    if not head[:2].isdigit():
        raise UnknownAiError(
            f"expected an application identifier at offset {offset + pos}, found {head!r}", position=offset + pos
        )
    raise UnknownAiError(
        f"unknown application identifier at offset {offset + pos}: {head!r} starts no AI in the GS1 table",
        position=offset + pos,
    )


def _check_value(spec: AiSpec, value: str, position: int) -> None:
    ai = spec.ai
    if not value:
        raise TruncatedError(f"({ai}) {spec.title} has no value", ai=ai, position=position)
    if spec.charset == "N":
        bad = next((i for i, c in enumerate(value) if not ("0" <= c <= "9")), None)
        if bad is not None:
            raise NonDigitError(
                f"({ai}) {spec.title} must be digits, found {value[bad]!r} at offset {position + bad}",
                ai=ai,
                position=position + bad,
            )
    else:
        bad = next((i for i, c in enumerate(value) if c not in CSET82), None)
        if bad is not None:
            raise InvalidCharacterError(
                f"({ai}) {spec.title} holds {value[bad]!r} at offset {position + bad}, outside GS1 charset 82",
                ai=ai,
                position=position + bad,
            )
    if len(value) > spec.max_len:
        # Only variable-length values get here: a fixed one was cut at its length.
        raise MissingSeparatorError(
            f"({ai}) {spec.title} is {len(value)} characters, longer than its maximum {spec.max_len}: "
            f"the GS separator that should end it is probably missing",
            ai=ai,
            position=position,
        )
    if len(value) < spec.min_len:
        raise TruncatedError(
            f"({ai}) {spec.title} is {len(value)} characters, shorter than its minimum {spec.min_len}",
            ai=ai,
            position=position,
        )
    if spec.check_digit:
        expected = gtin_check_digit(value[:-1])
        if int(value[-1]) != expected:
            raise CheckDigitError(
                f"({ai}) {spec.title} {value} has check digit {value[-1]}, expected {expected}",
                ai=ai,
                position=position,
            )
    if spec.date:
        try:
            yymmdd_to_date(value)
        except ValueError as exc:
            raise DateError(f"({ai}) {spec.title} {value} is not a date: {exc}", ai=ai, position=position) from None


def yymmdd_to_date(value: str, *, today: dt.date | None = None) -> dt.date:
    """A GS1 YYMMDD date; the century follows GS1 §7.12 (within −49/+50 years of today); day 00 = month's end."""
    if len(value) != 6 or not value.isdigit():
        raise ValueError(f"{value!r} is not YYMMDD")
    yy, month, day = int(value[:2]), int(value[2:4]), int(value[4:])
    if not 1 <= month <= 12:
        raise ValueError(f"month {month:02d} is not 01–12")
    today = today or dt.date.today()
    current = today.year % 100
    century = today.year - current
    diff = yy - current
    if 51 <= diff <= 99:
        century -= 100
    elif -99 <= diff <= -50:
        century += 100
    year = century + yy
    last = calendar.monthrange(year, month)[1]
    if day == 0:
        day = last
    if day > last:
        raise ValueError(f"day {day:02d} does not exist in {year}-{month:02d}")
    return dt.date(year, month, day)


# ---------------------------------------------------------------------------------------------------------------
# Chestny ZNAK structure

_BASE64ISH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
CRYPTO_LENGTHS = (44, 88)
SERIAL_RANGE = (6, 20)


def check_chestny_znak(element: Gs1Element, *, serial_lengths: Iterable[int] | None = None) -> None:
    """Raise `ChestnyZnakError` listing every way `element` departs from the Chestny ZNAK structure.

    (01) GTIN present (its check digit was checked by `parse`); (21) serial present, printable charset-82 text of
    6–20 characters, or exactly one of `serial_lengths` when the product group fixes it (13 for most groups,
    6 for dairy and water, 7 for tobacco); a crypto tail, either (91) key id of 4 characters with a (92) signature
    of 44 or 88 base64 characters, or a (93) check code of 4 characters. Structure only: whether the signature is
    genuine and the code was issued to this GTIN only the operator's servers can say, which no offline check can.
    """
    problems: list[str] = []
    if element.gtin is None:
        problems.append("(01) GTIN is missing")
    serial = element.serial
    if serial is None:
        problems.append("(21) serial is missing")
    else:
        allowed = sorted(set(serial_lengths)) if serial_lengths else None
        if allowed is not None and len(serial) not in allowed:
            problems.append(
                f"(21) serial is {len(serial)} characters, this product group uses {allowed}{_glued(serial, 'serial')}"
            )
        elif allowed is None and not SERIAL_RANGE[0] <= len(serial) <= SERIAL_RANGE[1]:
            problems.append(f"(21) serial is {len(serial)} characters, expected {SERIAL_RANGE[0]}–{SERIAL_RANGE[1]}")
        elif "91" not in element and "93" not in element and _glued(serial, "serial"):
            problems.append(f"(21) serial {serial!r} carries the crypto tail{_glued(serial, 'serial')}")
    key_id, crypto, check = element.get("91"), element.get("92"), element.get("93")
    if key_id is not None and len(key_id) != 4:
        hint = " (the GS after the key id is probably missing)" if key_id[4:6] == "92" else ""
        problems.append(f"(91) key id is {len(key_id)} characters, expected 4{hint}")
    if crypto is not None:
        if len(crypto) not in CRYPTO_LENGTHS:
            problems.append(f"(92) crypto signature is {len(crypto)} characters, expected 44 or 88")
        odd = sorted(set(crypto) - _BASE64ISH)
        if odd:
            problems.append(f"(92) crypto signature holds non-base64 characters {''.join(odd)!r}")
        if key_id is None:
            problems.append("(92) crypto signature comes without its (91) key id")
    if check is not None and len(check) != 4:
        problems.append(f"(93) check code is {len(check)} characters, expected 4")
    if crypto is None and check is None:
        problems.append("no crypto tail: expected (91)+(92) or (93)")
    if problems:
        raise ChestnyZnakError(problems, ai=None)


def _glued(serial: str, what: str) -> str:
    # A lost GS after the serial leaves "(91)xxxx" or "(93)xxxx" at its end: say so instead of only "too long".
    for k in range(SERIAL_RANGE[0], len(serial) - 5):
        if serial[k : k + 2] in ("91", "93") and len(serial) - k - 2 == 4:
            return f" (it ends with {serial[k:]!r}: the GS after the {what} is probably missing)"
    return ""


def parse_chestny_znak(text: str, *, serial_lengths: Iterable[int] | None = None) -> Gs1Element:
    """`parse` then `check_chestny_znak`: the element if the code is structurally a valid Chestny ZNAK code."""
    element = parse(text)
    check_chestny_znak(element, serial_lengths=serial_lengths)
    return element
