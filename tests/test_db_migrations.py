"""Alembic migrations: they build exactly the models' schema on SQLite and PostgreSQL, and go down and up again."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlalchemy as sa
from _db_support import database, database_url, postgres  # noqa: F401  (fixtures)
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hub.db import MIGRATIONS_DIR, VERSION_TABLE, Database, DatabaseError, head_revision, migration_options
from hub.models import Line, User, metadata


def schema_differences(db: Database, target: sa.MetaData = metadata) -> list:
    """What Alembic autogenerate would write to turn the database into `target` (empty: identical)."""
    options = {k: v for k, v in migration_options().items() if k != "target_metadata"}
    with db.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection, opts=options), target)


def plantbus_tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names()) & set(metadata.tables)


def test_migrations_build_exactly_the_schema_of_the_models(database):
    assert database.current_revision() == head_revision()
    assert schema_differences(database) == []
    assert plantbus_tables(database) == set(metadata.tables)


def test_schema_comparison_notices_every_kind_of_drift(database):
    # The check above is only worth something if the comparison sees differences: a changed copy of
    # the models must show up as a new column, a changed type, an index, a CHECK and a unique constraint.
    drifted = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    users = drifted.tables["users"]
    users.append_column(sa.Column("phone", sa.String(32), nullable=True))
    users.c.display_name.type = sa.String(300)
    sa.Index("ix_users_display_name", users.c.display_name)
    users.append_constraint(sa.CheckConstraint("length(username) > 2", name="username_long_enough"))
    lines = drifted.tables["lines"]
    lines.append_constraint(sa.UniqueConstraint("name", name="uq_lines_name"))

    found = set()
    for diff in schema_differences(database, drifted):
        kind, *rest = diff if isinstance(diff, tuple) else diff[0]  # column changes come wrapped in a list
        found.add(f"{kind} {type(rest[0]).__name__}" if kind.endswith("_constraint") else kind)
    assert found == {
        "add_column",
        "modify_type",
        "add_index",
        "add_constraint CheckConstraint",
        "add_constraint UniqueConstraint",
    }, found


def test_upgrade_downgrade_upgrade_round_trip(database):
    with database.session() as session:
        session.add(Line(code="oatbar", name="Oat bars"))
    database.downgrade("base")
    assert database.current_revision() is None
    assert plantbus_tables(database) == set()
    database.upgrade()
    assert database.current_revision() == head_revision()
    assert schema_differences(database) == []
    with database.session() as session:
        assert session.get(Line, 1) is None  # the data went with the tables


def test_upgrade_again_changes_nothing_and_keeps_the_data(database):
    with database.session() as session:
        session.add(User(username="ivanova", display_name="A. Ivanova"))
    database.upgrade()
    database.upgrade("head")
    assert database.current_revision() == head_revision()
    with database.session() as session:
        assert session.get(User, 1).username == "ivanova"


def test_downgrade_leaves_tables_plantbus_does_not_model_alone(database):
    # the SQL historian or a plugin may keep its own tables in the same database
    with database.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE historian_samples (path VARCHAR(200), value FLOAT)")
    assert schema_differences(database) == []
    database.downgrade("base")
    assert "historian_samples" in sa.inspect(database.engine).get_table_names()


def test_an_unknown_revision_is_an_operator_error(database):
    with pytest.raises(DatabaseError, match="Can't locate revision identified by 'bogus'.*plantbus db current"):
        database.upgrade("bogus")
    assert database.current_revision() == head_revision()


def test_version_table_is_plantbus_own(database):
    names = sa.inspect(database.engine).get_table_names()
    assert VERSION_TABLE in names and "alembic_version" not in names


def test_constraint_and_index_names_fit_postgresql_identifiers():
    # PostgreSQL cuts names at 63 bytes; a longer one would differ between the two databases
    names = [
        str(item.name)
        for table in metadata.sorted_tables
        for item in [*table.constraints, *table.indexes]
        if item.name is not None
    ]
    assert names and all(len(n.encode()) <= 63 for n in names), [n for n in names if len(n.encode()) > 63]


def test_migrations_are_frozen_and_import_no_plantbus_code():
    # A migration must build the schema of its day, so it may not import the models that keep changing.
    for path in Path(MIGRATIONS_DIR, "versions").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name if isinstance(node, ast.Import) else node.module
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in (node.names if isinstance(node, ast.Import) else [node])
        }
        assert not {m for m in imported if m and (m.startswith("hub") or m.startswith("sqlmodel"))}, path
