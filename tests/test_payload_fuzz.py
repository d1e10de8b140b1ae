"""Property-style checks of the codec: random valid payloads round-trip, and no byte string makes
decode_payload fail with anything but PayloadError or hand back values of the wrong Python type.

Seeded, so a failure reproduces; the seed and the case number are in the assertion message.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest

from hub.errors import PayloadError
from hub.sparkplug import sparkplug_b_pb2 as pb
from hub.sparkplug.payload import (
    ARRAY_ELEMENT,
    ARRAY_TYPES,
    BYTES_TYPES,
    FLOAT_TYPES,
    INT_RANGES,
    SCALAR_TYPES,
    STRING_TYPES,
    DataSet,
    DataType,
    MetaData,
    Metric,
    Payload,
    PropertyValue,
    Template,
    TemplateParameter,
    decode_payload,
    decode_value,
    encode_payload,
    parse_payload,
)

SEED = 20240611
ROUND_TRIPS = 400
MUTANTS = 4000
GARBAGE = 1000

_TEXT = "aZ0 _-./:é°Ж\U0001f957"


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _int_for(rng: random.Random, datatype: DataType) -> int:
    bits, signed = INT_RANGES[datatype]
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return rng.choice([low, high, 0, rng.randint(low, high), rng.randint(low, high)])


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_TEXT) for _ in range(rng.randrange(8)))


def random_scalar(rng: random.Random, datatype: DataType) -> Any:
    if datatype in INT_RANGES:
        return _int_for(rng, datatype)
    if datatype is DataType.Float:
        return _f32(rng.choice([0.0, -1.5, math.inf, rng.uniform(-1e30, 1e30), rng.uniform(-1, 1)]))
    if datatype is DataType.Double:
        return rng.choice([0.0, -math.inf, 1e308, rng.uniform(-1e300, 1e300), rng.random()])
    if datatype is DataType.Boolean:
        return rng.random() < 0.5
    if datatype in STRING_TYPES:
        return _text(rng)
    raise AssertionError(datatype)


def random_value(rng: random.Random, datatype: DataType, depth: int) -> Any:
    if rng.random() < 0.08:
        return None
    if datatype in SCALAR_TYPES:
        return random_scalar(rng, datatype)
    if datatype in BYTES_TYPES:
        return rng.randbytes(rng.randrange(12))
    if datatype in ARRAY_TYPES:
        return [random_scalar(rng, ARRAY_ELEMENT[datatype]) for _ in range(rng.randrange(6))]
    if datatype is DataType.DataSet:
        types = [rng.choice(sorted(SCALAR_TYPES)) for _ in range(rng.randrange(4))]
        rows = [[random_scalar(rng, t) if rng.random() < 0.8 else None for t in types] for _ in range(rng.randrange(4))]
        return DataSet([f"c{i}" for i in range(len(types))], types, rows)
    if datatype is DataType.Template:
        definition = rng.random() < 0.5
        params = []
        for i in range(rng.randrange(3)):
            ptype = rng.choice(sorted(SCALAR_TYPES))
            params.append(TemplateParameter(f"p{i}", ptype, random_scalar(rng, ptype) if rng.random() < 0.8 else None))
        return Template(
            metrics=[random_metric(rng, depth + 1) for _ in range(rng.randrange(3))],
            parameters=params,
            version=rng.choice([None, "1.0"]),
            template_ref=None if definition else "T" + _text(rng),
            is_definition=definition,
        )
    raise AssertionError(datatype)


def random_properties(rng: random.Random, depth: int) -> dict[str, PropertyValue]:
    props: dict[str, PropertyValue] = {}
    for i in range(rng.randrange(4)):
        roll = rng.random()
        if roll < 0.15 and depth < 2:
            props[f"set{i}"] = PropertyValue(DataType.PropertySet, random_properties(rng, depth + 1))
        elif roll < 0.25 and depth < 2:
            props[f"list{i}"] = PropertyValue(
                DataType.PropertySetList, [random_properties(rng, depth + 1) for _ in range(rng.randrange(3))]
            )
        elif roll < 0.35:
            props["Quality"] = PropertyValue(DataType.Int32, rng.choice([0, 192, 500]))
        else:
            ptype = rng.choice(sorted(SCALAR_TYPES))
            props[f"p{i}"] = PropertyValue(ptype, random_scalar(rng, ptype) if rng.random() < 0.9 else None)
    return props


def random_metric(rng: random.Random, depth: int = 0) -> Metric:
    choices = [t for t in DataType if t not in (DataType.Unknown, DataType.PropertySet, DataType.PropertySetList)]
    if depth >= 2:
        choices = [t for t in choices if t is not DataType.Template]
    datatype = rng.choice(choices)
    return Metric(
        name=rng.choice([None, "m/" + _text(rng)]),
        datatype=datatype,
        value=random_value(rng, datatype, depth),
        alias=rng.choice([None, rng.randrange(2**64)]),
        timestamp=rng.choice([None, rng.randrange(2**64)]),
        is_historical=rng.random() < 0.2,
        is_transient=rng.random() < 0.2,
        # an empty dict is sent as no PropertySet and reads back as None
        properties=(random_properties(rng, 0) or None) if rng.random() < 0.3 else None,
        metadata=MetaData(size=rng.randrange(2**64), md5=_text(rng)) if rng.random() < 0.2 else None,
    )


def random_payload(rng: random.Random) -> Payload:
    return Payload(
        timestamp=rng.choice([None, rng.randrange(2**64)]),
        seq=rng.choice([None, rng.randrange(256)]),
        uuid=rng.choice([None, _text(rng)]),
        body=rng.choice([None, rng.randbytes(rng.randrange(5))]),
        metrics=[random_metric(rng) for _ in range(rng.randrange(6))],
    )


# ---------------------------------------------------------------------------- type invariants of decoded payloads

_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))


def check_value(datatype: DataType, value: Any, where: str) -> None:
    """A decoded value has the Python type its datatype promises."""
    if value is None:
        return
    if datatype is DataType.Unknown:
        # alias-only DATA metric: the raw field as sent
        assert isinstance(value, (int, float, bool, str, bytes, DataSet, Template)), where
    elif datatype in INT_RANGES:
        bits, signed = INT_RANGES[datatype]
        assert type(value) is int, where
        low = -(1 << (bits - 1)) if signed else 0
        high = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        assert low <= value <= high, where
    elif datatype in FLOAT_TYPES:
        assert type(value) is float, where
    elif datatype is DataType.Boolean:
        assert type(value) is bool, where
    elif datatype in STRING_TYPES:
        assert type(value) is str, where
    elif datatype in BYTES_TYPES:
        assert type(value) is bytes, where
    elif datatype in ARRAY_TYPES:
        assert type(value) is list, where
        for item in value:
            check_value(ARRAY_ELEMENT[datatype], item, where)
    elif datatype is DataType.DataSet:
        assert isinstance(value, DataSet), where
        assert all(type(c) is str for c in value.columns), where
        for row in value.rows:
            assert len(row) == len(value.types), where
            for t, cell in zip(value.types, row):
                check_value(t, cell, where)
    elif datatype is DataType.Template:
        assert isinstance(value, Template), where
        assert isinstance(value.version, _OPT_STR) and isinstance(value.template_ref, _OPT_STR), where
        for p in value.parameters:
            assert type(p.name) is str, where
            check_value(p.type, p.value, where)
        for m in value.metrics:
            check_metric(m, where)
    elif datatype is DataType.PropertySet:
        check_properties(value, where)
    elif datatype is DataType.PropertySetList:
        assert type(value) is list, where
        for item in value:
            check_properties(item, where)
    else:
        raise AssertionError(f"{where}: value for {datatype!r}")


def check_properties(props: dict[str, PropertyValue], where: str) -> None:
    assert type(props) is dict, where
    for key, prop in props.items():
        assert type(key) is str and isinstance(prop, PropertyValue), where
        check_value(prop.type, prop.value, where)


def check_metric(metric: Metric, where: str) -> None:
    assert isinstance(metric.datatype, DataType), where
    assert isinstance(metric.name, _OPT_STR), where
    assert isinstance(metric.alias, _OPT_INT) and isinstance(metric.timestamp, _OPT_INT), where
    assert type(metric.is_historical) is bool and type(metric.is_transient) is bool, where
    if metric.properties is not None:
        check_properties(metric.properties, where)
    if metric.metadata is not None:
        for name in ("content_type", "file_name", "file_type", "md5", "description"):
            assert isinstance(getattr(metric.metadata, name), _OPT_STR), where
    check_value(metric.datatype, metric.value, where)


def check_payload(payload: Payload, where: str) -> None:
    assert isinstance(payload.timestamp, _OPT_INT) and isinstance(payload.seq, _OPT_INT), where
    assert isinstance(payload.uuid, _OPT_STR), where
    assert isinstance(payload.body, (bytes, type(None))), where
    for metric in payload.metrics:
        check_metric(metric, where)


# ---------------------------------------------------------------------------- the properties


def test_random_valid_payloads_round_trip_exactly():
    rng = random.Random(SEED)
    for case in range(ROUND_TRIPS):
        payload = random_payload(rng)
        data = encode_payload(payload)
        back = decode_payload(data)
        assert back == payload, f"seed {SEED} case {case}"
        check_payload(back, f"seed {SEED} case {case}")
        # encoding is deterministic: the decoded payload encodes to the very same bytes
        assert encode_payload(back) == data, f"seed {SEED} case {case}"


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    how = rng.randrange(6)
    if how == 0 and b:  # flip a few bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif how == 1:  # truncate
        del b[rng.randrange(len(b) + 1):]
    elif how == 2 and b:  # overwrite one byte
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif how == 3:  # insert random bytes
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.randbytes(rng.randint(1, 6))
    elif how == 4 and len(b) > 2:  # splice a chunk from elsewhere in the message
        i, j = sorted(rng.sample(range(len(b)), 2))
        k = rng.randrange(len(b))
        b[k:k] = b[i:j]
    else:  # drop a chunk
        if b:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
    return bytes(b)


def _decode_or_payload_error(data: bytes, where: str) -> Payload | None:
    try:
        payload = decode_payload(data)
    except PayloadError:
        return None
    except Exception as exc:  # the property under test: nothing but PayloadError escapes
        pytest.fail(f"{where}: decode_payload raised {type(exc).__name__}: {exc} on {data.hex()}")
    check_payload(payload, where)
    return payload


def test_mutated_encodings_decode_or_raise_payload_error_only():
    rng = random.Random(SEED + 1)
    seeds = [encode_payload(random_payload(rng)) for _ in range(60)]
    outcomes = {"decoded": 0, "refused": 0}
    for case in range(MUTANTS):
        data = _mutate(rng, rng.choice(seeds))
        if rng.random() < 0.3:
            data = _mutate(rng, data)
        result = _decode_or_payload_error(data, f"seed {SEED + 1} case {case}")
        outcomes["decoded" if result is not None else "refused"] += 1
    # both branches must really be exercised, or the mutations are too weak (or too strong)
    assert outcomes["decoded"] > MUTANTS // 10 and outcomes["refused"] > MUTANTS // 10, outcomes


def test_random_bytes_decode_or_raise_payload_error_only():
    rng = random.Random(SEED + 2)
    for case in range(GARBAGE):
        data = rng.randbytes(rng.randrange(64))
        _decode_or_payload_error(data, f"seed {SEED + 2} case {case}")


def test_decode_value_on_mutated_raw_metrics_returns_or_raises_payload_error_only():
    # The host's hot path: parse_payload, then decode_value with the datatype learnt from a birth.
    rng = random.Random(SEED + 3)
    seeds = [encode_payload(random_payload(rng)) for _ in range(40)]
    datatypes = list(DataType)
    for case in range(1500):
        data = _mutate(rng, rng.choice(seeds))
        try:
            msg = parse_payload(data)
        except PayloadError:
            continue
        for metric in msg.metrics:
            kind = metric.WhichOneof("value")
            if kind is None:
                continue
            datatype = rng.choice(datatypes)
            try:
                value = decode_value(datatype, kind, getattr(metric, kind))
            except PayloadError:
                continue
            except Exception as exc:
                pytest.fail(f"seed {SEED + 3} case {case}: decode_value({datatype!r}, {kind}) raised {exc!r}")
            check_value(datatype, value, f"seed {SEED + 3} case {case}")


def _nested_templates(depth: int) -> bytes:
    msg = pb.Payload()
    metric = msg.metrics.add(name="m", datatype=int(DataType.Template))
    for _ in range(depth):
        metric.template_value.template_ref = "T"
        metric = metric.template_value.metrics.add(name="m", datatype=int(DataType.Template))
    metric.template_value.template_ref = "T"
    return msg.SerializeToString()


def test_deeply_nested_templates_decode_within_limits_and_are_refused_beyond():
    payload = decode_payload(_nested_templates(40))
    check_payload(payload, "depth 40")
    # protobuf's own nesting limit (100 messages) ends a hostile nesting before Python's recursion limit
    with pytest.raises(PayloadError):
        decode_payload(_nested_templates(150))
