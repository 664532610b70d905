"""Mosaic windows are instants on PostgreSQL: a time written with an offset keeps it.

``TIMESTAMP WITHOUT TIME ZONE`` dropped the offset of ``'2025-03-01 02:00:00+02'``, so a
plain SQL request meant a different window on PostgreSQL than on SQLite (whose triggers
convert it). The window columns become ``TIMESTAMP WITH TIME ZONE`` and the database's time
zone UTC, so a time without an offset still means UTC in any session. Setting the time zone
needs the database's owner: a migration run by another role leaves it, with a warning
(the service's own sessions are UTC whatever the database's default). SQLite: no change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 17:20:00
"""

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: PostgreSQL will not change the type of a column a view reads: the views of revision
#: 0001 are dropped and made again around the change, exactly as that revision made them.
_spec = importlib.util.spec_from_file_location(
    "_schema_0001", Path(__file__).with_name("0001_initial_schema.py")
)
assert _spec is not None and _spec.loader is not None
_schema_0001 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_schema_0001)


def _retype(to: str, using: str) -> None:
    _schema_0001._drop_views()
    for column in ("window_start", "window_end"):
        cast = using.format(column)
        op.execute(f"ALTER TABLE mosaic_groups ALTER COLUMN {column} TYPE {to} USING {cast}")
    _schema_0001._create_views()


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    database, user, owner = bind.exec_driver_sql(
        "SELECT datname, current_user, pg_has_role(current_user, datdba, 'MEMBER') "
        "FROM pg_database WHERE datname = current_database()"
    ).one()
    if owner:
        quoted = database.replace('"', '""')
        op.execute(f"ALTER DATABASE \"{quoted}\" SET timezone TO 'UTC'")
    else:
        logging.getLogger("alembic.runtime.migration").warning(
            "database %s is not owned by %s, so its default time zone was left as it is: "
            "in plain SQL give times an offset, or ask the owner to run "
            "ALTER DATABASE %s SET timezone TO 'UTC'",
            database,
            user,
            database,
        )
    _retype("TIMESTAMP WITH TIME ZONE", "{} AT TIME ZONE 'UTC'")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _retype("TIMESTAMP WITHOUT TIME ZONE", "{} AT TIME ZONE 'UTC'")
