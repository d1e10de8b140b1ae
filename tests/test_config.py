"""load_config: one YAML file validated at load; every error names its path and says how to fix it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hub.config import HostConfig, PlantbusConfig, load_config, parse_config
from hub.errors import ConfigError
from hub.mqtt import BrokerUrl


def write(tmp_path: Path, text: str, name: str = "plantbus.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_a_full_valid_file_loads_into_typed_models(tmp_path):
    config = load_config(write(tmp_path, """
        broker:
          url: mqtt://broker.plant.local:1884
          username: hub
          password_env: PLANTBUS_TEST_PW
        host:
          host_id: plantbus-a
          groups: [Salads, Soups]
          reorder_timeout_ms: 500
        uns:
          prefix: zdorovo/plant1
          mappings:
            - group: Salads
              edge_node: "line*"
              path: zdorovo/plant1/salads/{edge_node}/{device}
        state_dir: /var/lib/plantbus
        log_level: debug
    """))
    assert isinstance(config, PlantbusConfig)
    assert config.host == HostConfig(host_id="plantbus-a", groups=["Salads", "Soups"], reorder_timeout_ms=500)
    assert config.uns.mappings[0].edge_node == "line*"
    assert config.state_dir == Path("/var/lib/plantbus")
    assert config.log_level == "DEBUG"


def test_no_file_and_an_empty_file_give_the_defaults(tmp_path):
    assert load_config(None) == PlantbusConfig()
    assert load_config(write(tmp_path, "")) == PlantbusConfig()
    assert load_config(write(tmp_path, "# only a comment\n")) == PlantbusConfig()


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("host:\n  host_id: a/b\n", "host.host_id: Sparkplug host id 'a/b' contains reserved character(s) /"),
        ("host:\n  host_id: ''\n", "host.host_id: Sparkplug host id must be a non-empty string"),
        ("host:\n  groups: [ok, 'x#y']\n", "host.groups[1]: Sparkplug group id 'x#y' contains reserved character(s) #"),
        ("host:\n  reorder_timeout_ms: -1\n",
         "host.reorder_timeout_ms: Input should be greater than or equal to 0 (got -1)"),
        ("host:\n  diagnostics_interval_s: 0\n", "host.diagnostics_interval_s: Input should be greater than 0"),
        ("host:\n  accept_legacy_state: maybe\n", "host.accept_legacy_state: Input should be a valid boolean"),
        ("uns:\n  mappings:\n    - path: '{site}/x'\n",
         "uns.mappings[0].path: unknown placeholder {site}; use {group}, {edge_node} or {device}"),
        ("uns:\n  mappings:\n    - path: ok/{device}\n    - group: g\n", "uns.mappings[1].path: required; add it"),
        ("uns:\n  mappings:\n    - path: a/+/b\n",
         "uns.mappings[0].path: a path template must not contain MQTT wildcards"),
        ("uns:\n  prefix: /uns\n", "uns.prefix: a path template must not be empty or start/end with '/'"),
        ("uns:\n  qos: 2\n", "uns.qos: Input should be less than or equal to 1"),
        ("broker:\n  url: ftp://x\n", "broker.url: broker URL 'ftp://x': scheme must be one of"),
        ("broker:\n  url: mqtt://host:99999\n",
         "broker.url: broker URL 'mqtt://host:99999': the port must be a number"),
        ("log_level: LOUD\n", "log_level: must be DEBUG, INFO, WARNING or ERROR (got 'LOUD')"),
        ("host: [a, b]\n", "host: Input should be a valid dictionary"),
    ],
)
def test_validation_errors_name_the_path_of_the_offending_key(tmp_path, yaml_text, expected):
    message = load_error(tmp_path, yaml_text)
    assert expected in message
    assert "plantbus.yaml is not valid" in message


@pytest.mark.parametrize(
    ("yaml_text", "path"),
    [
        ("hots:\n  host_id: a\n", "hots"),
        ("host:\n  hostid: a\n", "host.hostid"),
        ("broker:\n  password: secret\n", "broker.password"),
        ("uns:\n  mappings:\n    - path: a/{device}\n      devcie: x\n", "uns.mappings[0].devcie"),
    ],
)
def test_unknown_keys_are_rejected_by_path(tmp_path, yaml_text, path):
    # a misspelt key must not silently fall back to a default; a password never lives in the file
    assert f"{path}: unknown key; remove it or check its spelling" in load_error(tmp_path, yaml_text)


def test_every_problem_is_listed_at_once(tmp_path):
    message = load_error(tmp_path, """
        host:
          host_id: a+b
          bogus: 1
        log_level: LOUD
    """)
    assert message.count("\n  ") == 3
    for path in ("host.host_id:", "host.bogus:", "log_level:"):
        assert path in message


@pytest.mark.parametrize(
    ("yaml_text", "line"),
    [
        ("host:\n  host_id: a\n   bad: indent\n", "line 3"),
        ("host:\n  host_id: [unclosed\nuns: {}\n", "line 2, column 12"),
        ("host:\n  host_id: \"unterminated\n", "line 2, column 12"),
        ("a: 1\na: 2\n\tb: 3\n", "line 3"),
    ],
)
def test_bad_yaml_names_the_line(tmp_path, yaml_text, line):
    message = load_error(tmp_path, yaml_text)
    assert "is not valid YAML" in message and line in message


def test_a_top_level_that_is_not_a_mapping_is_explained(tmp_path):
    assert "the top level must be a mapping of sections" in load_error(tmp_path, "- broker\n- host\n")


def test_a_missing_unreadable_or_non_utf8_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path)  # a directory
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("host:\n  host_id: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(latin1)


def test_password_env_reads_the_password_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANTBUS_TEST_BROKER_PW", "s3cret")
    config = load_config(write(tmp_path, """
        broker:
          url: mqtt://127.0.0.1:1884
          username: hub
          password_env: PLANTBUS_TEST_BROKER_PW
    """))
    assert config.broker.resolve() == BrokerUrl("127.0.0.1", 1884, "hub", "s3cret", False)


def test_a_missing_password_env_variable_names_the_key_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("PLANTBUS_TEST_UNSET_PW", raising=False)
    config = load_config(write(tmp_path, "broker:\n  password_env: PLANTBUS_TEST_UNSET_PW\n"))
    with pytest.raises(ConfigError) as info:
        config.broker.resolve()
    assert "broker.password_env" in str(info.value)
    assert "PLANTBUS_TEST_UNSET_PW is not set" in str(info.value)


def test_parse_config_validates_a_mapping_and_names_its_source():
    with pytest.raises(ConfigError, match=r"^demo is not valid:\n  host.host_id"):
        parse_config({"host": {"host_id": "#"}}, source="demo")
    assert parse_config(None) == PlantbusConfig()


def test_configuration_objects_are_frozen():
    config = parse_config({"host": {"host_id": "a"}})
    with pytest.raises(Exception, match="frozen"):
        config.host.host_id = "b"  # type: ignore[misc]
