"""Sparkplug B payloads: Python values <-> the protobuf schema of specification chapter 6.

Everything that touches the generated protobuf classes lives here, so the rest of Plantbus
speaks in plain dataclasses (`Payload`, `Metric`, `DataSet`, `Template`, `PropertyValue`).

Two encoding rules are easy to get wrong and are the reason for most of this module:

* Signed integers travel in the *unsigned* protobuf fields as two's complement
  (Int8/16/32 in `int_value` as a 32-bit pattern, Int64 in `long_value` as a 64-bit one).
  Decoding masks to the declared width and sign-extends, so a peer that sent an 8-bit
  pattern (255) and one that sent a 32-bit pattern (4294967295) both read back as -1.
* Array types 22-34 travel in `bytes_value`, packed little-endian; Boolean arrays carry
  a 4-byte little-endian count followed by the bits, most significant bit first; String
  arrays are NUL-terminated UTF-8 strings.
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
import time
import uuid as _uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from google.protobuf.message import DecodeError

from hub.errors import PayloadError
from hub.sparkplug import sparkplug_b_pb2 as pb


class DataType(IntEnum):
    """Sparkplug datatype ids (specification 6.4.16)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34

    @classmethod
    def parse(cls, value: int | str | DataType) -> DataType:
        """Accept an id, a name (any case) or a DataType."""
        if isinstance(value, DataType):
            return value
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise PayloadError(f"unknown Sparkplug datatype id {value}") from None
        for member in cls:
            if member.name.lower() == str(value).lower():
                return member
        raise PayloadError(f"unknown Sparkplug datatype {value!r}; use one of {', '.join(m.name for m in cls)}")


# (bits, signed) of every integer type; DateTime is an unsigned 64-bit millisecond count.
INT_RANGES: dict[DataType, tuple[int, bool]] = {
    DataType.Int8: (8, True),
    DataType.Int16: (16, True),
    DataType.Int32: (32, True),
    DataType.Int64: (64, True),
    DataType.UInt8: (8, False),
    DataType.UInt16: (16, False),
    DataType.UInt32: (32, False),
    DataType.UInt64: (64, False),
    DataType.DateTime: (64, False),
}
_INT_FIELD = {t: ("long_value" if bits == 64 else "int_value") for t, (bits, _) in INT_RANGES.items()}
STRING_TYPES = frozenset({DataType.String, DataType.Text, DataType.UUID})
BYTES_TYPES = frozenset({DataType.Bytes, DataType.File})
FLOAT_TYPES = frozenset({DataType.Float, DataType.Double})
NUMERIC_TYPES = frozenset(INT_RANGES) | FLOAT_TYPES

# struct formats of the fixed-width array types, little-endian.
_ARRAY_FORMATS: dict[DataType, str] = {
    DataType.Int8Array: "b",
    DataType.Int16Array: "h",
    DataType.Int32Array: "i",
    DataType.Int64Array: "q",
    DataType.UInt8Array: "B",
    DataType.UInt16Array: "H",
    DataType.UInt32Array: "I",
    DataType.UInt64Array: "Q",
    DataType.FloatArray: "f",
    DataType.DoubleArray: "d",
    DataType.DateTimeArray: "Q",
}
ARRAY_TYPES = frozenset(_ARRAY_FORMATS) | {DataType.BooleanArray, DataType.StringArray}
ARRAY_ELEMENT: dict[DataType, DataType] = {
    DataType.Int8Array: DataType.Int8,
    DataType.Int16Array: DataType.Int16,
    DataType.Int32Array: DataType.Int32,
    DataType.Int64Array: DataType.Int64,
    DataType.UInt8Array: DataType.UInt8,
    DataType.UInt16Array: DataType.UInt16,
    DataType.UInt32Array: DataType.UInt32,
    DataType.UInt64Array: DataType.UInt64,
    DataType.FloatArray: DataType.Float,
    DataType.DoubleArray: DataType.Double,
    DataType.BooleanArray: DataType.Boolean,
    DataType.StringArray: DataType.String,
    DataType.DateTimeArray: DataType.DateTime,
}

# Types a DataSet cell, a Template parameter or a PropertyValue may hold (they have no bytes field).
SCALAR_TYPES = frozenset(INT_RANGES) | FLOAT_TYPES | STRING_TYPES | {DataType.Boolean}


def now_ms() -> int:
    """Milliseconds since the epoch, taken at call time."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class PropertyValue:
    """One property of a metric's PropertySet; value is a scalar, a dict (PropertySet) or a list of dicts."""

    type: DataType
    value: Any = None

    @property
    def is_null(self) -> bool:
        return self.value is None


@dataclass(slots=True)
class MetaData:
    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


@dataclass(slots=True)
class DataSet:
    """A table of typed columns; `rows` holds Python values, None for a missing cell."""

    columns: list[str]
    types: list[DataType]
    rows: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.types):
            raise PayloadError(f"DataSet has {len(self.columns)} columns but {len(self.types)} types")
        self.types = [DataType.parse(t) for t in self.types]
        for t in self.types:
            if t not in SCALAR_TYPES:
                raise PayloadError(f"DataSet column type {t.name} is not a scalar type")


@dataclass(slots=True)
class TemplateParameter:
    name: str
    type: DataType
    value: Any = None


@dataclass(slots=True)
class Template:
    """A template definition (is_definition=True) or an instance of one (template_ref set)."""

    metrics: list[Metric] = field(default_factory=list)
    parameters: list[TemplateParameter] = field(default_factory=list)
    version: str | None = None
    template_ref: str | None = None
    is_definition: bool = False


@dataclass(slots=True)
class Metric:
    """A Sparkplug metric as Python sees it. `value` None means is_null."""

    name: str | None
    datatype: DataType
    value: Any = None
    alias: int | None = None
    timestamp: int | None = None
    is_historical: bool = False
    is_transient: bool = False
    properties: dict[str, PropertyValue] | None = None
    metadata: MetaData | None = None

    @property
    def is_null(self) -> bool:
        return self.value is None


@dataclass(slots=True)
class Payload:
    timestamp: int | None = None
    metrics: list[Metric] = field(default_factory=list)
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


# ---------------------------------------------------------------------------- scalars


def _check_int(datatype: DataType, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if datatype is DataType.DateTime and isinstance(value, _dt.datetime):
            value = _datetime_ms(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise PayloadError(f"{datatype.name} needs an integer, got {type(value).__name__} {value!r}")
    bits, signed = INT_RANGES[datatype]
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise PayloadError(f"{value} is out of range for {datatype.name} ({low}..{high})")
    return value


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_FLOAT32 = struct.Struct("<f")


def _datetime_ms(value: _dt.datetime) -> int:
    if value.tzinfo is None:
        raise PayloadError("a DateTime value needs a timezone (use UTC)")
    # Integer arithmetic: `timestamp() * 1000` is a float and is off by one ms for ~0.6% of instants.
    return (value - _EPOCH) // _dt.timedelta(milliseconds=1)


def coerce(datatype: DataType, value: Any) -> Any:
    """Validate `value` for `datatype` and return it in canonical Python form.

    Used on encode and by writes (DCMD/NCMD) so a wrong type fails before anything is sent.
    """
    if value is None:
        return None
    if datatype in INT_RANGES:
        return _check_int(datatype, value)
    if datatype in FLOAT_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PayloadError(f"{datatype.name} needs a number, got {type(value).__name__} {value!r}")
        value = float(value)
        if datatype is DataType.Float:
            # protobuf would silently turn a finite value beyond float32 into infinity.
            try:
                _FLOAT32.pack(value)
            except OverflowError:
                raise PayloadError(f"{value} is out of range for Float (32-bit); use Double") from None
        return value
    if datatype is DataType.Boolean:
        if not isinstance(value, bool):
            raise PayloadError(f"Boolean needs true or false, got {type(value).__name__} {value!r}")
        return value
    if datatype in STRING_TYPES:
        if datatype is DataType.UUID and isinstance(value, _uuid.UUID):
            return str(value)
        if not isinstance(value, str):
            raise PayloadError(f"{datatype.name} needs a string, got {type(value).__name__} {value!r}")
        return value
    if datatype in BYTES_TYPES:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise PayloadError(f"{datatype.name} needs bytes, got {type(value).__name__}")
        return bytes(value)
    if datatype in ARRAY_TYPES:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise PayloadError(f"{datatype.name} needs a list, got {type(value).__name__}")
        element = ARRAY_ELEMENT[datatype]
        items = []
        for item in value:
            if item is None:
                raise PayloadError(f"{datatype.name} cannot hold null elements")
            item = coerce(element, item)
            if datatype is DataType.StringArray and "\x00" in item:
                raise PayloadError("a StringArray element cannot contain NUL (it terminates each string)")
            items.append(item)
        return items
    if datatype is DataType.DataSet:
        if not isinstance(value, DataSet):
            raise PayloadError(f"DataSet needs a DataSet, got {type(value).__name__}")
        return value
    if datatype is DataType.Template:
        if not isinstance(value, Template):
            raise PayloadError(f"Template needs a Template, got {type(value).__name__}")
        return value
    if datatype is DataType.PropertySet:
        if not isinstance(value, dict):
            raise PayloadError("PropertySet needs a mapping of name to PropertyValue")
        return value
    if datatype is DataType.PropertySetList:
        if not isinstance(value, list):
            raise PayloadError("PropertySetList needs a list of PropertySets")
        return value
    raise PayloadError(f"cannot carry a value of datatype {datatype.name}")


def _to_twos(value: int, bits: int) -> int:
    return value & ((1 << bits) - 1)


def _from_unsigned(raw: int, datatype: DataType) -> int:
    bits, signed = INT_RANGES[datatype]
    value = raw & ((1 << bits) - 1)
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    if raw == value:
        return value
    # A negative value may arrive as a pattern of its own width (Int8 -1 as 255), of the
    # 32-bit field (4294967295) or of a 64-bit one; anything else does not fit the datatype,
    # and masking it would hand on a wrong number without a word.
    if value < 0 and raw in (value + (1 << bits), value + (1 << 32), value + (1 << 64)):
        return value
    raise PayloadError(f"{raw} does not fit {datatype.name}")


def _text(value: Any, what: str) -> str:
    # upb returns bytes instead of str for a proto2 string field that is not valid UTF-8.
    if isinstance(value, bytes):
        raise PayloadError(f"{what} is not valid UTF-8: {value[:40]!r}")
    return value


def _set_scalar(msg: Any, datatype: DataType, value: Any) -> None:
    """Write a scalar into a message with int/long/float/double/boolean/string fields."""
    if datatype in INT_RANGES:
        bits, signed = INT_RANGES[datatype]
        if bits == 64:
            msg.long_value = _to_twos(value, 64)
        else:
            msg.int_value = _to_twos(value, 32)
    elif datatype is DataType.Float:
        msg.float_value = value
    elif datatype is DataType.Double:
        msg.double_value = value
    elif datatype is DataType.Boolean:
        msg.boolean_value = value
    elif datatype in STRING_TYPES:
        msg.string_value = value
    else:
        raise PayloadError(f"{datatype.name} is not a scalar type")


def _get_scalar(msg: Any, datatype: DataType) -> Any:
    """Read a scalar from a DataSetValue, Parameter or PropertyValue (None when unset)."""
    kind = msg.WhichOneof("value")
    if kind is None:
        return None
    if datatype not in SCALAR_TYPES:
        raise PayloadError(f"{datatype.name} is not a scalar type")
    return decode_value(datatype, kind, getattr(msg, kind))


# ---------------------------------------------------------------------------- arrays


def encode_array(datatype: DataType, values: list[Any]) -> bytes:
    """Pack an array value as the specification's little-endian bytes."""
    if datatype is DataType.BooleanArray:
        packed = bytearray(struct.pack("<I", len(values)))
        packed.extend(bytes((len(values) + 7) // 8))
        for i, bit in enumerate(values):
            if bit:
                packed[4 + i // 8] |= 0x80 >> (i % 8)
        return bytes(packed)
    if datatype is DataType.StringArray:
        out = bytearray()
        for s in values:
            encoded = s.encode("utf-8")
            if b"\x00" in encoded:
                raise PayloadError("a StringArray element cannot contain NUL")
            out += encoded + b"\x00"
        return bytes(out)
    fmt = _ARRAY_FORMATS[datatype]
    return struct.pack(f"<{len(values)}{fmt}", *values)


def decode_array(datatype: DataType, data: bytes) -> list[Any]:
    """Unpack `bytes_value` of an array metric."""
    if datatype is DataType.BooleanArray:
        if len(data) < 4:
            raise PayloadError("BooleanArray shorter than its 4-byte count")
        (count,) = struct.unpack_from("<I", data)
        if len(data) - 4 < (count + 7) // 8:
            raise PayloadError(f"BooleanArray claims {count} values but carries {len(data) - 4} bytes")
        return [bool(data[4 + i // 8] & (0x80 >> (i % 8))) for i in range(count)]
    if datatype is DataType.StringArray:
        if not data:
            return []
        if not data.endswith(b"\x00"):
            raise PayloadError("StringArray is not NUL-terminated")
        try:
            return [part.decode("utf-8") for part in data[:-1].split(b"\x00")]
        except UnicodeDecodeError as exc:
            raise PayloadError(f"StringArray is not UTF-8: {exc}") from None
    fmt = _ARRAY_FORMATS[datatype]
    size = struct.calcsize(fmt)
    if len(data) % size:
        raise PayloadError(f"{datatype.name} has {len(data)} bytes, not a multiple of {size}")
    values = list(struct.unpack(f"<{len(data) // size}{fmt}", data))
    if datatype is DataType.FloatArray:
        values = [float(v) for v in values]
    return values


# ---------------------------------------------------------------------------- compound values


_QUALITY_CODES = frozenset({0, 192, 500})


def _encode_properties(target: Any, props: dict[str, PropertyValue]) -> None:
    for key, prop in props.items():
        if not isinstance(prop, PropertyValue):
            raise PayloadError(f"property {key!r} must be a PropertyValue, got {type(prop).__name__}")
        if key == "Quality" and (DataType.parse(prop.type) is not DataType.Int32 or prop.value not in _QUALITY_CODES):
            raise PayloadError(f"property Quality must be an Int32 of 0, 192 or 500, got {prop.type!r} {prop.value!r}")
        target.keys.append(key)
        _encode_property_value(target.values.add(), prop)


def _encode_property_value(msg: Any, prop: PropertyValue) -> None:
    datatype = DataType.parse(prop.type)
    msg.type = int(datatype)
    if prop.value is None:
        msg.is_null = True
    elif datatype is DataType.PropertySet:
        _encode_properties(msg.propertyset_value, prop.value)
    elif datatype is DataType.PropertySetList:
        for item in prop.value:
            _encode_properties(msg.propertysets_value.propertyset.add(), item)
    else:
        _set_scalar(msg, datatype, coerce(datatype, prop.value))


def _decode_properties(msg: Any) -> dict[str, PropertyValue]:
    if len(msg.keys) != len(msg.values):
        raise PayloadError(f"PropertySet has {len(msg.keys)} keys but {len(msg.values)} values")
    return {_text(key, "a property key"): _decode_property_value(value) for key, value in zip(msg.keys, msg.values)}


def _decode_property_value(msg: Any) -> PropertyValue:
    datatype = DataType.parse(msg.type)
    if msg.is_null:
        return PropertyValue(datatype, None)
    if datatype is DataType.PropertySet:
        return PropertyValue(datatype, _decode_properties(msg.propertyset_value))
    if datatype is DataType.PropertySetList:
        return PropertyValue(datatype, [_decode_properties(ps) for ps in msg.propertysets_value.propertyset])
    return PropertyValue(datatype, _get_scalar(msg, datatype))


def _encode_dataset(msg: Any, ds: DataSet) -> None:
    msg.num_of_columns = len(ds.columns)
    msg.columns.extend(ds.columns)
    msg.types.extend(int(t) for t in ds.types)
    for r, row in enumerate(ds.rows):
        if len(row) != len(ds.columns):
            raise PayloadError(f"DataSet row {r} has {len(row)} cells for {len(ds.columns)} columns")
        row_msg = msg.rows.add()
        for datatype, cell in zip(ds.types, row):
            element = row_msg.elements.add()
            if cell is not None:
                _set_scalar(element, datatype, coerce(datatype, cell))
    return None


def _decode_dataset(msg: Any) -> DataSet:
    types = [DataType.parse(t) for t in msg.types]
    if msg.HasField("num_of_columns") and msg.num_of_columns != len(msg.columns):
        raise PayloadError(f"DataSet says {msg.num_of_columns} columns but names {len(msg.columns)}")
    ds = DataSet([_text(c, "a DataSet column name") for c in msg.columns], types)
    for r, row in enumerate(msg.rows):
        if len(row.elements) != len(types):
            raise PayloadError(f"DataSet row {r} has {len(row.elements)} cells for {len(types)} columns")
        ds.rows.append([_get_scalar(cell, t) for cell, t in zip(row.elements, types)])
    return ds


def _encode_template(msg: Any, tpl: Template) -> None:
    if tpl.is_definition and tpl.template_ref is not None:
        raise PayloadError("a Template definition must not carry template_ref; only instances name their definition")
    if not tpl.is_definition and not tpl.template_ref:
        raise PayloadError("a Template instance needs template_ref: the name of its definition")
    if tpl.version is not None:
        msg.version = tpl.version
    if tpl.template_ref is not None:
        msg.template_ref = tpl.template_ref
    msg.is_definition = tpl.is_definition
    for param in tpl.parameters:
        p = msg.parameters.add()
        p.name = param.name
        ptype = DataType.parse(param.type)
        p.type = int(ptype)
        if param.value is not None:
            _set_scalar(p, ptype, coerce(ptype, param.value))
    for metric in tpl.metrics:
        encode_metric(msg.metrics.add(), metric)


def _decode_template(msg: Any) -> Template:
    params = []
    for p in msg.parameters:
        ptype = DataType.parse(p.type)
        params.append(TemplateParameter(_text(p.name, "a Template parameter name"), ptype, _get_scalar(p, ptype)))
    return Template(
        metrics=[decode_metric(m) for m in msg.metrics],
        parameters=params,
        version=_text(msg.version, "a Template version") if msg.HasField("version") else None,
        template_ref=_text(msg.template_ref, "a template_ref") if msg.HasField("template_ref") else None,
        is_definition=msg.is_definition,
    )


# ---------------------------------------------------------------------------- metrics and payloads


def encode_metric(msg: Any, metric: Metric) -> None:
    """Fill a protobuf Metric from a Metric dataclass; raises PayloadError when the value does not fit."""
    datatype = DataType.parse(metric.datatype)
    if metric.name is not None:
        msg.name = metric.name
    if metric.alias is not None:
        msg.alias = metric.alias
    if metric.timestamp is not None:
        msg.timestamp = metric.timestamp
    msg.datatype = int(datatype)
    if metric.is_historical:
        msg.is_historical = True
    if metric.is_transient:
        msg.is_transient = True
    if metric.metadata is not None:
        md = metric.metadata
        for name in MetaData.__slots__:
            value = getattr(md, name)
            if value is not None:
                setattr(msg.metadata, name, value)
    if metric.properties:
        _encode_properties(msg.properties, metric.properties)
    value = metric.value
    if value is None:
        msg.is_null = True
        return
    # Masking or protobuf's own conversions would otherwise send a wrong value without a word.
    value = coerce(datatype, value)
    if datatype in INT_RANGES:
        if INT_RANGES[datatype][0] == 64:
            msg.long_value = value & 0xFFFFFFFFFFFFFFFF
        else:
            msg.int_value = value & 0xFFFFFFFF
    elif datatype is DataType.Double:
        msg.double_value = value
    elif datatype is DataType.Float:
        msg.float_value = value
    elif datatype is DataType.Boolean:
        msg.boolean_value = value
    elif datatype in STRING_TYPES:
        msg.string_value = value
    elif datatype in BYTES_TYPES:
        msg.bytes_value = value
    elif datatype in ARRAY_TYPES:
        msg.bytes_value = encode_array(datatype, value)
    elif datatype is DataType.DataSet:
        _encode_dataset(msg.dataset_value, value)
    elif datatype is DataType.Template:
        _encode_template(msg.template_value, value)
    else:
        raise PayloadError(f"metric {metric.name!r}: datatype {datatype.name} cannot be a metric value")


def decode_metric(msg: Any) -> Metric:
    """Build a Metric dataclass from a protobuf Metric. Raises PayloadError on inconsistency."""
    has = msg.HasField
    datatype = DataType.parse(msg.datatype) if has("datatype") else DataType.Unknown
    metric = Metric(
        name=_text(msg.name, "a metric name") if has("name") else None,
        datatype=datatype,
        alias=msg.alias if has("alias") else None,
        timestamp=msg.timestamp if has("timestamp") else None,
        is_historical=msg.is_historical,
        is_transient=msg.is_transient,
    )
    if has("properties"):
        metric.properties = _decode_properties(msg.properties)
    if has("metadata"):
        md = msg.metadata
        metric.metadata = MetaData(
            **{n: _text(getattr(md, n), f"metadata {n}") for n in MetaData.__slots__ if md.HasField(n)}
        )
    kind = msg.WhichOneof("value")
    if msg.is_null or kind is None:
        return metric
    if datatype is DataType.Unknown:
        # A DATA metric sent by alias omits its datatype (payloads-metric-datatype-not-req): keep
        # the field as sent, for a reader that knows the birth to reinterpret with decode_value.
        metric.value = _raw_value(kind, getattr(msg, kind))
        return metric
    metric.value = decode_value(datatype, kind, getattr(msg, kind))
    return metric


def _raw_value(kind: str, raw: Any) -> Any:
    if kind == "dataset_value":
        return _decode_dataset(raw)
    if kind == "template_value":
        return _decode_template(raw)
    if kind == "string_value":
        return _text(raw, "a string value")
    if kind == "extension_value":
        raise PayloadError("metric values in extension_value are not supported")
    return raw


def decode_value(datatype: DataType, kind: str, raw: Any) -> Any:
    """Interpret the raw oneof field `kind` of a metric as `datatype`.

    The host calls this for DATA metrics that arrive with an alias and no datatype,
    using the datatype learnt from the birth.
    """
    if datatype in INT_RANGES:
        if kind not in ("int_value", "long_value"):
            raise PayloadError(f"{datatype.name} value arrived in {kind}")
        return _from_unsigned(raw, datatype)
    if datatype in FLOAT_TYPES:
        if kind not in ("float_value", "double_value"):
            raise PayloadError(f"{datatype.name} value arrived in {kind}")
        return raw
    if datatype is DataType.Boolean:
        if kind != "boolean_value":
            raise PayloadError(f"Boolean value arrived in {kind}")
        return raw
    if datatype in STRING_TYPES:
        if kind != "string_value":
            raise PayloadError(f"{datatype.name} value arrived in {kind}")
        return _text(raw, f"a {datatype.name} value")
    if datatype in BYTES_TYPES:
        if kind != "bytes_value":
            raise PayloadError(f"{datatype.name} value arrived in {kind}")
        return raw
    if datatype in ARRAY_TYPES:
        if kind != "bytes_value":
            raise PayloadError(f"{datatype.name} value arrived in {kind}")
        return decode_array(datatype, raw)
    if datatype is DataType.DataSet:
        if kind != "dataset_value":
            raise PayloadError(f"DataSet value arrived in {kind}")
        return _decode_dataset(raw)
    if datatype is DataType.Template:
        if kind != "template_value":
            raise PayloadError(f"Template value arrived in {kind}")
        return _decode_template(raw)
    raise PayloadError(f"a metric value of datatype {datatype.name} is not allowed")


def encode_payload(payload: Payload) -> bytes:
    """Serialise a Payload to Sparkplug B bytes."""
    msg = pb.Payload()
    if payload.timestamp is not None:
        msg.timestamp = payload.timestamp
    if payload.seq is not None:
        msg.seq = payload.seq
    if payload.uuid is not None:
        msg.uuid = payload.uuid
    if payload.body is not None:
        msg.body = payload.body
    add = msg.metrics.add
    for metric in payload.metrics:
        try:
            encode_metric(add(), metric)
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            # protobuf's own checks (a negative alias, a str where bytes belong, ...).
            raise PayloadError(f"metric {metric.name!r} cannot be encoded: {exc}") from None
    return msg.SerializeToString()


def parse_payload(data: bytes) -> Any:
    """Parse bytes into the raw protobuf Payload (for hot paths that resolve aliases themselves)."""
    msg = pb.Payload()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise PayloadError(f"not a Sparkplug B payload: {exc}") from None
    return msg


def decode_payload(data: bytes) -> Payload:
    """Parse Sparkplug B bytes into a Payload. Raises PayloadError on anything malformed."""
    msg = parse_payload(data)
    try:
        return Payload(
            timestamp=msg.timestamp if msg.HasField("timestamp") else None,
            metrics=[decode_metric(m) for m in msg.metrics],
            seq=msg.seq if msg.HasField("seq") else None,
            uuid=_text(msg.uuid, "the payload uuid") if msg.HasField("uuid") else None,
            body=msg.body if msg.HasField("body") else None,
        )
    except (ValueError, struct.error) as exc:
        raise PayloadError(f"malformed Sparkplug B payload: {exc}") from None


# ---------------------------------------------------------------------------- JSON view


def to_json_value(datatype: DataType, value: Any) -> Any:
    """A JSON-friendly form of a metric value, for the UNS mirror and the sniffer."""
    if value is None:
        return None
    if datatype in BYTES_TYPES:
        import base64

        return base64.b64encode(value).decode("ascii")
    if datatype in FLOAT_TYPES:
        return value if math.isfinite(value) else str(value)
    if datatype in (DataType.FloatArray, DataType.DoubleArray):
        return [v if math.isfinite(v) else str(v) for v in value]
    if datatype is DataType.DataSet:
        return {
            "columns": value.columns,
            "types": [t.name for t in value.types],
            "rows": value.rows,
        }
    if datatype is DataType.Template:
        return {
            "template_ref": value.template_ref,
            "is_definition": value.is_definition,
            "version": value.version,
            "parameters": {p.name: p.value for p in value.parameters},
            "metrics": {m.name: to_json_value(m.datatype, m.value) for m in value.metrics},
        }
    if datatype in (DataType.PropertySet, DataType.PropertySetList):
        return properties_to_json(value) if isinstance(value, dict) else [properties_to_json(v) for v in value]
    return value


def properties_to_json(props: dict[str, PropertyValue]) -> dict[str, Any]:
    return {key: to_json_value(prop.type, prop.value) for key, prop in props.items()}


def metric_to_json(metric: Metric) -> dict[str, Any]:
    """A full JSON view of one metric (sniffer output)."""
    out: dict[str, Any] = {"name": metric.name, "datatype": metric.datatype.name}
    if metric.alias is not None:
        out["alias"] = metric.alias
    if metric.timestamp is not None:
        out["timestamp"] = metric.timestamp
    out["value"] = to_json_value(metric.datatype, metric.value)
    if metric.is_null:
        out["is_null"] = True
    if metric.is_historical:
        out["is_historical"] = True
    if metric.is_transient:
        out["is_transient"] = True
    if metric.properties:
        out["properties"] = properties_to_json(metric.properties)
    if metric.metadata is not None:
        out["metadata"] = {n: getattr(metric.metadata, n) for n in MetaData.__slots__ if getattr(metric.metadata, n) is not None}
    return out


def payload_to_json(payload: Payload) -> dict[str, Any]:
    out: dict[str, Any] = {"timestamp": payload.timestamp, "seq": payload.seq}
    if payload.uuid is not None:
        out["uuid"] = payload.uuid
    out["metrics"] = [metric_to_json(m) for m in payload.metrics]
    return out
