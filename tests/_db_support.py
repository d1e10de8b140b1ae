"""Database fixtures shared by the model and migration tests: every test runs on SQLite and on a real PostgreSQL.

Import the fixtures into a test module (`from _db_support import database, database_url, postgres`).
One LocalPostgres per test module, one fresh database per test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hub.db import Database
from hub.servers import LocalPostgres

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    """A private PostgreSQL server for the module's tests."""
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of an empty database of this test's own, on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plantbus.sqlite'}"
    pg: LocalPostgres = request.getfixturevalue("postgres")
    return pg.create_database("t" + uuid.uuid4().hex[:12])


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A database migrated to the newest revision."""
    with Database(database_url) as db:
        db.upgrade()
        yield db
