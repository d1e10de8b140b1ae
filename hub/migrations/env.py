"""Alembic environment of Plantbus: configured in code by hub.db, no alembic.ini.

`hub.db.Database` runs the migrations on a connection it prepared (on SQLite: foreign keys off while
tables are copied, checked afterwards) and hands it over in `config.attributes["connection"]`.
"""

from __future__ import annotations

from alembic import context

from hub.db import migration_options
from hub.errors import PlantbusError


def run_migrations() -> None:
    """Run the migrations Alembic selected on the connection hub.db handed over."""
    connection = context.config.attributes.get("connection")
    if context.is_offline_mode() or connection is None:
        raise PlantbusError(
            "Plantbus migrations run through `plantbus db upgrade|downgrade` (or hub.db.Database), "
            "not Alembic's own command line"
        )
    context.configure(connection=connection, **migration_options())
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
