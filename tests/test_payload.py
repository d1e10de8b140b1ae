"""The Sparkplug B codec (hub/sparkplug/payload.py) against specification chapter 6.

Each test encodes through `encode_payload`, decodes through `decode_payload`, and where the wire
form itself is the point, inspects the protobuf fields through `parse_payload`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
import uuid

import pytest

from hub.errors import PayloadError
from hub.sparkplug import sparkplug_b_pb2 as pb
from hub.sparkplug.payload import (
    ARRAY_TYPES,
    DataSet,
    DataType,
    MetaData,
    Metric,
    Payload,
    PropertyValue,
    Template,
    TemplateParameter,
    coerce,
    decode_array,
    decode_payload,
    decode_value,
    encode_array,
    encode_payload,
    parse_payload,
    payload_to_json,
)

UTC = dt.timezone.utc


def roundtrip(metric: Metric) -> Metric:
    """Encode one metric in a payload and decode it back."""
    decoded = decode_payload(encode_payload(Payload(timestamp=1, seq=0, metrics=[metric])))
    assert len(decoded.metrics) == 1
    return decoded.metrics[0]


def wire(metric: Metric) -> pb.Payload.Metric:
    """The protobuf Metric as it goes on the wire."""
    return parse_payload(encode_payload(Payload(metrics=[metric]))).metrics[0]


def raw_payload(*metrics: pb.Payload.Metric) -> bytes:
    msg = pb.Payload()
    msg.metrics.extend(metrics)
    return msg.SerializeToString()


def case_id(value: object) -> str:
    """Readable parametrize ids: DataType by name, other values by a short repr."""
    return value.name if isinstance(value, DataType) else repr(value)[:32]


def f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


# ---------------------------------------------------------------------------- integers

INT_LIMITS = [
    (DataType.Int8, -128),
    (DataType.Int8, 127),
    (DataType.Int16, -32768),
    (DataType.Int16, 32767),
    (DataType.Int32, -(2**31)),
    (DataType.Int32, 2**31 - 1),
    (DataType.Int64, -(2**63)),
    (DataType.Int64, 2**63 - 1),
    (DataType.UInt8, 0),
    (DataType.UInt8, 255),
    (DataType.UInt16, 65535),
    (DataType.UInt32, 2**32 - 1),
    (DataType.UInt64, 0),
    (DataType.UInt64, 2**64 - 1),
    (DataType.Int8, -1),
    (DataType.Int64, -1),
    (DataType.Int32, 0),
]


@pytest.mark.parametrize(("datatype", "value"), INT_LIMITS, ids=case_id)
def test_integer_types_round_trip_at_their_limits(datatype, value):
    back = roundtrip(Metric("n", datatype, value))
    assert back.datatype is datatype
    assert back.value == value and type(back.value) is int


@pytest.mark.parametrize(
    ("datatype", "value", "field", "raw"),
    [
        (DataType.Int8, -1, "int_value", 0xFFFFFFFF),
        (DataType.Int8, -128, "int_value", 0xFFFFFF80),
        (DataType.Int16, -2, "int_value", 0xFFFFFFFE),
        (DataType.Int32, -(2**31), "int_value", 0x80000000),
        (DataType.Int64, -1, "long_value", 0xFFFFFFFFFFFFFFFF),
        (DataType.Int64, -(2**63), "long_value", 0x8000000000000000),
        (DataType.UInt32, 2**32 - 1, "int_value", 0xFFFFFFFF),
        (DataType.UInt64, 2**64 - 1, "long_value", 0xFFFFFFFFFFFFFFFF),
        (DataType.DateTime, 1_656_107_875_000, "long_value", 1_656_107_875_000),
    ],
    ids=case_id,
)
def test_signed_values_travel_as_twos_complement_in_the_unsigned_fields(datatype, value, field, raw):
    # Chapter 6 "Datatype Details": Int8..Int32 and UInt8..UInt32 use protobuf uint32, the 64-bit
    # types and DateTime uint64; negative values can only be carried as two's complement.
    msg = wire(Metric("n", datatype, value))
    assert msg.WhichOneof("value") == field
    assert getattr(msg, field) == raw


@pytest.mark.parametrize(
    ("datatype", "raw", "expected"),
    [
        (DataType.Int8, 0xFF, -1),  # 8-bit pattern (some peers)
        (DataType.Int8, 0xFFFFFFFF, -1),  # 32-bit pattern (Plantbus, Eclipse Tahu)
        (DataType.Int8, 0x80, -128),
        (DataType.Int8, 0xFFFFFF80, -128),
        (DataType.Int8, 0x7F, 127),
        (DataType.Int16, 0xFFFF, -1),
        (DataType.Int16, 0xFFFFFFFF, -1),
        (DataType.Int16, 0x8000, -32768),
        (DataType.Int16, 0xFFFF8000, -32768),
        (DataType.Int32, 0xFFFFFFFF, -1),
    ],
    ids=case_id,
)
def test_decoding_accepts_narrow_and_32_bit_patterns_of_negative_small_ints(datatype, raw, expected):
    metric = pb.Payload.Metric(name="n", datatype=int(datatype), int_value=raw)
    assert decode_payload(raw_payload(metric)).metrics[0].value == expected


def test_decoding_accepts_64_bit_sign_extended_small_ints_in_long_value():
    # A writer that widens a negative Int32 through a signed 64-bit integer sends a 64-bit pattern.
    metric = pb.Payload.Metric(name="n", datatype=int(DataType.Int32), long_value=2**64 - 5)
    assert decode_payload(raw_payload(metric)).metrics[0].value == -5


def test_decoding_accepts_uint32_in_long_value_as_eclipse_tahu_sends_it():
    # Eclipse Tahu's JavaScript codec writes UInt32 into long_value (see tests/test_interop_payload.py).
    metric = pb.Payload.Metric(name="n", datatype=int(DataType.UInt32), long_value=4_000_000_000)
    assert decode_payload(raw_payload(metric)).metrics[0].value == 4_000_000_000


@pytest.mark.parametrize(
    ("datatype", "field", "raw"),
    [
        (DataType.UInt8, "int_value", 256),
        (DataType.UInt16, "int_value", 70000),
        (DataType.Int8, "int_value", 0x1234),
        (DataType.Int8, "int_value", 0xFFFF0000),
        (DataType.Int16, "int_value", 0x12345),
        (DataType.UInt32, "long_value", 2**32),
        (DataType.Int32, "long_value", 2**40),
    ],
    ids=case_id,
)
def test_decoding_rejects_integers_that_do_not_fit_their_datatype(datatype, field, raw):
    metric = pb.Payload.Metric(name="n", datatype=int(datatype), **{field: raw})
    with pytest.raises(PayloadError, match="does not fit"):
        decode_payload(raw_payload(metric))


@pytest.mark.parametrize("value", [2**53 + 1, 2**63 + 12345, 18446744073709551557, 2**64 - 1])
def test_uint64_above_2_to_the_53_round_trips_exactly(value):
    assert roundtrip(Metric("big", DataType.UInt64, value)).value == value


def test_int64_extremes_round_trip_exactly():
    for value in (-(2**63), -(2**53) - 1, 2**63 - 1):
        assert roundtrip(Metric("big", DataType.Int64, value)).value == value


# ---------------------------------------------------------------------------- floating point


@pytest.mark.parametrize("value", [1.1, 0.1, -273.15, 3.4028234663852886e38, 1.401298464324817e-45, 16777217.0])
def test_float_values_come_back_rounded_to_float32(value):
    back = roundtrip(Metric("f", DataType.Float, value))
    assert back.value == f32(value)
    assert wire(Metric("f", DataType.Float, value)).WhichOneof("value") == "float_value"


@pytest.mark.parametrize("value", [math.pi, 1e308, 5e-324, -0.0, 1022.9123213, 2.0**60 + 1])
def test_double_values_round_trip_exactly(value):
    back = roundtrip(Metric("d", DataType.Double, value))
    assert back.value == value and math.copysign(1, back.value) == math.copysign(1, value)
    assert wire(Metric("d", DataType.Double, value)).WhichOneof("value") == "double_value"


@pytest.mark.parametrize("datatype", [DataType.Float, DataType.Double])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_round_trip(datatype, value):
    back = roundtrip(Metric("x", datatype, value))
    if math.isnan(value):
        assert math.isnan(back.value)
    else:
        assert back.value == value


def test_float_beyond_float32_range_is_refused_rather_than_sent_as_infinity():
    with pytest.raises(PayloadError, match="out of range for Float"):
        encode_payload(Payload(metrics=[Metric("f", DataType.Float, 1e39)]))
    assert roundtrip(Metric("d", DataType.Double, 1e39)).value == 1e39


# ---------------------------------------------------------------------------- other scalars


@pytest.mark.parametrize("value", [True, False])
def test_boolean_round_trips(value):
    back = roundtrip(Metric("b", DataType.Boolean, value))
    assert back.value is value
    assert wire(Metric("b", DataType.Boolean, value)).WhichOneof("value") == "boolean_value"


@pytest.mark.parametrize("datatype", [DataType.String, DataType.Text, DataType.UUID])
@pytest.mark.parametrize("value", ["", "Салат «Витаминный» 250 г", "emoji \U0001f957 and \u00e9", "x" * 70000])
def test_string_types_round_trip_utf8(datatype, value):
    back = roundtrip(Metric("s", datatype, value))
    assert back.value == value and back.datatype is datatype


def test_uuid_accepts_a_uuid_object_and_sends_its_text():
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    back = roundtrip(Metric("u", DataType.UUID, value))
    assert back.value == "12345678-1234-5678-1234-567812345678"


def test_datetime_round_trips_from_int_milliseconds():
    assert roundtrip(Metric("t", DataType.DateTime, 1_256_102_875_335)).value == 1_256_102_875_335


@pytest.mark.parametrize(
    ("when", "ms"),
    [
        (dt.datetime(2009, 10, 21, 5, 27, 55, 335000, tzinfo=UTC), 1_256_102_875_335),
        (dt.datetime(2022, 6, 25, 2, 57, 55, tzinfo=dt.timezone(dt.timedelta(hours=5))), 1_656_107_875_000),
        # float arithmetic (timestamp() * 1000) yields 274087259714.99997 for this instant
        (dt.datetime(1978, 9, 8, 7, 20, 59, 715000, tzinfo=UTC), 274_087_259_715),
        (dt.datetime(1970, 1, 1, tzinfo=UTC), 0),
    ],
    ids=case_id,
)
def test_datetime_round_trips_from_an_aware_datetime_to_exact_milliseconds(when, ms):
    assert roundtrip(Metric("t", DataType.DateTime, when)).value == ms


def test_datetime_refuses_naive_and_pre_epoch_values():
    with pytest.raises(PayloadError, match="timezone"):
        coerce(DataType.DateTime, dt.datetime(2024, 1, 1))
    with pytest.raises(PayloadError, match="out of range"):
        coerce(DataType.DateTime, dt.datetime(1969, 12, 31, tzinfo=UTC))


def test_bytes_and_file_round_trip_with_metadata():
    blob = bytes(range(256)) * 3
    meta = MetaData(
        is_multi_part=True,
        content_type="image/jpeg",
        size=len(blob),
        seq=2,
        file_name="snap.jpg",
        file_type="jpg",
        md5="d41d8cd98f00b204e9800998ecf8427e",
        description='{"camera": "line1"}',
    )
    back = roundtrip(Metric("snap", DataType.File, blob, metadata=meta))
    assert back.value == blob and back.datatype is DataType.File
    assert back.metadata == meta
    small = roundtrip(Metric("raw", DataType.Bytes, bytearray(b"\x00\x01"), metadata=MetaData(size=2)))
    assert small.value == b"\x00\x01"
    assert small.metadata == MetaData(size=2)


def test_empty_bytes_are_a_value_not_null():
    back = roundtrip(Metric("raw", DataType.Bytes, b""))
    assert back.value == b"" and not back.is_null


# ---------------------------------------------------------------------------- metric and payload fields

SAMPLE_VALUES: dict[DataType, object] = {
    DataType.Int8: -5,
    DataType.Int16: -300,
    DataType.Int32: -70000,
    DataType.Int64: -(2**40),
    DataType.UInt8: 200,
    DataType.UInt16: 60000,
    DataType.UInt32: 4_000_000_000,
    DataType.UInt64: 2**63,
    DataType.Float: 1.5,
    DataType.Double: 2.25,
    DataType.Boolean: True,
    DataType.String: "s",
    DataType.DateTime: 1_700_000_000_000,
    DataType.Text: "text",
    DataType.UUID: "6f1c2d8e-0000-4000-8000-000000000000",
    DataType.DataSet: DataSet(["a"], [DataType.Int32], [[1]]),
    DataType.Bytes: b"\x01",
    DataType.File: b"%PDF",
    DataType.Template: Template(template_ref="Motor", metrics=[Metric("rpm", DataType.Int32, 1)]),
    DataType.Int8Array: [-1, 2],
    DataType.Int16Array: [-1, 2],
    DataType.Int32Array: [-1, 2],
    DataType.Int64Array: [-1, 2],
    DataType.UInt8Array: [1, 2],
    DataType.UInt16Array: [1, 2],
    DataType.UInt32Array: [1, 2],
    DataType.UInt64Array: [1, 2],
    DataType.FloatArray: [1.5, 2.5],
    DataType.DoubleArray: [1.5, 2.5],
    DataType.BooleanArray: [True, False],
    DataType.StringArray: ["a", "b"],
    DataType.DateTimeArray: [1, 2],
}
METRIC_TYPES = sorted(SAMPLE_VALUES)


def test_sample_values_cover_every_datatype_a_metric_can_carry():
    expected = set(DataType) - {DataType.Unknown, DataType.PropertySet, DataType.PropertySetList}
    assert set(SAMPLE_VALUES) == expected


@pytest.mark.spec("tck-id-payloads-metric-datatype-value-type", "tck-id-payloads-metric-datatype-value")
@pytest.mark.parametrize("datatype", METRIC_TYPES, ids=case_id)
def test_every_datatype_round_trips_and_is_sent_as_its_enum_value(datatype):
    value = SAMPLE_VALUES[datatype]
    msg = wire(Metric("m", datatype, value))
    assert msg.datatype == int(datatype)
    back = roundtrip(Metric("m", datatype, value))
    assert back.datatype is datatype
    assert back.value == value


@pytest.mark.parametrize("datatype", METRIC_TYPES, ids=case_id)
def test_null_of_every_datatype_is_sent_as_is_null_without_a_value(datatype):
    msg = wire(Metric("m", datatype, None))
    assert msg.is_null is True and msg.WhichOneof("value") is None and msg.datatype == int(datatype)
    back = roundtrip(Metric("m", datatype, None))
    assert back.is_null and back.value is None and back.datatype is datatype


@pytest.mark.spec("tck-id-payloads-metric-datatype-value")
@pytest.mark.parametrize("bad", [35, 99, 2**31])
def test_decoding_rejects_datatype_ids_outside_the_enumeration(bad):
    metric = pb.Payload.Metric(name="m", datatype=bad, int_value=1)
    with pytest.raises(PayloadError, match="unknown Sparkplug datatype"):
        decode_payload(raw_payload(metric))


@pytest.mark.parametrize("datatype", [DataType.PropertySet, DataType.PropertySetList, DataType.Unknown])
def test_encoding_refuses_datatypes_that_cannot_be_metric_values(datatype):
    value = {} if datatype is DataType.PropertySet else [] if datatype is DataType.PropertySetList else 1
    with pytest.raises(PayloadError):
        encode_payload(Payload(metrics=[Metric("m", datatype, value)]))


def test_metric_flags_alias_and_timestamp_round_trip():
    metric = Metric("Line1/Count", DataType.UInt32, 7, alias=2**40, timestamp=1_700_000_000_123,
                    is_historical=True, is_transient=True)
    back = roundtrip(metric)
    assert back == metric


def test_unset_flags_are_not_sent():
    msg = wire(Metric("m", DataType.Int32, 1))
    for name in ("alias", "timestamp", "is_historical", "is_transient", "is_null", "metadata", "properties"):
        assert not msg.HasField(name), name


def test_payload_header_fields_round_trip():
    payload = Payload(timestamp=1_700_000_000_000, seq=255, uuid="SPBV1.0_COMPRESSED", body=b"\x78\x9c\x03\x00",
                      metrics=[Metric("a", DataType.Int8, 1)])
    assert decode_payload(encode_payload(payload)) == payload


def test_absent_payload_header_fields_decode_as_none():
    back = decode_payload(encode_payload(Payload()))
    assert back == Payload(timestamp=None, metrics=[], seq=None, uuid=None, body=None)
    assert decode_payload(b"") == Payload()
    # seq 0 is present, not absent: protobuf presence, not truthiness
    assert decode_payload(encode_payload(Payload(seq=0, timestamp=0))).seq == 0


def test_alias_only_data_metric_without_datatype_keeps_the_raw_field_for_the_host():
    # NDATA metrics sent by alias SHOULD omit the datatype (payloads-metric-datatype-not-req);
    # the decoder must not fail on them, and decode_value reinterprets with the birth's datatype.
    metric = pb.Payload.Metric(alias=5, timestamp=10, int_value=0xFFFFFFFE)
    back = decode_payload(raw_payload(metric)).metrics[0]
    assert back.name is None and back.alias == 5 and back.datatype is DataType.Unknown
    assert back.value == 0xFFFFFFFE
    assert decode_value(DataType.Int16, "int_value", back.value) == -2


def test_decode_value_interprets_each_field_kind_for_the_host():
    assert decode_value(DataType.Int64, "long_value", 2**64 - 1) == -1
    assert decode_value(DataType.Double, "double_value", 0.5) == 0.5
    assert decode_value(DataType.Int16Array, "bytes_value", b"\xd0\x8a\x30\x75") == [-30000, 30000]
    with pytest.raises(PayloadError, match="arrived in string_value"):
        decode_value(DataType.Int32, "string_value", "1")
    with pytest.raises(PayloadError):
        decode_value(DataType.Boolean, "int_value", 1)


def test_decoding_rejects_strings_that_are_not_utf8():
    good = encode_payload(Payload(uuid="uu", metrics=[Metric("ab", DataType.String, "cd")]))
    for needle in (b"uu", b"ab", b"cd"):
        bad = good.replace(needle, needle[:1] + b"\xff")
        with pytest.raises(PayloadError, match="UTF-8"):
            decode_payload(bad)


def test_encoding_reports_protobuf_level_errors_as_payload_errors():
    with pytest.raises(PayloadError, match="'m'"):
        encode_payload(Payload(metrics=[Metric("m", DataType.Int32, 1, alias=-1)]))
    with pytest.raises(PayloadError):
        encode_payload(Payload(metrics=[Metric("m", DataType.Int32, 1, metadata=MetaData(size=-4))]))


# ---------------------------------------------------------------------------- arrays

ARRAY_CASES = {
    DataType.Int8Array: [-128, -1, 0, 127],
    DataType.Int16Array: [-32768, -1, 32767],
    DataType.Int32Array: [-(2**31), -1, 2**31 - 1],
    DataType.Int64Array: [-(2**63), -1, 2**63 - 1],
    DataType.UInt8Array: [0, 255],
    DataType.UInt16Array: [0, 65535],
    DataType.UInt32Array: [0, 2**32 - 1],
    DataType.UInt64Array: [0, 2**53 + 1, 2**64 - 1],
    DataType.FloatArray: [f32(1.23), -0.5, math.inf],
    DataType.DoubleArray: [12.354213, -1e-300, -math.inf],
    DataType.BooleanArray: [True] * 9 + [False, True],
    DataType.StringArray: ["ABC", "", "Борщ", "hello"],
    DataType.DateTimeArray: [1_256_102_875_335, 1_656_107_875_000],
}


def test_array_cases_cover_every_array_type():
    assert set(ARRAY_CASES) == ARRAY_TYPES == {t for t in DataType if 22 <= t <= 34}


@pytest.mark.parametrize("datatype", sorted(ARRAY_CASES), ids=case_id)
def test_every_array_type_round_trips_in_bytes_value(datatype):
    values = ARRAY_CASES[datatype]
    msg = wire(Metric("a", datatype, values))
    assert msg.WhichOneof("value") == "bytes_value"
    assert roundtrip(Metric("a", datatype, values)).value == values


@pytest.mark.parametrize("datatype", sorted(ARRAY_CASES), ids=case_id)
def test_every_array_type_round_trips_empty(datatype):
    back = roundtrip(Metric("a", datatype, []))
    assert back.value == [] and not back.is_null


def test_array_of_nan_round_trips():
    back = roundtrip(Metric("a", DataType.FloatArray, [math.nan]))
    assert math.isnan(back.value[0])


def test_datetime_array_accepts_aware_datetimes():
    when = dt.datetime(2009, 10, 21, 5, 27, 55, 335000, tzinfo=UTC)
    assert roundtrip(Metric("a", DataType.DateTimeArray, [when, 0])).value == [1_256_102_875_335, 0]


# The examples of specification chapter 6, "Array Types", that are consistent with its own rule
# "simply little-endian packed byte arrays": these bytes must match exactly.
SPEC_ARRAY_EXAMPLES = [
    # the introduction's Int32 example
    (DataType.Int32Array, [123456789, 987654321], [0x15, 0xCD, 0x5B, 0x07, 0xB1, 0x68, 0xDE, 0x3A]),
    (DataType.Int16Array, [-30000, 30000], [0xD0, 0x8A, 0x30, 0x75]),
    (DataType.Int32Array, [-1, 315338746], [0xFF, 0xFF, 0xFF, 0xFF, 0xFA, 0xAF, 0xCB, 0x12]),
    (
        DataType.Int64Array,
        [-4270929666821191986, -3601064768563266876],
        [0xCE, 0x06, 0x72, 0xAC, 0x18, 0x9C, 0xBA, 0xC4, 0xC4, 0xBA, 0x9C, 0x18, 0xAC, 0x72, 0x06, 0xCE],
    ),
    (DataType.UInt8Array, [23, 250], [0x17, 0xFA]),
    (DataType.UInt16Array, [30, 52360], [0x1E, 0x00, 0x88, 0xCC]),
    (DataType.UInt32Array, [52, 3293969225], [0x34, 0x00, 0x00, 0x00, 0x49, 0xFB, 0x55, 0xC4]),
    (
        DataType.UInt64Array,
        [52, 16444743074749521625],
        [0x34, 0, 0, 0, 0, 0, 0, 0, 0xD9, 0x9E, 0x02, 0xD1, 0xB2, 0x76, 0x37, 0xE4],
    ),
    (DataType.StringArray, ["ABC", "hello"], [0x41, 0x42, 0x43, 0x00, 0x68, 0x65, 0x6C, 0x6C, 0x6F, 0x00]),
]


@pytest.mark.parametrize(("datatype", "values", "spec_bytes"), SPEC_ARRAY_EXAMPLES, ids=case_id)
def test_array_encoding_matches_the_specification_examples(datatype, values, spec_bytes):
    assert encode_array(datatype, values) == bytes(spec_bytes)
    assert decode_array(datatype, bytes(spec_bytes)) == values
    assert wire(Metric("a", datatype, values)).bytes_value == bytes(spec_bytes)


def test_boolean_array_matches_the_specification_example_whatever_the_padding_bits():
    # Spec: [F,F,T,T,F,T,F,F,T,T,F,T] -> [0x0C, 0x00, 0x00, 0x00, 0x34, 0xDX], X = "do not care".
    values = [False, False, True, True, False, True, False, False, True, True, False, True]
    encoded = encode_array(DataType.BooleanArray, values)
    assert encoded[:5] == bytes([0x0C, 0x00, 0x00, 0x00, 0x34]) and len(encoded) == 6
    assert encoded[5] & 0xF0 == 0xD0
    for last in (0xD0, 0xDF, 0xD5):
        assert decode_array(DataType.BooleanArray, bytes([0x0C, 0, 0, 0, 0x34, last])) == values


# Specification errata: these printed examples contradict the chapter's own "little-endian" rule.
# Plantbus follows the rule; each test pins how the printed bytes are wrong, so a corrected spec
# (or a mistaken "fix" of the codec towards the misprint) shows up here.


def test_spec_erratum_int8_array_example_prints_0xef_for_minus_23():
    # Spec: [-23, 123] -> [0xEF, 0x7B]. -23 as int8 is 0xE9; 0xEF is -17. A typo, not an endianness issue.
    assert encode_array(DataType.Int8Array, [-23, 123]) == bytes([0xE9, 0x7B])
    assert decode_array(DataType.Int8Array, bytes([0xEF, 0x7B])) == [-17, 123]


def test_spec_erratum_float_array_example_is_printed_big_endian():
    # Spec: [1.23, 89.341] -> [0x3F, 0x9D, 0x70, 0xA4, 0x42, 0xB2, 0xAE, 0x98]: each float big-endian.
    printed = bytes([0x3F, 0x9D, 0x70, 0xA4, 0x42, 0xB2, 0xAE, 0x98])
    ours = encode_array(DataType.FloatArray, [1.23, 89.341])
    assert ours == bytes([0xA4, 0x70, 0x9D, 0x3F, 0x98, 0xAE, 0xB2, 0x42])
    assert ours == printed[3::-1] + printed[7:3:-1]
    assert decode_array(DataType.FloatArray, ours) == [f32(1.23), f32(89.341)]


def test_spec_erratum_double_array_example_is_printed_big_endian():
    # Spec: [12.354213, 1022.9123213] -> [0x40, 0x28, 0xB5, 0x5B, ...]: each double big-endian.
    printed = bytes([0x40, 0x28, 0xB5, 0x5B, 0x68, 0x05, 0xA2, 0xD7, 0x40, 0x8F, 0xF7, 0x4C, 0x6F, 0x1C, 0x17, 0x8E])
    ours = encode_array(DataType.DoubleArray, [12.354213, 1022.9123213])
    assert ours == printed[7::-1] + printed[15:7:-1]
    assert decode_array(DataType.DoubleArray, ours) == [12.354213, 1022.9123213]


def test_spec_erratum_datetime_array_example_drops_the_high_zero_bytes():
    # Spec: [1256102875335, 1656107875000] -> 12 bytes [0xC7, 0xD0, 0x90, 0x75, 0x24, 0x01, 0xB8, ...]
    # A DateTime is 8 bytes; the printed example lost the two 0x00 high bytes of each value.
    printed = bytes([0xC7, 0xD0, 0x90, 0x75, 0x24, 0x01, 0xB8, 0xBA, 0xB8, 0x97, 0x81, 0x01])
    ours = encode_array(DataType.DateTimeArray, [1256102875335, 1656107875000])
    assert len(ours) == 16
    assert ours == printed[:6] + b"\x00\x00" + printed[6:] + b"\x00\x00"
    with pytest.raises(PayloadError, match="not a multiple of 8"):
        decode_array(DataType.DateTimeArray, printed)
    # the dates in the example's prose are the values it means
    assert roundtrip(
        Metric("a", DataType.DateTimeArray, [
            dt.datetime(2009, 10, 21, 5, 27, 55, 335000, tzinfo=UTC),
            dt.datetime(2022, 6, 24, 21, 57, 55, tzinfo=UTC),
        ])
    ).value == [1256102875335, 1656107875000]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        (DataType.Int32Array, b"\x01\x02\x03\x04\x05", "not a multiple of 4"),
        (DataType.DoubleArray, b"\x00" * 9, "not a multiple of 8"),
        (DataType.BooleanArray, b"\x01\x00", "shorter than its 4-byte count"),
        (DataType.BooleanArray, b"\x09\x00\x00\x00\xff", "claims 9 values"),
        (DataType.BooleanArray, b"\xff\xff\xff\xff\xff", "claims 4294967295 values"),
        (DataType.StringArray, b"abc", "NUL-terminated"),
        (DataType.StringArray, b"a\xffc\x00", "UTF-8"),
    ],
    ids=case_id,
)
def test_malformed_array_bytes_raise_payload_errors(datatype, data, message):
    with pytest.raises(PayloadError, match=message):
        decode_array(datatype, data)
    metric = pb.Payload.Metric(name="a", datatype=int(datatype), bytes_value=data)
    with pytest.raises(PayloadError):
        decode_payload(raw_payload(metric))


# ---------------------------------------------------------------------------- coerce


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        (DataType.Int8, 128, "out of range"),
        (DataType.Int8, -129, "out of range"),
        (DataType.Int16, 2**15, "out of range"),
        (DataType.Int32, -(2**31) - 1, "out of range"),
        (DataType.Int64, 2**63, "out of range"),
        (DataType.UInt8, -1, "out of range"),
        (DataType.UInt16, 65536, "out of range"),
        (DataType.UInt32, 2**32, "out of range"),
        (DataType.UInt64, 2**64, "out of range"),
        (DataType.UInt64, -1, "out of range"),
        (DataType.DateTime, -1, "out of range"),
        (DataType.Int32, True, "needs an integer"),
        (DataType.UInt8, False, "needs an integer"),
        (DataType.Int32, "5", "needs an integer"),
        (DataType.Int32, 1.5, "needs an integer"),
        (DataType.Int64, math.nan, "needs an integer"),
        (DataType.Float, "1.0", "needs a number"),
        (DataType.Double, True, "needs a number"),
        (DataType.Boolean, 1, "true or false"),
        (DataType.Boolean, "true", "true or false"),
        (DataType.String, 5, "needs a string"),
        (DataType.Text, b"x", "needs a string"),
        (DataType.UUID, 1, "needs a string"),
        (DataType.Bytes, "abc", "needs bytes"),
        (DataType.File, [1, 2], "needs bytes"),
        (DataType.DateTime, dt.datetime(2024, 1, 1), "timezone"),
        (DataType.DateTime, "2024-01-01T00:00:00Z", "needs an integer"),
        (DataType.Int8Array, "ab", "needs a list"),
        (DataType.Int8Array, b"ab", "needs a list"),
        (DataType.Int8Array, 5, "needs a list"),
        (DataType.Int16Array, [1, 2**15], "out of range"),
        (DataType.UInt8Array, [True], "needs an integer"),
        (DataType.BooleanArray, [1, 0], "true or false"),
        (DataType.StringArray, ["ok", "a\x00b"], "NUL"),
        (DataType.StringArray, ["a", None], "null elements"),
        (DataType.DateTimeArray, [dt.datetime(2024, 1, 1)], "timezone"),
        (DataType.FloatArray, [1e39], "out of range for Float"),
        (DataType.DataSet, {"columns": []}, "needs a DataSet"),
        (DataType.Template, {}, "needs a Template"),
        (DataType.PropertySet, [], "PropertySet needs"),
        (DataType.PropertySetList, {}, "PropertySetList needs"),
        (DataType.Unknown, 1, "cannot carry"),
    ],
    ids=case_id,
)
def test_coerce_rejects_values_that_do_not_fit(datatype, value, message):
    with pytest.raises(PayloadError, match=message):
        coerce(datatype, value)
    # and the encoder refuses them too, instead of masking or converting them silently
    with pytest.raises(PayloadError):
        encode_payload(Payload(metrics=[Metric("m", datatype, value)]))


@pytest.mark.parametrize(
    ("datatype", "value", "expected"),
    [
        (DataType.Float, 1, 1.0),
        (DataType.Double, -3, -3.0),
        (DataType.UUID, uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (DataType.Bytes, bytearray(b"ab"), b"ab"),
        (DataType.Bytes, memoryview(b"ab"), b"ab"),
        (DataType.Int8Array, (1, 2), [1, 2]),
        (DataType.DateTime, dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), 1000),
        (DataType.Int32, None, None),
    ],
    ids=case_id,
)
def test_coerce_returns_the_canonical_python_form(datatype, value, expected):
    assert coerce(datatype, value) == expected


def test_datatype_parse_accepts_ids_and_names_and_rejects_the_rest():
    assert DataType.parse(9) is DataType.Float
    assert DataType.parse("uint64") is DataType.UInt64
    assert DataType.parse(DataType.Text) is DataType.Text
    with pytest.raises(PayloadError, match="unknown Sparkplug datatype id 77"):
        DataType.parse(77)
    with pytest.raises(PayloadError, match="use one of"):
        DataType.parse("int128")


# ---------------------------------------------------------------------------- DataSet

ALL_CELL_TYPES = [
    DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64, DataType.UInt8, DataType.UInt16,
    DataType.UInt32, DataType.UInt64, DataType.Float, DataType.Double, DataType.Boolean, DataType.String,
    DataType.DateTime, DataType.Text, DataType.UUID,
]
ROW_A = [-128, -32768, -(2**31), -(2**63), 255, 65535, 2**32 - 1, 2**64 - 1, 1.5, math.pi, True, "Борщ",
         1_700_000_000_000, "t", "u"]


@pytest.mark.spec(
    "tck-id-payloads-dataset-column-size",
    "tck-id-payloads-dataset-types-def",
    "tck-id-payloads-dataset-types-type",
    "tck-id-payloads-dataset-parameter-type-req",
    "tck-id-payloads-template-dataset-value",
)
def test_dataset_with_every_basic_column_type_and_null_cells_round_trips():
    rows = [ROW_A, [None] * len(ALL_CELL_TYPES), [v if i % 2 else None for i, v in enumerate(ROW_A)]]
    ds = DataSet([t.name for t in ALL_CELL_TYPES], ALL_CELL_TYPES, rows)
    back = roundtrip(Metric("table", DataType.DataSet, ds)).value
    assert back == ds

    msg = wire(Metric("table", DataType.DataSet, ds)).dataset_value
    assert msg.HasField("num_of_columns") and msg.num_of_columns == len(ALL_CELL_TYPES)
    assert list(msg.types) == [int(t) for t in ALL_CELL_TYPES]
    allowed = {"int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value"}
    kinds = {cell.WhichOneof("value") for cell in msg.rows[0].elements}
    assert kinds <= allowed
    # a null cell is an element without a value, so the row keeps its width
    assert len(msg.rows[1].elements) == len(ALL_CELL_TYPES)
    assert all(cell.WhichOneof("value") is None for cell in msg.rows[1].elements)


def test_empty_dataset_round_trips():
    ds = DataSet([], [], [])
    assert roundtrip(Metric("t", DataType.DataSet, ds)).value == ds
    ds = DataSet(["a", "b"], [DataType.String, DataType.Int32], [])
    assert roundtrip(Metric("t", DataType.DataSet, ds)).value == ds


@pytest.mark.spec(
    "tck-id-payloads-dataset-column-num-headers",
    "tck-id-payloads-dataset-types-num",
)
def test_dataset_columns_and_types_must_have_the_same_length():
    with pytest.raises(PayloadError, match="2 columns but 1 types"):
        DataSet(["a", "b"], [DataType.Int32])
    # a peer's DataSet with a mismatch is refused on decode, as is a lying num_of_columns
    msg = pb.Payload.Metric(name="t", datatype=int(DataType.DataSet))
    msg.dataset_value.columns.extend(["a", "b"])
    msg.dataset_value.types.append(int(DataType.Int32))
    with pytest.raises(PayloadError, match="2 columns but 1 types"):
        decode_payload(raw_payload(msg))
    msg = pb.Payload.Metric(name="t", datatype=int(DataType.DataSet))
    msg.dataset_value.num_of_columns = 3
    msg.dataset_value.columns.append("a")
    msg.dataset_value.types.append(int(DataType.Int32))
    with pytest.raises(PayloadError, match="says 3 columns"):
        decode_payload(raw_payload(msg))


def test_dataset_rows_must_have_one_cell_per_column():
    ds = DataSet(["a", "b"], [DataType.Int32, DataType.Int32], [[1]])
    with pytest.raises(PayloadError, match="row 0 has 1 cells for 2 columns"):
        encode_payload(Payload(metrics=[Metric("t", DataType.DataSet, ds)]))
    msg = pb.Payload.Metric(name="t", datatype=int(DataType.DataSet))
    msg.dataset_value.columns.extend(["a", "b"])
    msg.dataset_value.types.extend([3, 3])
    msg.dataset_value.rows.add().elements.add().int_value = 1
    with pytest.raises(PayloadError, match="row 0 has 1 cells"):
        decode_payload(raw_payload(msg))


def test_dataset_cells_are_checked_against_their_column_type():
    ds = DataSet(["a"], [DataType.UInt8], [[256]])
    with pytest.raises(PayloadError, match="out of range for UInt8"):
        encode_payload(Payload(metrics=[Metric("t", DataType.DataSet, ds)]))


@pytest.mark.spec("tck-id-payloads-dataset-types-value")
@pytest.mark.parametrize("bad", [DataType.DataSet, DataType.Bytes, DataType.Int8Array, DataType.Template,
                                 DataType.PropertySet])
def test_dataset_column_types_must_be_basic_types(bad):
    with pytest.raises(PayloadError, match="not a scalar type"):
        DataSet(["a"], [bad])
    msg = pb.Payload.Metric(name="t", datatype=int(DataType.DataSet))
    msg.dataset_value.columns.append("a")
    msg.dataset_value.types.append(int(bad))
    with pytest.raises(PayloadError):
        decode_payload(raw_payload(msg))


# ---------------------------------------------------------------------------- Templates


def motor_definition() -> Template:
    return Template(
        version="1.2",
        is_definition=True,
        parameters=[
            TemplateParameter("MaxRPM", DataType.UInt32, 3000),
            TemplateParameter("Vendor", DataType.String, "ABB"),
            TemplateParameter("Scale", DataType.Float, 0.5),
            TemplateParameter("Serial", DataType.String, None),  # no default
        ],
        metrics=[
            Metric("RPM", DataType.Int32, 0),
            Metric("Running", DataType.Boolean, False),
            Metric("Temps", DataType.FloatArray, []),
            Metric("Bearing", DataType.Template,
                   Template(template_ref="Bearing", metrics=[Metric("wear", DataType.Double, None)])),
        ],
    )


@pytest.mark.spec(
    "tck-id-payloads-template-definition-is-definition",
    "tck-id-payloads-template-definition-ref",
    "tck-id-payloads-template-ref-definition",
    "tck-id-payloads-template-is-definition",
    "tck-id-payloads-template-is-definition-definition",
    "tck-id-payloads-template-version",
    "tck-id-payloads-template-definition-parameters-default",
    "tck-id-payloads-template-parameter-name-required",
    "tck-id-payloads-template-parameter-name-type",
    "tck-id-payloads-template-parameter-value-type",
    "tck-id-payloads-template-parameter-type-req",
    "tck-id-payloads-template-parameter-value",
)
def test_template_definition_with_parameters_and_nested_metrics_round_trips():
    definition = motor_definition()
    back = roundtrip(Metric("_types_/Motor", DataType.Template, definition)).value
    assert back == Template(
        version="1.2",
        is_definition=True,
        template_ref=None,
        parameters=[
            TemplateParameter("MaxRPM", DataType.UInt32, 3000),
            TemplateParameter("Vendor", DataType.String, "ABB"),
            TemplateParameter("Scale", DataType.Float, 0.5),
            TemplateParameter("Serial", DataType.String, None),
        ],
        metrics=definition.metrics,
    )

    msg = wire(Metric("_types_/Motor", DataType.Template, definition)).template_value
    assert msg.HasField("is_definition") and msg.is_definition is True
    assert not msg.HasField("template_ref")
    assert msg.version == "1.2"
    allowed = {"int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value", None}
    for p in msg.parameters:
        assert p.HasField("name") and p.HasField("type")
        assert p.WhichOneof("value") in allowed
    assert msg.parameters[3].WhichOneof("value") is None
    # the nested instance is itself a template metric with is_definition present and false
    nested = msg.metrics[3].template_value
    assert nested.HasField("is_definition") and nested.is_definition is False and nested.template_ref == "Bearing"


@pytest.mark.spec(
    "tck-id-payloads-template-instance-is-definition",
    "tck-id-payloads-template-instance-ref",
    "tck-id-payloads-template-ref-instance",
    "tck-id-payloads-template-is-definition",
    "tck-id-payloads-template-is-definition-instance",
    "tck-id-payloads-template-instance-parameters",
)
def test_template_instance_round_trips_with_parameter_values():
    instance = Template(
        template_ref="Motor",
        version="1.2",
        parameters=[TemplateParameter("MaxRPM", DataType.UInt32, 1500)],
        metrics=[Metric("RPM", DataType.Int32, -20, timestamp=5), Metric("Running", DataType.Boolean, True)],
    )
    back = roundtrip(Metric("Line1/Motor1", DataType.Template, instance)).value
    assert back == instance and back.is_definition is False
    msg = wire(Metric("Line1/Motor1", DataType.Template, instance)).template_value
    assert msg.HasField("is_definition") and msg.is_definition is False
    assert msg.template_ref == "Motor"


@pytest.mark.spec("tck-id-payloads-template-definition-ref", "tck-id-payloads-template-ref-definition")
def test_encoder_refuses_a_definition_that_names_a_template_ref():
    bad = Template(is_definition=True, template_ref="Motor")
    with pytest.raises(PayloadError, match="must not carry template_ref"):
        encode_payload(Payload(metrics=[Metric("_types_/Motor", DataType.Template, bad)]))


@pytest.mark.spec("tck-id-payloads-template-instance-ref", "tck-id-payloads-template-ref-instance")
def test_encoder_refuses_an_instance_without_template_ref():
    with pytest.raises(PayloadError, match="needs template_ref"):
        encode_payload(Payload(metrics=[Metric("Motor1", DataType.Template, Template())]))


@pytest.mark.spec("tck-id-payloads-template-parameter-type-value")
@pytest.mark.parametrize("bad", [DataType.DataSet, DataType.Bytes, DataType.Int32Array, DataType.PropertySet])
def test_template_parameters_must_have_basic_types(bad):
    tpl = Template(is_definition=True, parameters=[TemplateParameter("p", bad, 1)])
    with pytest.raises(PayloadError):
        encode_payload(Payload(metrics=[Metric("_types_/T", DataType.Template, tpl)]))
    msg = pb.Payload.Metric(name="_types_/T", datatype=int(DataType.Template))
    param = msg.template_value.parameters.add(name="p", type=int(bad))
    param.int_value = 1
    with pytest.raises(PayloadError):
        decode_payload(raw_payload(msg))


def test_template_parameter_values_are_checked_against_their_type():
    tpl = Template(is_definition=True, parameters=[TemplateParameter("p", DataType.Int8, 200)])
    with pytest.raises(PayloadError, match="out of range for Int8"):
        encode_payload(Payload(metrics=[Metric("_types_/T", DataType.Template, tpl)]))


def test_template_parameter_with_negative_int_round_trips():
    tpl = Template(template_ref="T", parameters=[TemplateParameter("offset", DataType.Int16, -5),
                                                  TemplateParameter("big", DataType.Int64, -(2**62))])
    assert roundtrip(Metric("T1", DataType.Template, tpl)).value == tpl


# ---------------------------------------------------------------------------- PropertySets


@pytest.mark.spec(
    "tck-id-payloads-propertyset-keys-array-size",
    "tck-id-payloads-propertyset-values-array-size",
    "tck-id-payloads-metric-propertyvalue-type-type",
    "tck-id-payloads-metric-propertyvalue-type-req",
)
def test_nested_property_sets_and_lists_round_trip():
    props = {
        "Quality": PropertyValue(DataType.Int32, 192),
        "engUnit": PropertyValue(DataType.String, "°C"),
        "engLow": PropertyValue(DataType.Double, -40.0),
        "readOnly": PropertyValue(DataType.Boolean, True),
        "offset": PropertyValue(DataType.Int8, -3),
        "since": PropertyValue(DataType.DateTime, 1_700_000_000_000),
        "missing": PropertyValue(DataType.String, None),
        "limits": PropertyValue(DataType.PropertySet, {
            "hi": PropertyValue(DataType.Float, 90.5),
            "inner": PropertyValue(DataType.PropertySet, {"deep": PropertyValue(DataType.UInt64, 2**64 - 1)}),
        }),
        "alarms": PropertyValue(DataType.PropertySetList, [
            {"name": PropertyValue(DataType.String, "HiHi"), "setpoint": PropertyValue(DataType.Int32, 95)},
            {},
            {"name": PropertyValue(DataType.String, "Lo"), "empty": PropertyValue(DataType.PropertySet, None)},
        ]),
    }
    back = roundtrip(Metric("T1", DataType.Double, 21.5, properties=props))
    assert back.properties == props
    assert back.properties["missing"].is_null

    msg = wire(Metric("T1", DataType.Double, 21.5, properties=props)).properties
    assert len(msg.keys) == len(msg.values) == len(props)
    assert all(v.HasField("type") for v in msg.values)
    limits = msg.values[list(props).index("limits")]
    assert len(limits.propertyset_value.keys) == len(limits.propertyset_value.values) == 2
    assert msg.values[list(props).index("missing")].is_null is True


@pytest.mark.spec("tck-id-payloads-propertyset-keys-array-size", "tck-id-payloads-propertyset-values-array-size")
def test_decoding_rejects_a_property_set_with_unequal_keys_and_values():
    msg = pb.Payload.Metric(name="m", datatype=int(DataType.Int32), int_value=1)
    msg.properties.keys.extend(["a", "b"])
    msg.properties.values.add(type=int(DataType.Int32), int_value=1)
    with pytest.raises(PayloadError, match="2 keys but 1 values"):
        decode_payload(raw_payload(msg))
    msg = pb.Payload.Metric(name="m", datatype=int(DataType.Int32), int_value=1)
    msg.properties.keys.append("a")
    msg.properties.values.add(type=int(DataType.Int32), int_value=1)
    msg.properties.values.add(type=int(DataType.Int32), int_value=2)
    with pytest.raises(PayloadError, match="1 keys but 2 values"):
        decode_payload(raw_payload(msg))


@pytest.mark.spec("tck-id-payloads-metric-propertyvalue-type-value")
@pytest.mark.parametrize("bad", [99, int(DataType.Int32Array), int(DataType.DataSet)])
def test_decoding_rejects_property_values_of_types_outside_the_allowed_set(bad):
    msg = pb.Payload.Metric(name="m", datatype=int(DataType.Int32), int_value=1)
    msg.properties.keys.append("a")
    msg.properties.values.add(type=bad, int_value=1)
    with pytest.raises(PayloadError):
        decode_payload(raw_payload(msg))


@pytest.mark.spec("tck-id-payloads-propertyset-quality-value-type", "tck-id-payloads-propertyset-quality-value-value")
@pytest.mark.parametrize("code", [0, 192, 500])
def test_quality_property_is_an_int32_of_a_valid_code(code):
    metric = Metric("m", DataType.Int32, 1, properties={"Quality": PropertyValue(DataType.Int32, code)})
    quality = wire(metric).properties.values[0]
    assert quality.type == 3 and quality.WhichOneof("value") == "int_value" and quality.int_value == code
    assert roundtrip(metric).properties["Quality"] == PropertyValue(DataType.Int32, code)


@pytest.mark.spec("tck-id-payloads-propertyset-quality-value-type", "tck-id-payloads-propertyset-quality-value-value")
@pytest.mark.parametrize(
    "prop",
    [PropertyValue(DataType.Int32, 100), PropertyValue(DataType.Int64, 192), PropertyValue(DataType.String, "good"),
     PropertyValue(DataType.Int32, None)],
    ids=repr,
)
def test_encoder_refuses_an_invalid_quality_property(prop):
    with pytest.raises(PayloadError, match="Quality"):
        encode_payload(Payload(metrics=[Metric("m", DataType.Int32, 1, properties={"Quality": prop})]))


def test_property_values_must_be_property_value_objects():
    with pytest.raises(PayloadError, match="must be a PropertyValue"):
        encode_payload(Payload(metrics=[Metric("m", DataType.Int32, 1, properties={"engUnit": "°C"})]))


def test_property_values_are_checked_against_their_type():
    with pytest.raises(PayloadError, match="out of range"):
        props = {"x": PropertyValue(DataType.UInt8, -1)}
        encode_payload(Payload(metrics=[Metric("m", DataType.Int32, 1, properties=props)]))


# ---------------------------------------------------------------------------- JSON view


def test_json_view_of_every_datatype_is_strict_json():
    metrics = [Metric(t.name, t, SAMPLE_VALUES[t]) for t in METRIC_TYPES]
    metrics += [
        Metric("nan", DataType.Float, math.nan),
        Metric("inf", DataType.DoubleArray, [math.inf]),
        Metric("props", DataType.Int32, 1, properties={"Quality": PropertyValue(DataType.Int32, 500)}),
        Metric("file", DataType.File, b"\x00\xff", metadata=MetaData(file_name="a.bin")),
    ]
    view = payload_to_json(decode_payload(encode_payload(Payload(timestamp=5, seq=1, metrics=metrics))))
    text = json.dumps(view, allow_nan=False)
    by_name = {m["name"]: m for m in json.loads(text)["metrics"]}
    assert by_name["nan"]["value"] == "nan"
    assert by_name["file"]["value"] == "AP8="
    assert by_name["UInt64"]["value"] == 2**63
    assert by_name["props"]["properties"] == {"Quality": 500}
    assert by_name["DataSet"]["value"] == {"columns": ["a"], "types": ["Int32"], "rows": [[1]]}
