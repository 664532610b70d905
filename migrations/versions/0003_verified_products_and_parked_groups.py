"""Published products are verified; groups that can make no progress are parked; each
image names the imager that made it.

``data_registry`` gains ``verified_at`` (indexed: the next products to verify are found
without reading the rest), ``problem`` (what the last verification found wrong) and
``companions`` (the published weight map and preview, with their checksums) and
``stage_removed_at`` (the staged copy under work/ is removed once published).
``mosaic_groups`` gains ``parked`` and the partial index of the groups a pass observes.
``images`` gains ``backend``. The ``mosaic_status`` view gains ``product_problem``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 19:21:09
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

import reconciler.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OBSERVED = "phase NOT IN ('published', 'cancelled', 'invalid') AND NOT parked"
_STAGED_LEFT = "status = 'published' AND stage_removed_at IS NULL"

_spec = importlib.util.spec_from_file_location(
    "_schema_0001", Path(__file__).with_name("0001_initial_schema.py")
)
assert _spec is not None and _spec.loader is not None
_schema_0001 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_schema_0001)

#: The column the view gains: the problem of the group's newest published product that has
#: one, as last verified.
_PRODUCT_PROBLEM = """
            (SELECT r.problem FROM data_registry r
              WHERE r.group_id = g.id AND r.problem IS NOT NULL
              ORDER BY r.generation DESC LIMIT 1) AS product_problem,
            g.published_path,"""


def upgrade() -> None:
    # Columns are added in place: a rebuilt table would lose the views reading it and, on
    # SQLite, revision 0001's triggers on mosaic_groups.
    _schema_0001._drop_views()
    op.add_column("data_registry", sa.Column("companions", sa.Text(), nullable=True))
    op.add_column(
        "data_registry",
        sa.Column("verified_at", reconciler.db.types.UTCDateTime(), nullable=True),
    )
    op.add_column("data_registry", sa.Column("problem", sa.Text(), nullable=True))
    op.add_column("images", sa.Column("backend", sa.String(length=16), nullable=True))
    op.add_column(
        "data_registry",
        sa.Column("stage_removed_at", reconciler.db.types.UTCDateTime(), nullable=True),
    )
    op.create_index(
        "ix_data_registry_staged",
        "data_registry",
        ["id"],
        postgresql_where=sa.text(_STAGED_LEFT),
        sqlite_where=sa.text(_STAGED_LEFT),
    )
    op.create_index("ix_data_registry_verified_at", "data_registry", ["verified_at"])
    op.execute("UPDATE data_registry SET verified_at = published_at")
    op.add_column(
        "mosaic_groups",
        sa.Column("parked", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index(
        "ix_mosaic_groups_observed",
        "mosaic_groups",
        ["window_start"],
        postgresql_where=sa.text(_OBSERVED),
        sqlite_where=sa.text(_OBSERVED),
    )
    _create_views(with_problem=True)


def downgrade() -> None:
    _schema_0001._drop_views()
    op.drop_index("ix_mosaic_groups_observed", table_name="mosaic_groups")
    # SQLite drops a column by rebuilding the table, which drops its triggers: made again.
    _schema_0001._drop_sqlite_triggers()
    with op.batch_alter_table("mosaic_groups", schema=None) as batch_op:
        batch_op.drop_column("parked")
    _schema_0001._create_sqlite_triggers()
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("backend")
    op.drop_index("ix_data_registry_staged", table_name="data_registry")
    op.drop_index("ix_data_registry_verified_at", table_name="data_registry")
    with op.batch_alter_table("data_registry", schema=None) as batch_op:
        batch_op.drop_column("stage_removed_at")
        batch_op.drop_column("problem")
        batch_op.drop_column("verified_at")
        batch_op.drop_column("companions")
    _create_views(with_problem=False)


def _create_views(*, with_problem: bool) -> None:
    """Revision 0001's views, ``mosaic_status`` with or without ``product_problem``: the
    views are written by 0001's own code, its SQL kept and the one column added."""
    recorder = _Recorder()
    _schema_0001.op = recorder
    try:
        _schema_0001._create_views()
    finally:
        _schema_0001.op = op
    for statement in recorder.statements:
        if with_problem and "CREATE VIEW mosaic_status" in statement:
            assert statement.count("\n            g.published_path,") == 1
            statement = statement.replace("\n            g.published_path,", _PRODUCT_PROBLEM)
        op.execute(statement)


class _Recorder:
    """Stands for ``alembic.op`` while revision 0001 writes its views, keeping the SQL."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, statement: str) -> None:
        self.statements.append(statement)

    def get_bind(self) -> sa.Connection:
        return op.get_bind()
