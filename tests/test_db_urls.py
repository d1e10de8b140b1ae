"""Which database a configuration names: the SQLite default, URLs, passwords from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import parse_config
from hub.db import database_url, parse_database_url
from hub.errors import ConfigError


def test_the_default_is_an_sqlite_file_in_the_state_folder():
    url = database_url(parse_config({"state_dir": "/var/lib/plantbus"}))
    assert url.get_backend_name() == "sqlite" and Path(url.database) == Path("/var/lib/plantbus/plantbus.sqlite")


def test_a_url_given_on_the_command_line_wins_over_the_file():
    config = parse_config({"database": {"url": "postgresql+psycopg://plantbus@db/plantbus"}})
    assert database_url(config).host == "db"
    assert database_url(config, "sqlite:////tmp/other.sqlite").database == "/tmp/other.sqlite"


def test_plain_postgresql_urls_use_psycopg_3():
    assert parse_database_url("postgresql://plantbus@db:5432/plantbus").drivername == "postgresql+psycopg"


def test_the_password_comes_from_the_variable_the_file_names(monkeypatch):
    config = parse_config({"database": {"url": "postgresql://plantbus@db/plantbus", "password_env": "PLANTBUS_DB_PW"}})
    monkeypatch.setenv("PLANTBUS_DB_PW", "s3cr%t")
    url = database_url(config)
    assert url.password == "s3cr%t" and "s3cr" not in url.render_as_string(hide_password=True)
    monkeypatch.delenv("PLANTBUS_DB_PW")
    with pytest.raises(ConfigError, match="PLANTBUS_DB_PW is not set"):
        database_url(config)


def test_a_bad_database_url_is_reported_with_its_path():
    with pytest.raises(ConfigError, match=r"database\.url: .*'mysql' is not supported"):
        parse_config({"database": {"url": "mysql://root@db/plant"}})
    with pytest.raises(ConfigError, match=r"database\.url: .*is not a URL"):
        parse_config({"database": {"url": "plantbus.sqlite"}})
