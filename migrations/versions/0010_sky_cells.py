"""Sky cells for cone searches: the footprint of each published mosaic as HEALPix cells
(``footprints``, ``footprint_cells``) and the cell of each catalogue source
(``sources.cell``).

No pass observes these, so nothing is counted (migration ``0005``). The column is added in
place and the rest are new tables. Mosaics published and sources recorded before this
migration have no cells: ``reconciler coverage --rebuild`` computes them (it reads the
published files, which a migration does not).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import reconciler.db.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "footprints",
        sa.Column("registry_id", _BIG_ID, nullable=False),
        sa.Column("n_cells", sa.Integer(), nullable=False),
        sa.Column("area_sq_deg", sa.Float(), nullable=False),
        sa.Column(
            "recorded_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["registry_id"],
            ["data_registry.id"],
            name=op.f("fk_footprints_registry_id_data_registry"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("registry_id", name=op.f("pk_footprints")),
    )
    op.create_table(
        "footprint_cells",
        sa.Column("cell", sa.Integer(), nullable=False),
        sa.Column("registry_id", _BIG_ID, nullable=False),
        sa.Column("mask", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["registry_id"],
            ["footprints.registry_id"],
            name=op.f("fk_footprint_cells_registry_id_footprints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cell", "registry_id", name=op.f("pk_footprint_cells")),
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_footprint_cells_registry_id"), "footprint_cells", ["registry_id"])
    # In place (ALTER TABLE ADD COLUMN on both backends): no rebuild.
    op.add_column("sources", sa.Column("cell", sa.BigInteger(), nullable=True))
    op.create_index(op.f("ix_sources_cell"), "sources", ["cell"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sources_cell"), table_name="sources")
    # SQLite drops a column by rebuilding the table; no view reads sources and no trigger
    # watches it.
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_column("cell")
    op.drop_index(op.f("ix_footprint_cells_registry_id"), table_name="footprint_cells")
    op.drop_table("footprint_cells")
    op.drop_table("footprints")
