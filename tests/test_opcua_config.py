"""OPC UA connector settings: misconfigurations fail at load with a message that says how to fix them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from asyncua import ua
from click.testing import CliRunner
from pydantic import ValidationError

from connectors.opcua import plugin
from connectors.opcua.config import OpcUaSettings, sample_yaml
from connectors.opcua.connector import OpcUaConnector, quality_of, sparkplug_type, to_opcua, to_sparkplug
from hub.errors import ConfigError
from hub.sparkplug.edge import Quality
from hub.sparkplug.payload import DataType
from _opcua_support import OpcUaTestServer

SAMPLE = Path(__file__).parents[1] / "connectors" / "opcua" / "sample.yaml"


def base(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "opcua", "edge_node_id": "oatbar-plc", "endpoint": "opc.tcp://127.0.0.1:4840",
        "devices": [{"device_id": "filler", "tags": [{"name": "count", "node_id": "ns=2;s=Filler.Count"}]}],
    }  # fmt: skip
    raw.update(overrides)
    return raw


def test_committed_sample_equals_the_one_generated_from_the_model():
    assert SAMPLE.read_text() == sample_yaml()
    section = yaml.safe_load(SAMPLE.read_text())["connectors"]["oatbar_plc"]
    assert OpcUaSettings.model_validate(section).edge_node_id == "oatbar-plc"


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"endpoint": "http://10.0.0.5:4840"}, "opc.tcp://10.0.0.5:4840"),
        ({"endpoint": "opc.tcp://:4840"}, "opc.tcp://10.0.0.5:4840"),
        ({"security": {"policy": "Basic256Sha256", "mode": "None"}}, "policy Basic256Sha256 with mode Sign"),
        ({"security": {"policy": "Basic256Sha256", "mode": "Sign"}}, "needs certificate and private_key"),
        ({"security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "certificate": "/no/cert.der",
                       "private_key": "/no/key.pem"}}, "does not exist"),  # fmt: skip
        ({"password_env": "X"}, "username is not"),
        ({"devices": [{"device_id": "f", "tags": [{"name": "a"}]}]}, "exactly one of node_id or browse_path"),
        ({"devices": [{"device_id": "f", "tags": [{"name": "a", "node_id": "Filler.Count"}]}]}, "ns=2;s=Filler.Count"),
        ({"devices": [{"device_id": "f", "tags": [{"name": "a", "node_id": "ns=2;i=1", "datatype": "Dbl"}]}]},
         "unknown Sparkplug datatype"),  # fmt: skip
        ({"mode": "push"}, "subscribe"),
    ],
)
def test_misconfiguration_is_refused_with_how_to_fix_it(overrides, says):
    with pytest.raises(ValidationError) as err:
        OpcUaSettings.model_validate(base(**overrides))
    assert says in str(err.value)


def test_password_comes_from_an_environment_variable_and_a_missing_one_is_a_config_error(tmp_path, monkeypatch):
    s = OpcUaSettings.model_validate(base(username="plantbus", password_env="PLANTBUS_TEST_OPCUA_PW"))
    monkeypatch.delenv("PLANTBUS_TEST_OPCUA_PW", raising=False)
    with pytest.raises(ConfigError, match="PLANTBUS_TEST_OPCUA_PW is not set"):
        OpcUaConnector("x", s, None)  # type: ignore[arg-type]
    monkeypatch.setenv("PLANTBUS_TEST_OPCUA_PW", "s3cret")
    assert s.password() == "s3cret"


def test_variant_types_map_to_sparkplug_types_and_status_codes_to_quality():
    assert sparkplug_type(ua.VariantType.Int32, False) is DataType.Int32
    assert sparkplug_type(ua.VariantType.Double, True) is DataType.DoubleArray
    assert sparkplug_type(ua.VariantType.ExtensionObject, False) is None
    assert quality_of(ua.StatusCode(ua.StatusCodes.Good)) is Quality.GOOD
    assert quality_of(ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)) is Quality.STALE
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadCommunicationError)) is Quality.BAD
    import datetime as dt

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ms = to_sparkplug(DataType.DateTime, when)
    assert to_opcua(ua.VariantType.DateTime, False, ms).Value == when
    assert to_sparkplug(DataType.Text, ua.LocalizedText("Hallo")) == "Hallo"


def test_browse_command_lists_variables_with_node_id_type_and_access():
    server = OpcUaTestServer()
    server.start()
    try:
        cli = click.Group("plantbus")
        plugin.register_commands(cli)
        result = CliRunner().invoke(cli, ["opcua", "browse", server.url, "--depth", "3"])
        assert result.exit_code == 0, result.output
        speed = next(line for line in result.output.splitlines() if "2:Speed" in line)
        assert "ns=2;s=Filler.Speed" in speed and "Variable" in speed and "Double" in speed and "read,write" in speed
        temp = next(line for line in result.output.splitlines() if "2:Temperature" in line)
        assert "Float" in temp and "[read]" in temp
        sub = CliRunner().invoke(cli, ["opcua", "browse", server.url, "--node", "ns=2;s=Filler", "--depth", "1"])
        assert sub.exit_code == 0 and "2:Count" in sub.output and "2:Oatbar" not in sub.output
    finally:
        server.stop()
    bad = CliRunner().invoke(cli, ["opcua", "browse", server.url, "--timeout", "0.5"])
    assert bad.exit_code != 0 and "cannot connect" in bad.output
