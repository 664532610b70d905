"""Quality assessment before publishing: ``quality_reports`` holds the verdict on each group
generation's mosaic, its reasons, the measured figures and an override when a failed
mosaic is accepted. A pass observes it, so its changes are counted (migration ``0005``).
The ``mosaic_status`` view gains ``qa_status`` and ``qa_summary``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 05:40:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

import reconciler.db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"_schema_{name[:4]}", Path(__file__).with_name(name)
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_schema_0001 = _revision("0001_initial_schema.py")
_schema_0003 = _revision("0003_verified_products_and_parked_groups.py")
_schema_0005 = _revision("0005_world_changes.py")

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: The columns the view gains: the verdict on the group's current generation.
_QUALITY = """
            (SELECT q.quality FROM quality_reports q
              WHERE q.group_id = g.id AND q.generation = g.generation) AS qa_status,
            (SELECT q.summary FROM quality_reports q
              WHERE q.group_id = g.id AND q.generation = g.generation) AS qa_summary,
            g.published_path,"""


def upgrade() -> None:
    op.create_table(
        "quality_reports",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("quality", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("figure_path", sa.Text(), nullable=False),
        sa.Column(
            "assessed_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.Column("accepted_at", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("accepted_by", sa.String(length=64), nullable=True),
        sa.Column("accept_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["mosaic_groups.id"],
            name=op.f("fk_quality_reports_group_id_mosaic_groups"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_reports")),
        sa.UniqueConstraint(
            "group_id", "generation", name=op.f("uq_quality_reports_group_id_generation")
        ),
    )
    op.create_index(op.f("ix_quality_reports_group_id"), "quality_reports", ["group_id"])
    _schema_0005.count_changes_of("quality_reports")
    _schema_0001._drop_views()
    _create_views()


def downgrade() -> None:
    _schema_0001._drop_views()
    _schema_0003._create_views(with_problem=True)
    _schema_0005.stop_counting_changes_of("quality_reports")
    op.drop_index(op.f("ix_quality_reports_group_id"), table_name="quality_reports")
    op.drop_table("quality_reports")


def _create_views() -> None:
    """Revision 0003's views, ``mosaic_status`` with the quality columns added."""
    recorder = _Recorder()
    _schema_0003.op = recorder
    try:
        _schema_0003._create_views(with_problem=True)
    finally:
        _schema_0003.op = op
    for statement in recorder.statements:
        if "CREATE VIEW mosaic_status" in statement:
            assert statement.count("\n            g.published_path,") == 1
            statement = statement.replace("\n            g.published_path,", _QUALITY)
        op.execute(statement)


class _Recorder:
    """Stands for ``alembic.op`` while revision 0003 writes its views, keeping the SQL."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, statement: str) -> None:
        self.statements.append(statement)

    def get_bind(self) -> sa.Connection:
        return op.get_bind()
