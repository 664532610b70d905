"""Discovery lists only what can have changed (directories as last listed, when each root
was last swept and resynchronised, each raw file's directory); retention records what it
removed and how much each product holds.

``raw_files`` gains ``directory`` (indexed; filled from ``path`` here), ``vanished_at``
and an index on ``mtime`` (files written lately are looked at every pass).
``observations`` gains ``judge_again_at`` (indexed): the observations not ready are judged
again once by the next pass, which sets it where the verdict waits on a grace period.
``incoming_directories`` and ``discovery_marks`` are new. ``measurement_sets``,
``calibrated_ms`` and ``images`` gain ``removed_at`` (retention removed the files) with a
partial index of the rows still present; ``data_registry`` gains ``size_bytes``. Columns
are added in place: a rebuilt table would lose the views reading it and, on SQLite, its
triggers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:40:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

import reconciler.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_spec = importlib.util.spec_from_file_location(
    "_schema_0003", Path(__file__).with_name("0003_verified_products_and_parked_groups.py")
)
assert _spec is not None and _spec.loader is not None
_schema_0003 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_schema_0003)

#: Tables of intermediates retention removes, and the predicate of their index.
_INTERMEDIATES = ("measurement_sets", "calibrated_ms", "images")
_PRESENT = "removed_at IS NULL"

#: ``path`` up to its last separator: SQLite strips the trailing run of characters that are
#: not ``/`` (``rtrim`` by the set of the name's own characters), then the ``/``.
_DIRECTORY = {
    "sqlite": "rtrim(rtrim(path, replace(path, '/', '')), '/')",
    "postgresql": "regexp_replace(path, '/[^/]*$', '')",
}


def upgrade() -> None:
    op.create_table(
        "incoming_directories",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("mtime", sa.Float(), nullable=True),
        sa.Column("changed_at", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incoming_directories")),
        sa.UniqueConstraint("path", name=op.f("uq_incoming_directories_path")),
    )
    op.create_index(
        op.f("ix_incoming_directories_changed_at"), "incoming_directories", ["changed_at"]
    )
    op.create_table(
        "discovery_marks",
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("swept_at", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("resynced_at", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("root", name=op.f("pk_discovery_marks")),
    )
    op.add_column("raw_files", sa.Column("directory", sa.Text(), nullable=True))
    op.execute(f"UPDATE raw_files SET directory = {_DIRECTORY[op.get_bind().dialect.name]}")
    op.create_index(op.f("ix_raw_files_directory"), "raw_files", ["directory"])
    op.create_index(op.f("ix_raw_files_mtime"), "raw_files", ["mtime"])
    op.add_column(
        "raw_files", sa.Column("vanished_at", reconciler.db.types.UTCDateTime(), nullable=True)
    )
    op.add_column(
        "observations",
        sa.Column("judge_again_at", reconciler.db.types.UTCDateTime(), nullable=True),
    )
    op.execute("UPDATE observations SET judge_again_at = first_seen_at WHERE NOT ready")
    op.create_index(op.f("ix_observations_judge_again_at"), "observations", ["judge_again_at"])
    for table in _INTERMEDIATES:
        op.add_column(
            table, sa.Column("removed_at", reconciler.db.types.UTCDateTime(), nullable=True)
        )
        op.create_index(
            f"ix_{table}_present",
            table,
            ["id"],
            postgresql_where=sa.text(_PRESENT),
            sqlite_where=sa.text(_PRESENT),
        )
    op.add_column("data_registry", sa.Column("size_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # SQLite drops a column by rebuilding the table: the views reading it go first.
    _schema_0003._schema_0001._drop_views()
    with op.batch_alter_table("data_registry", schema=None) as batch_op:
        batch_op.drop_column("size_bytes")
    for table in _INTERMEDIATES:
        op.drop_index(f"ix_{table}_present", table_name=table)
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("removed_at")
    op.drop_index(op.f("ix_observations_judge_again_at"), table_name="observations")
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_column("judge_again_at")
    op.drop_index(op.f("ix_raw_files_mtime"), table_name="raw_files")
    op.drop_index(op.f("ix_raw_files_directory"), table_name="raw_files")
    with op.batch_alter_table("raw_files", schema=None) as batch_op:
        batch_op.drop_column("vanished_at")
        batch_op.drop_column("directory")
    op.drop_table("discovery_marks")
    op.drop_index(op.f("ix_incoming_directories_changed_at"), table_name="incoming_directories")
    op.drop_table("incoming_directories")
    _schema_0003._create_views(with_problem=True)
