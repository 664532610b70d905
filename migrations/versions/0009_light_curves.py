"""Light curves: ``sky_sources`` (sources associated across mosaics by position) and
``sky_source_measurements`` (one per sky source per catalogued mosaic: detected, or forced
photometry at its position). New tables only; a pass does not read them, so their changes
are not counted.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import reconciler.db.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sky_sources",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("ra_deg", sa.Float(), nullable=False),
        sa.Column("dec_deg", sa.Float(), nullable=False),
        sa.Column(
            "created_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sky_sources")),
    )
    op.create_index(op.f("ix_sky_sources_dec_deg"), "sky_sources", ["dec_deg"])
    op.create_table(
        "sky_source_measurements",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("sky_source_id", _BIG_ID, nullable=False),
        sa.Column("catalogue_id", _BIG_ID, nullable=False),
        sa.Column("source_id", _BIG_ID, nullable=True),
        sa.Column("observed_at", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("flux_jy", sa.Float(), nullable=False),
        sa.Column("flux_err_jy", sa.Float(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sky_source_id"],
            ["sky_sources.id"],
            name=op.f("fk_sky_source_measurements_sky_source_id_sky_sources"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["catalogue_id"],
            ["catalogues.id"],
            name=op.f("fk_sky_source_measurements_catalogue_id_catalogues"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_sky_source_measurements_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sky_source_measurements")),
        sa.UniqueConstraint(
            "sky_source_id",
            "catalogue_id",
            name=op.f("uq_sky_source_measurements_sky_source_id_catalogue_id"),
        ),
    )
    op.create_index(
        op.f("ix_sky_source_measurements_catalogue_id"),
        "sky_source_measurements",
        ["catalogue_id"],
    )
    op.create_index(
        op.f("ix_sky_source_measurements_source_id"), "sky_source_measurements", ["source_id"]
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_sky_source_measurements_source_id"), table_name="sky_source_measurements"
    )
    op.drop_index(
        op.f("ix_sky_source_measurements_catalogue_id"), table_name="sky_source_measurements"
    )
    op.drop_table("sky_source_measurements")
    op.drop_index(op.f("ix_sky_sources_dec_deg"), table_name="sky_sources")
    op.drop_table("sky_sources")
