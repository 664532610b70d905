"""``mosaic_status`` reads each group's parts by index, so a view of a few groups costs a
few groups whatever the history.

Until now the view counted the members of every group in one aggregate before joining
it, and found a group's attempts and last error with ``target = 'group:N' OR target IN
(its observations)``: PostgreSQL cannot use the ``actions.target`` index for that OR and
scanned every action once per group row (40 s for one week of a year's history). Here the
member counts are subqueries on the group's own members, and the actions are looked up
twice by target (the group's, then its observations') and combined. Same columns, same
values.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 18:20:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
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
_schema_0008 = _revision("0008_quality_reports.py")

#: The actions of a group that are not done: its own, and its member observations'.
_GROUP_ACTIONS = """(SELECT a.attempts, a.last_error, a.finished_at FROM actions a
                WHERE a.target = 'group:' || g.id AND a.state <> 'done'
               UNION ALL
               SELECT a.attempts, a.last_error, a.finished_at
                 FROM mosaic_group_members gm
                 JOIN observations o ON o.id = gm.observation_id
                 JOIN actions a ON a.target = 'obs:' || o.key
                WHERE gm.group_id = g.id AND a.state <> 'done')"""

_OLD_ATTEMPTS = """(SELECT COALESCE(MAX(a.attempts), 0) FROM actions a
              WHERE a.state <> 'done'
                AND (a.target = 'group:' || g.id
                     OR a.target IN (SELECT 'obs:' || o.key
                                       FROM mosaic_group_members gm
                                       JOIN observations o ON o.id = gm.observation_id
                                      WHERE gm.group_id = g.id))) AS attempts"""
_NEW_ATTEMPTS = f"""(SELECT COALESCE(MAX(t.attempts), 0) FROM {_GROUP_ACTIONS} t) AS attempts"""

_OLD_LAST_ERROR = """(SELECT a.last_error FROM actions a
              WHERE a.last_error IS NOT NULL AND a.state <> 'done'
                AND (a.target = 'group:' || g.id
                     OR a.target IN (SELECT 'obs:' || o.key
                                       FROM mosaic_group_members gm
                                       JOIN observations o ON o.id = gm.observation_id
                                      WHERE gm.group_id = g.id))
              ORDER BY a.finished_at DESC LIMIT 1) AS last_error"""
_NEW_LAST_ERROR = f"""(SELECT t.last_error FROM {_GROUP_ACTIONS} t
              WHERE t.last_error IS NOT NULL
              ORDER BY t.finished_at DESC LIMIT 1) AS last_error"""


def _members(condition: str = "", join: str = "") -> str:
    """A count of the group's members (with ``join`` and ``condition``)."""
    return (
        "(SELECT COUNT(*) FROM mosaic_group_members gm"
        f"{join} WHERE gm.group_id = g.id AND gm.role = 'member'{condition})"
    )


_OBSERVATION = " JOIN observations o ON o.id = gm.observation_id"
_OLD_COUNTS = """COALESCE(m.members, 0) AS members,
            COALESCE(m.present, 0) AS present,
            COALESCE(m.converted, 0) AS converted,
            COALESCE(m.calibrated, 0) AS calibrated,
            COALESCE(m.imaged, 0) AS imaged,"""
_NEW_COUNTS = f"""{_members()} AS members,
            {_members(" AND o.ready", _OBSERVATION)} AS present,
            {_members(join=" JOIN measurement_sets x ON x.observation_id = gm.observation_id")}
              AS converted,
            {_members(join=" JOIN calibrated_ms x ON x.observation_id = gm.observation_id")}
              AS calibrated,
            {_members(join=" JOIN images x ON x.observation_id = gm.observation_id")}
              AS imaged,"""

_OLD_FROM = """FROM mosaic_groups g
        LEFT JOIN (
            SELECT gm.group_id,
                   COUNT(*) AS members,
                   SUM(CASE WHEN o.ready THEN 1 ELSE 0 END) AS present,
                   COUNT(ms.id) AS converted,
                   COUNT(c.id) AS calibrated,
                   COUNT(i.id) AS imaged
              FROM mosaic_group_members gm
              JOIN observations o ON o.id = gm.observation_id
              LEFT JOIN measurement_sets ms ON ms.observation_id = o.id
              LEFT JOIN calibrated_ms c ON c.observation_id = o.id
              LEFT JOIN images i ON i.observation_id = o.id
             WHERE gm.role = 'member'
             GROUP BY gm.group_id
        ) m ON m.group_id = g.id"""
_NEW_FROM = "FROM mosaic_groups g"

_REWRITES = (
    (_OLD_ATTEMPTS, _NEW_ATTEMPTS),
    (_OLD_LAST_ERROR, _NEW_LAST_ERROR),
    (_OLD_COUNTS, _NEW_COUNTS),
    (_OLD_FROM, _NEW_FROM),
)


def upgrade() -> None:
    _schema_0001._drop_views()
    for statement in _schema_0008_statements():
        if "CREATE VIEW mosaic_status" in statement:
            for old, new in _REWRITES:
                assert statement.count(old) == 1, old
                statement = statement.replace(old, new)
        op.execute(statement)


def downgrade() -> None:
    _schema_0001._drop_views()
    _schema_0008._create_views()


def _schema_0008_statements() -> list[str]:
    """The SQL of revision 0008's views, as it would run them."""
    recorder = _Recorder()
    _schema_0008.op = recorder
    try:
        _schema_0008._create_views()
    finally:
        _schema_0008.op = op
    return recorder.statements


class _Recorder:
    """Stands for ``alembic.op`` while revision 0008 writes its views, keeping the SQL."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, statement: str) -> None:
        self.statements.append(statement)

    def get_bind(self) -> sa.Connection:
        return op.get_bind()
