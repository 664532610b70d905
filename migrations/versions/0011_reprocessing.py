"""Reprocessing: settings fingerprints on the products, superseded versions, and the
record of each reprocessing request.

``measurement_sets``, ``calibration_solutions``, ``calibrated_ms`` and ``images`` gain
``fingerprint``: the settings a product was made under (:mod:`reconciler.fingerprint`).
Products made before this migration keep None: the settings they were made under are not
known, so a reprocessing makes them again. ``data_registry`` gains the product's
``fingerprint`` and ``superseded_by`` / ``superseded_at`` (a later version of the window
was published; the row and its files stay). ``reprocessings`` records each request, and
``mosaic_groups.reprocessing_id`` the one that asked for a group's current generation.
The two new references carry no foreign key: SQLite adds none to an existing table in
place.

Every column is added in place (ALTER TABLE ADD COLUMN on both backends): no watched table
is rebuilt, so the change-counting triggers of migration 0005 stay; they count updates of
every column of the product tables and of ``mosaic_groups``, the new ones included.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import reconciler.db.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRODUCTS = ("measurement_sets", "calibration_solutions", "calibrated_ms", "images")


def upgrade() -> None:
    op.create_table(
        "reprocessings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(
            "requested_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("span_start", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("span_end", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("dec_deg", sa.Float(), nullable=True),
        sa.Column("fingerprint", sa.String(length=12), nullable=False),
        sa.Column("groups", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reprocessings")),
    )
    for table in _PRODUCTS:
        op.add_column(table, sa.Column("fingerprint", sa.String(length=12), nullable=True))
    op.add_column(
        "mosaic_groups",
        sa.Column("reprocessing_id", sa.Integer(), nullable=True),
    )
    op.add_column("data_registry", sa.Column("fingerprint", sa.String(length=12), nullable=True))
    op.add_column(
        "data_registry",
        sa.Column(
            "superseded_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
    )
    op.add_column(
        "data_registry",
        sa.Column("superseded_at", reconciler.db.types.UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    for column in ("superseded_at", "superseded_by", "fingerprint"):
        op.drop_column("data_registry", column)
    op.drop_column("mosaic_groups", "reprocessing_id")
    for table in _PRODUCTS:
        op.drop_column(table, "fingerprint")
    op.drop_table("reprocessings")
