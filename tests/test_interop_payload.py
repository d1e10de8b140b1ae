"""Payload interoperability with Eclipse Tahu's independent JavaScript codec (npm sparkplug-payload 1.0.3).

Both directions, one node process per direction for the whole module: Plantbus encodes and Tahu's
`decodePayload` reads (plus the raw protobuf fields, to see exactly what is on the wire), and Tahu's
`encodePayload` writes and Plantbus's `decode_payload` reads.

Where Tahu 1.0.3 departs from the specification, the test that shows it is named `test_tahu_quirk_*`
and says exactly how; Plantbus keeps to the specification when it encodes and accepts what Tahu
sends when it decodes. Found so far (listed with those of tests/test_interop_live.py in tests/interop/README.md):

1. UInt32 travels in `long_value` (uint64), not `int_value` (uint32) as chapter 6 says; and
   Tahu reads UInt32 only from `long_value`, so a spec-conformant UInt32 reads as null in Tahu.
   Plantbus decodes UInt32 from either field.
2. No array types (22-34) at all: Tahu cannot encode them (its type table maps "Int8Array" to 0,
   Unknown, and sends no value) and decodes them as `{value: null, type: undefined}`.
3. DataSet cells: Tahu's decoder only knows columns of Int64, UInt32 (from long_value), Float,
   Double, Boolean and String, and throws "Invalid DataSetValue" for every other column type and
   for null cells, which the specification allows. Template parameters: the same table ("Invalid
   Parameter value"), so a definition with a parameter without a default value cannot be read.
4. Small signed ints (Int8/16/32) go out as 32-bit two's complement (-1 -> 4294967295), which is
   what Plantbus sends too; Tahu reads them back through Int32Array, so an 8-bit pattern (255 for
   Int8 -1) from another peer would read as 255 in Tahu. Plantbus reads both.
5. A Template definition decodes with `templateRef: ""` in Tahu (protobufjs's default), although
   the field is not on the wire.
6. DataSet Int64 cells decode without sign in Tahu (-2**40 reads as 2**64 - 2**40); Int64 metric
   values, properties and template parameters decode correctly.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import pytest

from hub.sparkplug import sparkplug_b_pb2 as pb
from hub.sparkplug.payload import (
    DataSet,
    DataType,
    MetaData,
    Metric,
    Payload,
    PropertyValue,
    Template,
    TemplateParameter,
    decode_payload,
    encode_payload,
    parse_payload,
)
from interop.tahu import blob, long, number, require_tahu, run_codec, untag

pytestmark = pytest.mark.interop


def f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def assert_same_value(got: Any, expected: Any) -> None:
    """Compare a value that crossed JSON: NaN equals NaN, a float may arrive as an int (JSON prints -40.0 as -40)."""
    if isinstance(expected, bool) or expected is None:
        assert got is expected
    elif isinstance(expected, float):
        assert isinstance(got, (int, float)) and not isinstance(got, bool)
        assert math.isnan(got) if math.isnan(expected) else float(got) == expected
    else:
        assert got == expected and type(got) is type(expected)


# ============================================================================ Plantbus -> Tahu

# (case id, datatype, Python value, what Tahu's decodePayload must return)
TO_TAHU_SCALARS: list[tuple[str, DataType, Any, Any]] = [
    ("int8-min", DataType.Int8, -128, -128),
    ("int8-max", DataType.Int8, 127, 127),
    ("int8-minus-1", DataType.Int8, -1, -1),
    ("int16-min", DataType.Int16, -32768, -32768),
    ("int16-max", DataType.Int16, 32767, 32767),
    ("int32-min", DataType.Int32, -(2**31), -(2**31)),
    ("int32-max", DataType.Int32, 2**31 - 1, 2**31 - 1),
    ("int64-min", DataType.Int64, -(2**63), -(2**63)),
    ("int64-max", DataType.Int64, 2**63 - 1, 2**63 - 1),
    ("int64-minus-1", DataType.Int64, -1, -1),
    ("uint8-max", DataType.UInt8, 255, 255),
    ("uint16-max", DataType.UInt16, 65535, 65535),
    ("uint64-zero", DataType.UInt64, 0, 0),
    ("uint64-2-53-plus-1", DataType.UInt64, 2**53 + 1, 2**53 + 1),
    ("uint64-max", DataType.UInt64, 2**64 - 1, 2**64 - 1),
    ("float", DataType.Float, 1.1, f32(1.1)),
    ("float-negative", DataType.Float, -273.15, f32(-273.15)),
    ("float-nan", DataType.Float, math.nan, math.nan),
    ("float-inf", DataType.Float, math.inf, math.inf),
    ("double", DataType.Double, math.pi, math.pi),
    ("double-big", DataType.Double, 1e308, 1e308),
    ("double-minus-inf", DataType.Double, -math.inf, -math.inf),
    ("double-nan", DataType.Double, math.nan, math.nan),
    ("boolean-true", DataType.Boolean, True, True),
    ("boolean-false", DataType.Boolean, False, False),
    ("string", DataType.String, "Салат «Витаминный» \U0001f957", "Салат «Витаминный» \U0001f957"),
    ("string-empty", DataType.String, "", ""),
    ("text", DataType.Text, "line 1\nline 2", "line 1\nline 2"),
    ("uuid", DataType.UUID, "6f1c2d8e-0000-4000-8000-000000000000", "6f1c2d8e-0000-4000-8000-000000000000"),
    ("datetime", DataType.DateTime, 1_656_107_875_000, 1_656_107_875_000),
    ("bytes", DataType.Bytes, bytes(range(256)), bytes(range(256))),
    ("bytes-empty", DataType.Bytes, b"", b""),
    ("file", DataType.File, b"%PDF-1.7\n", b"%PDF-1.7\n"),
]

ARRAY_SAMPLES: dict[DataType, list[Any]] = {
    DataType.Int8Array: [-23, 123],
    DataType.Int16Array: [-30000, 30000],
    DataType.Int32Array: [-1, 315338746],
    DataType.Int64Array: [-1, 2],
    DataType.UInt8Array: [23, 250],
    DataType.UInt16Array: [30, 52360],
    DataType.UInt32Array: [52, 3293969225],
    DataType.UInt64Array: [52, 16444743074749521625],
    DataType.FloatArray: [1.5],
    DataType.DoubleArray: [12.354213],
    DataType.BooleanArray: [True, False, True],
    DataType.StringArray: ["ABC", "hello"],
    DataType.DateTimeArray: [1256102875335],
}

TAHU_DATASET_TYPES = [DataType.Int64, DataType.Float, DataType.Double, DataType.Boolean, DataType.String]
DATASET_FOR_TAHU = DataSet(
    ["count", "weight", "ratio", "ok", "sku"],
    TAHU_DATASET_TYPES,
    [[-(2**40), 1.5, 0.1, True, "SALAD-250"], [2**63 - 1, -2.25, 1e-9, False, "Борщ"]],
)

TEMPLATE_DEFINITION = Template(
    version="2.0",
    is_definition=True,
    parameters=[
        TemplateParameter("MaxRPM", DataType.Int64, 3000),
        TemplateParameter("Vendor", DataType.String, "ABB"),
        TemplateParameter("Scale", DataType.Double, 0.5),
        TemplateParameter("Reversible", DataType.Boolean, False),
    ],
    metrics=[Metric("RPM", DataType.Int32, 0), Metric("Temp", DataType.Float, 20.5)],
)
TEMPLATE_INSTANCE = Template(
    template_ref="Motor",
    parameters=[TemplateParameter("MaxRPM", DataType.Int64, 1500)],
    metrics=[Metric("RPM", DataType.Int32, -25, timestamp=7), Metric("Running", DataType.Boolean, True)],
)

PROPERTIES = {
    "Quality": PropertyValue(DataType.Int32, 192),
    "engUnit": PropertyValue(DataType.String, "°C"),
    "offset": PropertyValue(DataType.Int8, -3),
    "big": PropertyValue(DataType.UInt64, 2**64 - 1),
    "low": PropertyValue(DataType.Double, -40.0),
    "missing": PropertyValue(DataType.Double, None),
    "limits": PropertyValue(DataType.PropertySet, {"hi": PropertyValue(DataType.Float, 90.5)}),
    "alarms": PropertyValue(DataType.PropertySetList, [
        {"name": PropertyValue(DataType.String, "HiHi"), "setpoint": PropertyValue(DataType.Int32, 95)},
        {"name": PropertyValue(DataType.String, "Lo"), "enabled": PropertyValue(DataType.Boolean, False)},
    ]),
}

METADATA = MetaData(is_multi_part=False, content_type="image/jpeg", size=2**40, seq=3, file_name="snap.jpg",
                    file_type="jpg", md5="d41d8cd98f00b204e9800998ecf8427e", description="camera 1")

PAYLOADS_TO_TAHU: dict[str, Payload] = {
    **{f"scalar-{cid}": Payload(timestamp=1, seq=0, metrics=[Metric("m", dt, value)])
       for cid, dt, value, _ in TO_TAHU_SCALARS},
    **{f"array-{t.name}": Payload(timestamp=1, seq=0, metrics=[Metric("a", t, v)]) for t, v in ARRAY_SAMPLES.items()},
    "uint32": Payload(timestamp=1, seq=0, metrics=[Metric("m", DataType.UInt32, 4_000_000_000)]),
    "header": Payload(timestamp=1_700_000_000_123, seq=255, uuid="plantbus-test", body=b"\x01\x02",
                      metrics=[Metric("m", DataType.Int32, 1)]),
    "flags": Payload(timestamp=1, seq=1, metrics=[
        Metric("hist", DataType.Double, 1.0, alias=7, timestamp=1_600_000_000_000, is_historical=True),
        Metric("trans", DataType.Int16, -2, alias=2**40, is_transient=True),
        Metric("null", DataType.String, None, alias=9),
        Metric(None, DataType.Int32, 5, alias=10),
    ]),
    "metadata": Payload(timestamp=1, metrics=[Metric("snap", DataType.File, b"\xff\xd8", metadata=METADATA)]),
    "dataset": Payload(timestamp=1, metrics=[Metric("table", DataType.DataSet, DATASET_FOR_TAHU)]),
    "dataset-int32": Payload(timestamp=1, metrics=[
        Metric("table", DataType.DataSet, DataSet(["a"], [DataType.Int32], [[1]]))]),
    "dataset-null-cell": Payload(timestamp=1, metrics=[
        Metric("table", DataType.DataSet, DataSet(["a"], [DataType.String], [[None]]))]),
    "template-definition": Payload(timestamp=1, metrics=[
        Metric("_types_/Motor", DataType.Template, TEMPLATE_DEFINITION)]),
    "template-instance": Payload(timestamp=1, metrics=[Metric("Motor1", DataType.Template, TEMPLATE_INSTANCE)]),
    "template-param-without-default": Payload(timestamp=1, metrics=[Metric("_types_/T", DataType.Template, Template(
        is_definition=True, parameters=[TemplateParameter("Serial", DataType.String, None)]))]),
    "properties": Payload(timestamp=1, metrics=[Metric("T1", DataType.Double, 21.5, properties=PROPERTIES)]),
}


def _int8_as_8_bit_pattern() -> bytes:
    # Another peer's legal encoding of Int8 -1: the 8-bit pattern 255 in int_value.
    msg = pb.Payload(timestamp=1)
    msg.metrics.add(name="m", datatype=int(DataType.Int8), int_value=0xFF)
    return msg.SerializeToString()


@pytest.fixture(scope="module")
def tahu_read() -> dict[str, dict[str, Any]]:
    """Every payload of PAYLOADS_TO_TAHU as Tahu decodes it (`tahu`) and as the raw fields (`raw`)."""
    require_tahu()
    items = [{"id": cid, "b64": b64(encode_payload(p))} for cid, p in PAYLOADS_TO_TAHU.items()]
    items.append({"id": "int8-8-bit-pattern", "b64": b64(_int8_as_8_bit_pattern())})
    return {cid: untag(result) for cid, result in run_codec("decode", items).items()}


def tahu_metric(result: dict[str, Any], index: int = 0) -> dict[str, Any]:
    assert "error" not in result, result.get("error")
    return result["tahu"]["metrics"][index]


@pytest.mark.parametrize(("cid", "datatype", "value", "expected"), TO_TAHU_SCALARS, ids=[c[0] for c in TO_TAHU_SCALARS])
def test_tahu_decodes_plantbus_scalars(tahu_read, cid, datatype, value, expected):
    metric = tahu_metric(tahu_read[f"scalar-{cid}"])
    assert metric["name"] == "m"
    assert metric["type"] == datatype.name
    assert_same_value(metric["value"], expected)


def test_tahu_decodes_payload_header_fields(tahu_read):
    payload = tahu_read["header"]["tahu"]
    assert payload["timestamp"] == 1_700_000_000_123
    assert payload["seq"] == 255
    assert payload["uuid"] == "plantbus-test"
    assert payload["body"] == b"\x01\x02"


def test_tahu_decodes_metric_flags_alias_timestamp_and_null(tahu_read):
    metrics = tahu_read["flags"]["tahu"]["metrics"]
    hist, trans, null, by_alias = metrics
    assert hist == {"name": "hist", "type": "Double", "value": 1.0, "alias": 7, "timestamp": 1_600_000_000_000,
                    "isHistorical": True}
    assert trans == {"name": "trans", "type": "Int16", "value": -2, "alias": 2**40, "isTransient": True}
    assert null == {"name": "null", "type": "String", "value": None, "alias": 9}
    assert by_alias == {"type": "Int32", "value": 5, "alias": 10}
    assert tahu_read["flags"]["raw"]["metrics"][2]["isNull"] is True


def test_tahu_decodes_file_metadata(tahu_read):
    metric = tahu_metric(tahu_read["metadata"])
    assert metric["value"] == b"\xff\xd8"
    assert metric["metadata"] == {
        "isMultiPart": False, "contentType": "image/jpeg", "size": 2**40, "seq": 3, "fileName": "snap.jpg",
        "fileType": "jpg", "md5": "d41d8cd98f00b204e9800998ecf8427e", "description": "camera 1",
    }


def test_tahu_decodes_a_dataset_of_the_column_types_it_knows(tahu_read):
    value = tahu_metric(tahu_read["dataset"])["value"]
    assert value["numOfColumns"] == 5
    assert value["columns"] == DATASET_FOR_TAHU.columns
    assert value["types"] == [t.name for t in TAHU_DATASET_TYPES]
    # Quirk 6: Tahu reads Int64 cells without sign (Long as sent, no toSigned()), so -2**40 reads as 2**64 - 2**40.
    assert value["rows"] == [
        [2**64 - 2**40, 1.5, 0.1, True, "SALAD-250"],
        [2**63 - 1, -2.25, 1e-9, False, "Борщ"],
    ]


def test_tahu_quirk_dataset_decoder_throws_on_int32_columns_and_null_cells(tahu_read):
    # Quirk 3: both are valid Sparkplug; Tahu's getDataSetValue has no case for them.
    assert "Invalid DataSetValue" in tahu_read["dataset-int32"]["error"]
    assert "Invalid DataSetValue" in tahu_read["dataset-null-cell"]["error"]
    # what Plantbus sent is the specification's form: the type in `types`, the cell in int_value / empty
    raw = tahu_read["dataset-int32"]["raw"]["metrics"][0]["datasetValue"]
    assert raw["types"] == [3] and raw["rows"][0]["elements"][0]["intValue"] == 1
    assert tahu_read["dataset-null-cell"]["raw"]["metrics"][0]["datasetValue"]["rows"][0]["elements"] == [{}]


def test_tahu_decodes_a_template_definition(tahu_read):
    value = tahu_metric(tahu_read["template-definition"])["value"]
    assert value["isDefinition"] is True and value["version"] == "2.0"
    assert value["parameters"] == [
        {"name": "MaxRPM", "type": "Int64", "value": 3000},
        {"name": "Vendor", "type": "String", "value": "ABB"},
        {"name": "Scale", "type": "Double", "value": 0.5},
        {"name": "Reversible", "type": "Boolean", "value": False},
    ]
    assert value["metrics"] == [{"name": "RPM", "type": "Int32", "value": 0},
                                {"name": "Temp", "type": "Float", "value": 20.5}]
    # Quirk 5: Tahu reports templateRef "" (protobufjs's default); on the wire it is absent, as the spec wants
    assert value.get("templateRef") == ""
    assert "templateRef" not in tahu_read["template-definition"]["raw"]["metrics"][0]["templateValue"]


def test_tahu_decodes_a_template_instance(tahu_read):
    value = tahu_metric(tahu_read["template-instance"])["value"]
    assert value["templateRef"] == "Motor" and value["isDefinition"] is False
    assert value["parameters"] == [{"name": "MaxRPM", "type": "Int64", "value": 1500}]
    assert value["metrics"] == [{"name": "RPM", "type": "Int32", "value": -25, "timestamp": 7},
                                {"name": "Running", "type": "Boolean", "value": True}]


def test_tahu_quirk_template_parameter_without_default_cannot_be_decoded(tahu_read):
    # Quirk 3: definitions MAY omit parameter values (payloads-template-definition-parameters-default).
    assert "Invalid Parameter value" in tahu_read["template-param-without-default"]["error"]


def test_tahu_decodes_nested_property_sets_lists_and_quality(tahu_read):
    props = tahu_metric(tahu_read["properties"])["properties"]
    assert props == {
        "Quality": {"type": "Int32", "value": 192},
        "engUnit": {"type": "String", "value": "°C"},
        "offset": {"type": "Int8", "value": -3},
        "big": {"type": "UInt64", "value": 2**64 - 1},
        "low": {"type": "Double", "value": -40.0},
        "missing": {"type": "Double", "value": None},
        "limits": {"type": "PropertySet", "value": {"hi": {"type": "Float", "value": 90.5}}},
        "alarms": {"type": "PropertySetList", "value": [
            {"name": {"type": "String", "value": "HiHi"}, "setpoint": {"type": "Int32", "value": 95}},
            {"name": {"type": "String", "value": "Lo"}, "enabled": {"type": "Boolean", "value": False}},
        ]},
    }


def test_tahu_quirk_reads_a_spec_conformant_uint32_as_null(tahu_read):
    # Quirk 1: the specification puts UInt32 in int_value (uint32); Plantbus does, Tahu looks in long_value.
    raw = tahu_read["uint32"]["raw"]["metrics"][0]
    assert raw["value"] == "intValue" and raw["intValue"] == 4_000_000_000
    assert tahu_metric(tahu_read["uint32"])["value"] is None


def test_tahu_quirk_reads_an_8_bit_int8_pattern_as_unsigned(tahu_read):
    # Quirk 4: Tahu sign-extends through Int32Array only, so 255 stays 255; Plantbus reads -1.
    assert tahu_metric(tahu_read["int8-8-bit-pattern"])["value"] == 255
    assert decode_payload(_int8_as_8_bit_pattern()).metrics[0].value == -1


@pytest.mark.parametrize("datatype", sorted(ARRAY_SAMPLES), ids=lambda t: t.name)
def test_tahu_quirk_has_no_array_types_and_reads_them_as_null(tahu_read, datatype):
    # Quirk 2: the bytes are on the wire (little-endian as the spec says); Tahu does not know the type.
    result = tahu_read[f"array-{datatype.name}"]
    raw = result["raw"]["metrics"][0]
    assert raw["datatype"] == int(datatype) and raw["value"] == "bytesValue"
    assert tahu_metric(result) == {"name": "a", "type": None, "value": None}


# ============================================================================ Tahu -> Plantbus

# (case id, Tahu type name, value as the node side gets it, expected DataType, expected Python value, wire field)
FROM_TAHU_SCALARS: list[tuple[str, str, Any, DataType, Any, str]] = [
    ("int8-min", "Int8", -128, DataType.Int8, -128, "int_value"),
    ("int8-minus-1", "Int8", -1, DataType.Int8, -1, "int_value"),
    ("int8-max", "Int8", 127, DataType.Int8, 127, "int_value"),
    ("int16-min", "Int16", -32768, DataType.Int16, -32768, "int_value"),
    ("int16-max", "Int16", 32767, DataType.Int16, 32767, "int_value"),
    ("int32-min", "Int32", -(2**31), DataType.Int32, -(2**31), "int_value"),
    ("int32-minus-1", "Int32", -1, DataType.Int32, -1, "int_value"),
    ("int64-number", "Int64", -5, DataType.Int64, -5, "long_value"),
    ("int64-min", "Int64", long(-(2**63), False), DataType.Int64, -(2**63), "long_value"),
    ("int64-max", "Int64", long(2**63 - 1, False), DataType.Int64, 2**63 - 1, "long_value"),
    ("uint8-max", "UInt8", 255, DataType.UInt8, 255, "int_value"),
    ("uint16-max", "UInt16", 65535, DataType.UInt16, 65535, "int_value"),
    ("uint32-max", "UInt32", 4294967295, DataType.UInt32, 4294967295, "long_value"),
    ("uint32-small", "UInt32", 7, DataType.UInt32, 7, "long_value"),
    ("uint64-max", "UInt64", long(2**64 - 1, True), DataType.UInt64, 2**64 - 1, "long_value"),
    ("uint64-2-53-plus-1", "UInt64", long(2**53 + 1, True), DataType.UInt64, 2**53 + 1, "long_value"),
    ("float", "Float", 1.1, DataType.Float, f32(1.1), "float_value"),
    ("float-nan", "Float", number(math.nan), DataType.Float, math.nan, "float_value"),
    ("float-minus-inf", "Float", number(-math.inf), DataType.Float, -math.inf, "float_value"),
    ("double", "Double", math.pi, DataType.Double, math.pi, "double_value"),
    ("double-inf", "Double", number(math.inf), DataType.Double, math.inf, "double_value"),
    ("boolean", "Boolean", True, DataType.Boolean, True, "boolean_value"),
    ("boolean-false", "Boolean", False, DataType.Boolean, False, "boolean_value"),
    ("string", "String", "Борщ \U0001f957", DataType.String, "Борщ \U0001f957", "string_value"),
    ("text", "Text", "", DataType.Text, "", "string_value"),
    ("uuid", "UUID", "6f1c2d8e-0000-4000-8000-000000000000", DataType.UUID,
     "6f1c2d8e-0000-4000-8000-000000000000", "string_value"),
    ("datetime-number", "DateTime", 1_656_107_875_000, DataType.DateTime, 1_656_107_875_000, "long_value"),
    ("datetime-long", "DateTime", long(1_256_102_875_335, True), DataType.DateTime, 1_256_102_875_335, "long_value"),
    ("bytes", "Bytes", blob(bytes(range(256))), DataType.Bytes, bytes(range(256)), "bytes_value"),
    ("file", "File", blob(b"%PDF"), DataType.File, b"%PDF", "bytes_value"),
]

TAHU_PROPERTIES = {
    "Quality": {"type": "Int32", "value": 500},
    "engUnit": {"type": "String", "value": "kg"},
    "offset": {"type": "Int16", "value": -300},
    "counter": {"type": "UInt32", "value": 4000000000},
    "missing": {"type": "Int32", "value": None},
    "limits": {"type": "PropertySet", "value": {"hi": {"type": "Double", "value": 1.5}}},
    "alarms": {"type": "PropertySetList", "value": [{"on": {"type": "Boolean", "value": True}}, {}]},
}

PAYLOADS_FROM_TAHU: dict[str, dict[str, Any]] = {
    **{f"scalar-{cid}": {"timestamp": 1, "seq": 0, "metrics": [{"name": "m", "type": tahu_type, "value": value}]}
       for cid, tahu_type, value, _, _, _ in FROM_TAHU_SCALARS},
    "header": {"timestamp": long(1_700_000_000_123, True), "seq": 255, "uuid": "tahu-test", "body": blob(b"\x00\x01"),
               "metrics": []},
    "flags": {"timestamp": 1, "seq": 3, "metrics": [
        {"name": "hist", "type": "Double", "value": 1.0, "alias": 7, "timestamp": 1_600_000_000_000,
         "isHistorical": True},
        {"name": "trans", "type": "Int16", "value": -2, "alias": long(2**40, True), "isTransient": True},
        {"name": "null", "type": "String", "value": None},
        {"type": "Int32", "value": 5, "alias": 10},
    ]},
    "metadata": {"timestamp": 1, "metrics": [{"name": "snap", "type": "File", "value": blob(b"\xff\xd8"), "metadata": {
        "isMultiPart": True, "contentType": "image/jpeg", "size": 2, "seq": 0, "fileName": "snap.jpg",
        "fileType": "jpg", "md5": "00ff", "description": "camera 1"}}]},
    "dataset": {"timestamp": 1, "metrics": [{"name": "table", "type": "DataSet", "value": {
        "numOfColumns": 7,
        "columns": ["i8", "u32", "i64", "f", "b", "s", "dt"],
        "types": ["Int8", "UInt32", "Int64", "Float", "Boolean", "String", "DateTime"],
        "rows": [
            [-1, 4000000000, -5, 1.5, True, "a", 1_656_107_875_000],
            [None, None, None, None, None, None, None],
        ],
    }}]},
    "template-definition": {"timestamp": 1, "metrics": [{"name": "_types_/Motor", "type": "Template", "value": {
        "version": "1.0", "isDefinition": True,
        "parameters": [{"name": "MaxRPM", "type": "UInt32", "value": 3000},
                       {"name": "Vendor", "type": "String", "value": "ABB"}],
        "metrics": [{"name": "RPM", "type": "Int32", "value": 0}, {"name": "On", "type": "Boolean", "value": False}],
    }}]},
    "template-instance": {"timestamp": 1, "metrics": [{"name": "Motor1", "type": "Template", "value": {
        "templateRef": "Motor", "isDefinition": False,
        "parameters": [{"name": "MaxRPM", "type": "UInt32", "value": 1500}],
        "metrics": [{"name": "RPM", "type": "Int32", "value": -25}],
    }}]},
    "properties": {"timestamp": 1, "metrics": [{"name": "w", "type": "Float", "value": 2.5,
                                                "properties": TAHU_PROPERTIES}]},
}


@pytest.fixture(scope="module")
def tahu_sent() -> dict[str, bytes]:
    """Every payload of PAYLOADS_FROM_TAHU as Tahu's encodePayload writes it."""
    require_tahu()
    items = [{"id": cid, "payload": payload} for cid, payload in PAYLOADS_FROM_TAHU.items()]
    results = run_codec("encode", items)
    errors = {cid: r["error"] for cid, r in results.items() if "error" in r}
    assert not errors, errors
    return {cid: base64.b64decode(r["b64"]) for cid, r in results.items()}


@pytest.mark.parametrize(
    ("cid", "tahu_type", "tahu_value", "datatype", "expected", "field"), FROM_TAHU_SCALARS,
    ids=[c[0] for c in FROM_TAHU_SCALARS],
)
def test_plantbus_decodes_tahu_scalars(tahu_sent, cid, tahu_type, tahu_value, datatype, expected, field):
    payload = decode_payload(tahu_sent[f"scalar-{cid}"])
    assert payload.timestamp == 1 and payload.seq == 0
    (metric,) = payload.metrics
    assert metric.name == "m" and metric.datatype is datatype
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(metric.value)
    else:
        assert metric.value == expected and type(metric.value) is type(expected)


@pytest.mark.parametrize(
    ("cid", "field"), [(c[0], c[5]) for c in FROM_TAHU_SCALARS], ids=[c[0] for c in FROM_TAHU_SCALARS],
)
def test_the_protobuf_field_tahu_uses_for_each_datatype(tahu_sent, cid, field):
    # Pins Tahu's wire choices: all as chapter 6 says, except UInt32 in long_value (quirk 1), and
    # negative Int8/16/32 as a 32-bit two's complement (quirk 4), both of which Plantbus decodes.
    assert parse_payload(tahu_sent[f"scalar-{cid}"]).metrics[0].WhichOneof("value") == field


def test_tahu_sends_negative_small_ints_as_32_bit_twos_complement(tahu_sent):
    assert parse_payload(tahu_sent["scalar-int8-minus-1"]).metrics[0].int_value == 0xFFFFFFFF
    assert parse_payload(tahu_sent["scalar-int16-min"]).metrics[0].int_value == 0xFFFF8000


def test_plantbus_decodes_tahu_payload_header_fields(tahu_sent):
    payload = decode_payload(tahu_sent["header"])
    assert payload == Payload(timestamp=1_700_000_000_123, seq=255, uuid="tahu-test", body=b"\x00\x01", metrics=[])


def test_plantbus_decodes_tahu_metric_flags_alias_and_null(tahu_sent):
    hist, trans, null, by_alias = decode_payload(tahu_sent["flags"]).metrics
    assert hist == Metric("hist", DataType.Double, 1.0, alias=7, timestamp=1_600_000_000_000, is_historical=True)
    assert trans == Metric("trans", DataType.Int16, -2, alias=2**40, is_transient=True)
    assert null == Metric("null", DataType.String, None) and null.is_null
    # Tahu always sends the datatype, also in DATA where the spec says it SHOULD NOT (payloads-metric-datatype-not-req)
    assert by_alias == Metric(None, DataType.Int32, 5, alias=10)


def test_plantbus_decodes_tahu_file_metadata(tahu_sent):
    (metric,) = decode_payload(tahu_sent["metadata"]).metrics
    assert metric.value == b"\xff\xd8"
    assert metric.metadata == MetaData(is_multi_part=True, content_type="image/jpeg", size=2, seq=0,
                                       file_name="snap.jpg", file_type="jpg", md5="00ff", description="camera 1")


def test_plantbus_decodes_a_tahu_dataset_with_null_cells(tahu_sent):
    (metric,) = decode_payload(tahu_sent["dataset"]).metrics
    assert metric.datatype is DataType.DataSet
    assert metric.value == DataSet(
        ["i8", "u32", "i64", "f", "b", "s", "dt"],
        [DataType.Int8, DataType.UInt32, DataType.Int64, DataType.Float, DataType.Boolean, DataType.String,
         DataType.DateTime],
        [[-1, 4000000000, -5, 1.5, True, "a", 1_656_107_875_000], [None] * 7],
    )


def test_plantbus_decodes_a_tahu_template_definition_and_instance(tahu_sent):
    (definition,) = decode_payload(tahu_sent["template-definition"]).metrics
    assert definition.value == Template(
        version="1.0",
        is_definition=True,
        parameters=[TemplateParameter("MaxRPM", DataType.UInt32, 3000),
                    TemplateParameter("Vendor", DataType.String, "ABB")],
        metrics=[Metric("RPM", DataType.Int32, 0), Metric("On", DataType.Boolean, False)],
    )
    (instance,) = decode_payload(tahu_sent["template-instance"]).metrics
    assert instance.value == Template(
        template_ref="Motor",
        parameters=[TemplateParameter("MaxRPM", DataType.UInt32, 1500)],
        metrics=[Metric("RPM", DataType.Int32, -25)],
    )


def test_plantbus_decodes_tahu_nested_properties(tahu_sent):
    (metric,) = decode_payload(tahu_sent["properties"]).metrics
    assert metric.value == 2.5
    assert metric.properties == {
        "Quality": PropertyValue(DataType.Int32, 500),
        "engUnit": PropertyValue(DataType.String, "kg"),
        "offset": PropertyValue(DataType.Int16, -300),
        "counter": PropertyValue(DataType.UInt32, 4000000000),
        "missing": PropertyValue(DataType.Int32, None),
        "limits": PropertyValue(DataType.PropertySet, {"hi": PropertyValue(DataType.Double, 1.5)}),
        "alarms": PropertyValue(DataType.PropertySetList, [{"on": PropertyValue(DataType.Boolean, True)}, {}]),
    }


def test_a_payload_survives_plantbus_tahu_plantbus(tahu_read):
    # Round trip through Tahu's object model: what Tahu decodes from Plantbus, re-encoded by Tahu,
    # reads back in Plantbus as the original (for the types Tahu supports).
    original = PAYLOADS_TO_TAHU["properties"]
    tahu_object = tahu_read["properties"]["tahu"]

    def retag(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: retag(v) for k, v in value.items()}
        if isinstance(value, list):
            return [retag(v) for v in value]
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and abs(value) > 2**53:
            return long(value, value >= 0)
        if isinstance(value, float):
            return number(value)
        return value

    results = run_codec("encode", [{"id": "again", "payload": retag(tahu_object)}])
    back = decode_payload(base64.b64decode(results["again"]["b64"]))
    assert back == original
