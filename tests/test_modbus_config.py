"""Modbus connector configuration: refused at load with messages that say how to fix; sample and plugin stay in step."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from connectors.modbus.config import ModbusDevice, ModbusSettings, ModbusTag, sample_settings, sample_yaml
from hub.sparkplug.payload import DataType

SAMPLE = Path(__file__).resolve().parent.parent / "connectors" / "modbus" / "sample.yaml"


def device(*tags: dict, **extra) -> dict:
    return {"device_id": "filler", "host": "127.0.0.1", "groups": [{"tags": list(tags)}], **extra}


def settings(*devices: dict, **extra) -> ModbusSettings:
    return ModbusSettings.model_validate(
        {"type": "modbus", "edge_node_id": "salad-plc", "devices": list(devices), **extra}
    )


def refused(*tags: dict, **extra) -> str:
    with pytest.raises(ValidationError) as info:
        settings(device(*tags, **extra))
    return str(info.value)


def test_overlapping_tags_are_refused_with_both_ranges():
    msg = refused(
        {"name": "speed", "address": 10, "datatype": "float32"},
        {"name": "weight", "address": 11, "datatype": "uint16"},
    )
    assert "'speed' (holding 10..11) and 'weight' (holding 11..11) overlap" in msg


def test_overlap_across_groups_is_refused_but_distinct_bits_of_one_word_are_fine():
    with pytest.raises(ValidationError, match="overlap"):
        ModbusDevice.model_validate(
            {
                "device_id": "filler",
                "host": "h",
                "groups": [
                    {"interval_s": 1, "tags": [{"name": "a", "address": 5, "datatype": "int32"}]},
                    {"interval_s": 5, "tags": [{"name": "b", "address": 6, "datatype": "int16"}]},
                ],
            }
        )
    ok = settings(
        device(
            {"name": "fault", "address": 4, "datatype": "bit", "bit": 0},
            {"name": "guard", "address": 4, "datatype": "bit", "bit": 3},
        )
    )
    assert len(ok.devices[0].tags()) == 2
    assert "overlap" in refused(
        {"name": "fault", "address": 4, "datatype": "bit", "bit": 3},
        {"name": "guard", "address": 4, "datatype": "bit", "bit": 3},
    )


def test_address_beyond_the_modbus_range_is_refused():
    assert "beyond the last Modbus address 65535" in refused({"name": "e", "address": 65534, "datatype": "float64"})
    assert "less than or equal to 65535" in refused({"name": "e", "address": 70000, "datatype": "uint16"})


def test_string_needs_a_length():
    assert "give its length in registers" in refused({"name": "recipe", "address": 0, "datatype": "string"})


def test_bit_index_must_be_0_to_15():
    assert "give bit between 0 and 15, got 16" in refused({"name": "f", "address": 0, "datatype": "bit", "bit": 16})
    assert "give bit between 0 and 15" in refused({"name": "f", "address": 0, "datatype": "bit"})


def test_writable_input_register_and_discrete_input_are_refused():
    msg = refused({"name": "count", "table": "input", "address": 0, "datatype": "uint16", "writable": True})
    assert "input registers are read-only in Modbus; remove writable, or use a holding register" in msg
    assert "read-only" in refused({"name": "eye", "table": "discrete", "address": 0, "writable": True})


def test_register_without_datatype_and_coil_with_register_datatype_are_refused():
    assert "give a datatype" in refused({"name": "x", "address": 0})
    assert "holds single bits" in refused({"name": "x", "table": "coil", "address": 0, "datatype": "int16"})


def test_scale_zero_scaled_string_and_duplicate_names_are_refused():
    assert "scale 0" in refused({"name": "x", "address": 0, "datatype": "int16", "scale": 0})
    assert "only apply to numbers" in refused({"name": "x", "address": 0, "datatype": "string", "length": 2, "scale": 2})
    assert "used twice" in refused(
        {"name": "speed", "address": 0, "datatype": "int16"}, {"name": "Speed", "address": 1, "datatype": "int16"}
    )


def test_transport_fields_are_required_per_protocol():
    with pytest.raises(ValidationError, match="give host"):
        settings({"device_id": "f", "groups": [{"tags": [{"name": "x", "address": 0, "datatype": "int16"}]}]})
    with pytest.raises(ValidationError, match="give serial_port"):
        settings(
            {"device_id": "f", "protocol": "rtu", "groups": [{"tags": [{"name": "x", "address": 0, "datatype": "int16"}]}]}
        )
    rtu = settings(
        {
            "device_id": "labeller",
            "protocol": "rtu",
            "serial_port": "/dev/ttyUSB0",
            "parity": "E",
            "unit_id": 7,
            "groups": [{"tags": [{"name": "x", "address": 0, "datatype": "int16"}]}],
        }
    )
    assert rtu.devices[0].endpoint == "/dev/ttyUSB0 (unit 7)"


def test_unknown_field_is_refused_with_its_path():
    with pytest.raises(ValidationError) as info:
        settings(device({"name": "x", "address": 0, "datatype": "int16", "scaling": 2}))
    assert "devices.0.groups.0.tags.0.scaling" in str(info.value)


def test_sparkplug_datatype_follows_the_tag():
    def dt(**kw) -> DataType:
        return ModbusTag.model_validate({"name": "t", "address": 0, **kw}).sparkplug_type

    assert dt(datatype="int16") is DataType.Int16
    assert dt(datatype="uint32") is DataType.UInt32
    assert dt(datatype="float32") is DataType.Float
    assert dt(datatype="float64") is DataType.Double
    assert dt(datatype="int16", scale=0.1) is DataType.Double
    assert dt(datatype="uint16", offset=-40) is DataType.Double
    assert dt(datatype="string", length=4) is DataType.String
    assert dt(datatype="bit", bit=2) is DataType.Boolean
    assert dt(table="coil") is DataType.Boolean


def test_committed_sample_equals_the_generated_one_and_validates():
    assert SAMPLE.read_text() == sample_yaml(), "regenerate: python -c 'from connectors.modbus.config import sample_yaml; print(sample_yaml(), end=\"\")' > connectors/modbus/sample.yaml"
    for name, section in yaml.safe_load(SAMPLE.read_text())["connectors"].items():
        assert ModbusSettings.model_validate(section) == sample_settings()[name]


def test_plugin_registers_the_modbus_type_whose_factory_builds_a_modbus_connector(tmp_path):
    from connectors.base import ConnectorContext
    from connectors.modbus import plugin
    from connectors.modbus.connector import ModbusConnector
    from hub.mqtt import BrokerUrl

    registered = {}
    plugin.register_connectors(lambda name, kind: registered.setdefault(name, kind))
    assert registered["modbus"].settings is ModbusSettings
    settings = sample_settings()["salad_plc"]
    built = registered["modbus"].create("salad_plc", settings, ConnectorContext(BrokerUrl(), None, tmp_path))
    assert isinstance(built, ModbusConnector)
