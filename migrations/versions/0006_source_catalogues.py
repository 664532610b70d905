"""Source catalogues: one per group generation's mosaic (``catalogues``), with its
components (``sources``). A pass observes ``catalogues``, so its changes are counted
(migration ``0005``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 02:30:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

import reconciler.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_spec = importlib.util.spec_from_file_location(
    "_schema_0005", Path(__file__).with_name("0005_world_changes.py")
)
assert _spec is not None and _spec.loader is not None
_schema_0005 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_schema_0005)

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: The float columns of a component, in the order of the table.
_COMPONENT = (
    "ra_deg",
    "dec_deg",
    "ra_err_arcsec",
    "dec_err_arcsec",
    "peak_jy",
    "peak_err_jy",
    "flux_jy",
    "flux_err_jy",
    "major_arcsec",
    "minor_arcsec",
    "pa_deg",
    "deconvolved_major_arcsec",
    "deconvolved_minor_arcsec",
    "local_rms_jy",
)


def upgrade() -> None:
    op.create_table(
        "catalogues",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("rms_path", sa.Text(), nullable=False),
        sa.Column("finder", sa.String(length=32), nullable=False),
        sa.Column("finder_version", sa.String(length=32), nullable=False),
        sa.Column("n_components", sa.Integer(), nullable=False),
        sa.Column("median_rms_jy", sa.Float(), nullable=True),
        sa.Column(
            "created_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["mosaic_groups.id"],
            name=op.f("fk_catalogues_group_id_mosaic_groups"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogues")),
        sa.UniqueConstraint(
            "group_id", "generation", name=op.f("uq_catalogues_group_id_generation")
        ),
    )
    op.create_index(op.f("ix_catalogues_group_id"), "catalogues", ["group_id"])
    op.create_table(
        "sources",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("catalogue_id", _BIG_ID, nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in _COMPONENT),
        sa.ForeignKeyConstraint(
            ["catalogue_id"],
            ["catalogues.id"],
            name=op.f("fk_sources_catalogue_id_catalogues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
    )
    op.create_index(op.f("ix_sources_catalogue_id"), "sources", ["catalogue_id"])
    op.create_index(op.f("ix_sources_dec_deg"), "sources", ["dec_deg"])
    _schema_0005.count_changes_of("catalogues")


def downgrade() -> None:
    _schema_0005.stop_counting_changes_of("catalogues")
    op.drop_index(op.f("ix_sources_dec_deg"), table_name="sources")
    op.drop_index(op.f("ix_sources_catalogue_id"), table_name="sources")
    op.drop_table("sources")
    op.drop_index(op.f("ix_catalogues_group_id"), table_name="catalogues")
    op.drop_table("catalogues")
