"""Provenance: what made each published product, and the checksum of each raw file.

``raw_files`` gains ``sha256`` (the file as conversion first read it). ``provenance`` holds
one row per product (versions of the project and the tools, the effective settings as
JSON and their hash) and ``provenance_inputs`` its inputs (raw files with size and
checksum; the calibration solutions applied, with calibrator and transit). The view
``product_provenance`` shows one line per product. The column is added in place and the
rest are new tables: no table a view reads or a trigger watches is rebuilt.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 02:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import reconciler.db.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

PRODUCT_PROVENANCE = """
    CREATE VIEW product_provenance AS
    SELECT
        r.id AS product_id,
        r.kind,
        r.group_id,
        r.generation,
        r.status,
        r.published_path,
        r.checksum,
        r.published_at,
        p.package_version,
        p.git_commit,
        p.settings_hash,
        p.casa_version,
        p.pyuvdata_version,
        p.casacore_version,
        p.finder,
        p.finder_version,
        p.provenance_hash,
        (SELECT count(*) FROM provenance_inputs i
          WHERE i.registry_id = r.id AND i.kind = 'raw_file') AS raw_files,
        (SELECT sum(i.size_bytes) FROM provenance_inputs i
          WHERE i.registry_id = r.id AND i.kind = 'raw_file') AS raw_bytes,
        (SELECT count(*) FROM provenance_inputs i
          WHERE i.registry_id = r.id AND i.kind = 'raw_file' AND i.sha256 IS NULL)
          AS raw_files_without_checksum,
        (SELECT count(*) FROM provenance_inputs i
          WHERE i.registry_id = r.id AND i.kind = 'calibration') AS solutions,
        (SELECT min(i.calibrator) FROM provenance_inputs i
          WHERE i.registry_id = r.id AND i.kind = 'calibration') AS calibrator,
        (SELECT min(i.transit_time) FROM provenance_inputs i
          WHERE i.registry_id = r.id AND i.kind = 'calibration') AS calibrator_transit,
        p.recorded_at
    FROM data_registry r
    JOIN provenance p ON p.registry_id = r.id
"""


def upgrade() -> None:
    op.create_table(
        "provenance",
        sa.Column("registry_id", _BIG_ID, nullable=False),
        sa.Column("provenance_hash", sa.String(length=64), nullable=False),
        sa.Column("package_version", sa.String(length=64), nullable=False),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("settings_json", sa.Text(), nullable=False),
        sa.Column("settings_hash", sa.String(length=64), nullable=False),
        sa.Column("casa_version", sa.String(length=64), nullable=True),
        sa.Column("pyuvdata_version", sa.String(length=64), nullable=True),
        sa.Column("casacore_version", sa.String(length=64), nullable=True),
        sa.Column("finder", sa.String(length=32), nullable=True),
        sa.Column("finder_version", sa.String(length=64), nullable=True),
        sa.Column(
            "recorded_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["registry_id"],
            ["data_registry.id"],
            name=op.f("fk_provenance_registry_id_data_registry"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("registry_id", name=op.f("pk_provenance")),
    )
    op.create_table(
        "provenance_inputs",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("registry_id", _BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("observation_key", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("calibrator", sa.String(length=64), nullable=True),
        sa.Column("transit_time", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('raw_file', 'calibration')", name=op.f("ck_provenance_inputs_kind")
        ),
        sa.ForeignKeyConstraint(
            ["registry_id"],
            ["provenance.registry_id"],
            name=op.f("fk_provenance_inputs_registry_id_provenance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provenance_inputs")),
        sa.UniqueConstraint(
            "registry_id", "kind", "path", name=op.f("uq_provenance_inputs_registry_id_kind_path")
        ),
    )
    # In place (ALTER TABLE ADD COLUMN on both backends): no rebuild.
    op.add_column("raw_files", sa.Column("sha256", sa.String(length=64), nullable=True))
    op.execute(PRODUCT_PROVENANCE)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS product_provenance")
    # SQLite drops a column by rebuilding the table; no view reads raw_files and no
    # trigger watches it.
    with op.batch_alter_table("raw_files", schema=None) as batch_op:
        batch_op.drop_column("sha256")
    op.drop_table("provenance_inputs")
    op.drop_table("provenance")
