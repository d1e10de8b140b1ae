"""GS1 element strings: parsing valid codes, every error type, Chestny ZNAK structure, round trips with compose."""

from __future__ import annotations

import datetime as dt

import pytest

from edge_cv.gs1 import (
    AI_TABLE,
    GS,
    CheckDigitError,
    ChestnyZnakError,
    DateError,
    EmptyCodeError,
    Gs1Element,
    Gs1Error,
    InvalidCharacterError,
    MissingSeparatorError,
    NonDigitError,
    RepeatedAiError,
    TruncatedError,
    UnknownAiError,
    check_chestny_znak,
    compose,
    compose_elements,
    gtin_check_digit,
    make_gtin14,
    parse,
    parse_chestny_znak,
    predefined_length,
    yymmdd_to_date,
)
from hub.errors import PlantbusError

GTIN = make_gtin14("0460123456789")  # 04601234567893
CRYPTO44 = "MEUCIQDvbEfKZ0r8Q7Dq9s3mZ5FJ3o0n1Hk/5n+q2xW="  # base64-shaped, 44 characters
# Shapes printed on real packs (values made up): shoes/clothing/pharma use a 13-character serial with (91)+(92);
# dairy and water a 6-character serial with a 4-character (93); bottled water adds (17) expiry or (10) batch.
LONG_CODE = f"01{GTIN}21Q5e7!aB/c%2xY{GS}91EE07{GS}92{CRYPTO44}"
SHORT_CODE = f"01{GTIN}215'aXL8{GS}93dGVz"
DAIRY_WITH_DATES = f"01{GTIN}21abc123{GS}93Ab+/{GS}1726063010LOT-42"
WEIGHED = f"01{GTIN}21xyz789{GS}933a1F{GS}3103001250"


def test_check_digit_matches_published_gtins():
    assert gtin_check_digit("400638133393") == 1  # GTIN-13 4006381333931, the GS1 worked example
    assert gtin_check_digit("0460123456789") == 3
    assert make_gtin14("0000000000000") == "00000000000000"
    with pytest.raises(ValueError):
        gtin_check_digit("12a")


def test_parse_long_chestny_znak_code_keeps_order_and_values():
    element = parse(LONG_CODE)
    assert element.elements == (("01", GTIN), ("21", "Q5e7!aB/c%2xY"), ("91", "EE07"), ("92", CRYPTO44))
    assert element.gtin == GTIN and element.serial == "Q5e7!aB/c%2xY"
    assert element.identity == f"01{GTIN}21Q5e7!aB/c%2xY"
    check_chestny_znak(element)


def test_parse_short_code_with_check_code_93():
    element = parse_chestny_znak(SHORT_CODE, serial_lengths=[6])
    assert element["93"] == "dGVz" and element.serial == "5'aXL8"


def test_parse_reads_dates_batch_and_four_digit_weight_ai():
    element = parse(DAIRY_WITH_DATES)
    assert element["17"] == "260630" and element["10"] == "LOT-42"
    assert element.expiry == dt.date(2026, 6, 30)
    weighed = parse(WEIGHED)
    assert weighed["3103"] == "001250"  # 1.250 kg
    assert AI_TABLE["3103"].title == "NET WEIGHT (kg)"


def test_symbology_identifier_and_leading_fnc1_are_stripped():
    for prefix in ("]d2", "]C1", "]Q3", GS, "]d2" + GS):
        element = parse(prefix + SHORT_CODE)
        assert element.gtin == GTIN and element.get("93") == "dGVz"
    assert parse("]d2" + SHORT_CODE).symbology == "]d2"


def test_escaped_gs_and_superfluous_gs_after_fixed_length_value_are_accepted():
    assert parse(SHORT_CODE.replace(GS, "<GS>")) == parse(SHORT_CODE)
    assert parse(f"01{GTIN}{GS}21abcdef{GS}93abcd").elements == (("01", GTIN), ("21", "abcdef"), ("93", "abcd"))


def test_fixed_length_ai_needs_no_separator_before_next_ai():
    element = parse(f"01{GTIN}17261231{GS}21ABCDEF")
    assert element.elements == (("01", GTIN), ("17", "261231"), ("21", "ABCDEF"))
    # (17) comes right after (01) and (21) right after (17), with no GS between
    assert parse(f"01{GTIN}1726123121ABCDEF").elements == element.elements


@pytest.mark.parametrize(
    "pairs",
    [
        (("01", GTIN), ("21", "Q5e7!aB/c%2xY"), ("91", "EE07"), ("92", CRYPTO44)),
        (("01", GTIN), ("21", "5'aXL8"), ("93", "dGVz")),
        (("01", GTIN), ("17", "261200"), ("21", "ABCDEF"), ("10", "B-7"), ("93", "zz00")),
        (("01", GTIN), ("21", "abcdefg"), ("3103", "000400"), ("93", "a1b2")),
        (("00", "046012345678901239"), ("400", "PO-2024/77")),
    ],
)
def test_round_trip_compose_then_parse(pairs):
    text = compose_elements(pairs)
    element = parse(text)
    assert element.elements == pairs
    assert element.text == text
    assert parse(element.text) == element
    assert element.hri() == "".join(f"({ai}){v}" for ai, v in pairs)


def test_round_trip_with_chestny_znak_compose_helper():
    text = compose(GTIN, "Q5e7!aB/c%2xY", "EE07", CRYPTO44, extra=[("17", "270101"), ("10", "L1")])
    assert text == f"01{GTIN}21Q5e7!aB/c%2xY{GS}91EE07{GS}92{CRYPTO44}{GS}1727010110L1"
    element = parse_chestny_znak(text)
    assert element.get("10") == "L1" and element.expiry == dt.date(2027, 1, 1)


def test_predefined_lengths_follow_the_gs1_prefix_table():
    assert predefined_length("01") == 14 and predefined_length("17") == 6
    assert predefined_length("3103") == 6 and predefined_length("414") == 13
    assert predefined_length("21") is None and predefined_length("10") is None and predefined_length("92") is None


# --- errors -------------------------------------------------------------------------------------------------------


def test_bad_gtin_check_digit():
    bad = GTIN[:-1] + "0"
    with pytest.raises(CheckDigitError) as info:
        parse(f"01{bad}21ABCDEF{GS}93abcd")
    assert info.value.ai == "01" and info.value.code == "bad_check_digit"
    assert "expected 3" in str(info.value)


def test_bad_date_in_17():
    with pytest.raises(DateError, match="month 13"):
        parse(f"01{GTIN}17261331")
    with pytest.raises(DateError, match="day 30 does not exist"):
        parse(f"01{GTIN}17260230")
    assert parse(f"01{GTIN}17260200").expiry == dt.date(2026, 2, 28)  # day 00: the last day of the month


def test_non_digit_in_numeric_ai():
    with pytest.raises(NonDigitError) as info:
        parse(f"01{GTIN[:5]}X{GTIN[6:]}")
    assert info.value.ai == "01" and info.value.position == 7
    with pytest.raises(NonDigitError):
        parse(f"01{GTIN}3103A01250")


def test_unknown_ai():
    with pytest.raises(UnknownAiError, match="'0800'"):
        parse(f"01{GTIN}0800")
    with pytest.raises(UnknownAiError, match="expected an application identifier"):
        parse("ABCDEF")


def test_missing_separator_is_reported_on_the_overlong_value():
    glued = f"01{GTIN}21Q5e7!aB/c%2xY91EE0792{CRYPTO44}"  # both GS separators lost: (21) swallows the tail
    with pytest.raises(MissingSeparatorError) as info:
        parse(glued)
    assert info.value.ai == "21" and "separator" in str(info.value) and "65 characters" in str(info.value)


def test_missing_separator_within_gs1_limits_is_named_by_the_chestny_znak_check():
    # (21) may hold 20 characters, so a 13-character serial glued to "91EE07" still parses as GS1
    glued_serial = parse(f"01{GTIN}21Q5e7!aB/c%2xY91EE07{GS}92{CRYPTO44}")
    assert glued_serial.serial == "Q5e7!aB/c%2xY91EE07"
    with pytest.raises(ChestnyZnakError, match="GS after the serial is probably missing"):
        check_chestny_znak(glued_serial, serial_lengths=[13])
    with pytest.raises(ChestnyZnakError, match="GS after the key id is probably missing"):
        check_chestny_znak(parse(f"01{GTIN}21Q5e7!aB/c%2xY{GS}91EE0792{CRYPTO44}"))


def test_truncated_codes():
    with pytest.raises(TruncatedError, match="needs 14 characters"):
        parse(f"01{GTIN[:9]}")
    with pytest.raises(TruncatedError, match="has no value"):
        parse(f"01{GTIN}21{GS}93abcd")
    with pytest.raises(TruncatedError, match="data ends inside application identifier"):
        parse(f"01{GTIN}3")
    with pytest.raises(TruncatedError, match="a GS cuts it"):
        parse(f"01{GTIN}1726{GS}21abcdef")
    with pytest.raises(EmptyCodeError):
        parse("]d2" + GS)


def test_invalid_character_and_repeated_ai():
    with pytest.raises(InvalidCharacterError, match="charset 82"):
        parse(f"01{GTIN}21abc def")
    with pytest.raises(RepeatedAiError):
        parse(f"01{GTIN}21abcdef{GS}21abcdeg")
    assert parse(f"01{GTIN}21abcdef{GS}21abcdef").elements == (("01", GTIN), ("21", "abcdef"))


def test_every_error_is_a_gs1_error_and_a_plantbus_error_with_a_stable_code():
    codes = set()
    for text in (
        f"01{GTIN[:-1]}0",
        f"01{GTIN}17261331",
        "01046012X4567893",
        "0800",
        f"01{GTIN}21" + "x" * 21,
        "01123",
        "",
        f"01{GTIN}21a b",
        f"01{GTIN}21abcdef{GS}21abcdeg",
    ):
        with pytest.raises(Gs1Error) as info:
            parse(text)
        assert isinstance(info.value, PlantbusError) and isinstance(info.value, ValueError)
        codes.add(info.value.code)
    assert codes == {
        "bad_check_digit",
        "bad_date",
        "non_digit",
        "unknown_ai",
        "missing_separator",
        "truncated",
        "empty",
        "invalid_character",
        "repeated_ai",
    }


# --- Chestny ZNAK structure ------------------------------------------------------------------------------------


def test_chestny_znak_requires_gtin_serial_and_a_crypto_tail():
    with pytest.raises(ChestnyZnakError) as info:
        check_chestny_znak(parse(f"01{GTIN}21abcdef"))
    assert info.value.problems == ("no crypto tail: expected (91)+(92) or (93)",)
    with pytest.raises(ChestnyZnakError) as info:
        check_chestny_znak(parse("10LOT1"))
    assert "(01) GTIN is missing" in info.value.problems and "(21) serial is missing" in info.value.problems
    assert info.value.code == "not_chestny_znak"


def test_chestny_znak_tail_lengths():
    with pytest.raises(ChestnyZnakError) as info:
        check_chestny_znak(parse(f"01{GTIN}21abcdefghijklm{GS}91EE0{GS}92{CRYPTO44[:40]}"))
    assert info.value.problems == (
        "(91) key id is 3 characters, expected 4",
        "(92) crypto signature is 40 characters, expected 44 or 88",
    )
    with pytest.raises(ChestnyZnakError, match=r"\(93\) check code is 5"):
        check_chestny_znak(parse(f"01{GTIN}21abcdef{GS}93abcde"))
    with pytest.raises(ChestnyZnakError, match="non-base64"):
        check_chestny_znak(parse(f"01{GTIN}21abcdefghijklm{GS}91EE07{GS}92{CRYPTO44[:-1]}%"))
    with pytest.raises(ChestnyZnakError, match="without its"):
        check_chestny_znak(parse(f"01{GTIN}21abcdefghijklm{GS}92{CRYPTO44}"))
    check_chestny_znak(parse(f"01{GTIN}21abcdefghijklm{GS}91EE07{GS}92{CRYPTO44 * 2}"))  # 88: accepted


def test_chestny_znak_serial_length_per_product_group():
    short = parse(SHORT_CODE)
    check_chestny_znak(short, serial_lengths=[6])
    with pytest.raises(ChestnyZnakError, match="this product group uses \\[13\\]"):
        check_chestny_znak(short, serial_lengths=[13])
    with pytest.raises(ChestnyZnakError, match="expected 6–20"):
        check_chestny_znak(parse(f"01{GTIN}21abc{GS}93abcd"))


def test_gs1_dates_pick_the_century_within_fifty_years():
    today = dt.date(2025, 1, 1)
    assert yymmdd_to_date("991231", today=today) == dt.date(1999, 12, 31)
    assert yymmdd_to_date("740101", today=today) == dt.date(2074, 1, 1)
    assert yymmdd_to_date("760101", today=today) == dt.date(1976, 1, 1)


def test_element_accessors():
    element = Gs1Element((("01", GTIN), ("10", "B1")))
    assert "10" in element and "21" not in element
    assert element.get("21") is None and element.serial is None
    assert element.identity == element.text == f"01{GTIN}10B1"
    with pytest.raises(KeyError):
        element["21"]
