"""A counter of changes to what a pass observes, so a pass can skip observing a world that
did not change (:mod:`reconciler.db.changes`).

Every insert, delete and update of an observed column of the tables a pass reads
(``_WATCHED``) counts one change, whoever writes it: the service, the CLI, or plain SQL.
Lease renewals (``actions.heartbeat_at``, ``lease_expires_at``), discovery's bookkeeping
(``observations.updated_at``, ``judge_again_at``) and verification times count nothing.

- **PostgreSQL:** the sequence ``world_changes``, advanced by a constraint trigger deferred
  to commit. A sequence takes no row lock, so the writers of ``actions`` do not queue on
  one counter row; it is not transactional, so a reader may see a change counted a moment
  before it is committed (the reader allows for that: ``changes.RACY_SECONDS``).
- **SQLite:** the one row of the table ``world_changes``, updated by triggers in the
  writer's own transaction (SQLite has one writer at a time).

A later migration that rebuilds a watched table on SQLite (``batch_alter_table``) drops
its triggers with it and must create them again (``count_changes_of``), as one that adds a
table a pass observes must count its changes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 02:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The tables a pass observes, and the columns of each whose updates count (None: all).
_WATCHED: dict[str, tuple[str, ...] | None] = {
    "mosaic_groups": None,
    "mosaic_group_members": None,
    "observations": (
        "key",
        "start_time",
        "end_time",
        "dec_deg",
        "ready",
        "problem",
        "first_seen_at",
    ),
    "measurement_sets": None,
    "calibrated_ms": None,
    "images": None,
    "calibration_solutions": None,
    "bandpass_calibrators": None,
    "actions": (
        "kind",
        "target",
        "generation",
        "group_id",
        "state",
        "attempts",
        "version",
        "not_before",
        "last_error",
    ),
    "data_registry": ("kind", "group_id", "generation", "status", "stage_path", "published_path"),
}

_EVENTS = ("INSERT", "DELETE", "UPDATE")


def _update_of(columns: tuple[str, ...] | None) -> str:
    return "UPDATE" if columns is None else f"UPDATE OF {', '.join(columns)}"


def count_changes_of(table: str, columns: tuple[str, ...] | None = None) -> None:
    """The triggers that count every insert and delete of ``table``'s rows, and every
    update of ``columns`` (None: of any column)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE CONSTRAINT TRIGGER world_changes AFTER INSERT OR DELETE OR "
            f"{_update_of(columns)} ON {table} DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION count_world_change()"
        )
        return
    for event in _EVENTS:
        when = _update_of(columns) if event == "UPDATE" else event
        op.execute(
            f"CREATE TRIGGER world_changes_{table}_{event.lower()} AFTER {when} ON {table} "
            "BEGIN UPDATE world_changes SET counter = counter + 1 WHERE id = 1; END"
        )


def stop_counting_changes_of(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS world_changes ON {table}")
        return
    for event in _EVENTS:
        op.execute(f"DROP TRIGGER IF EXISTS world_changes_{table}_{event.lower()}")


def create_counter() -> None:
    """The counter: a sequence and the function that advances it on PostgreSQL, a table of
    one row on SQLite."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE world_changes")
        # Anyone allowed to write a watched table may count a change.
        op.execute("GRANT USAGE, SELECT ON SEQUENCE world_changes TO PUBLIC")
        op.execute(
            "CREATE FUNCTION count_world_change() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM nextval('world_changes'); RETURN NULL; END $$"
        )
        return
    op.execute(
        "CREATE TABLE world_changes (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "counter INTEGER NOT NULL)"
    )
    op.execute("INSERT INTO world_changes (id, counter) VALUES (1, 0)")


def drop_counter() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS count_world_change()")
        op.execute("DROP SEQUENCE IF EXISTS world_changes")
        return
    op.execute("DROP TABLE IF EXISTS world_changes")


def upgrade() -> None:
    create_counter()
    for table, columns in _WATCHED.items():
        count_changes_of(table, columns)


def downgrade() -> None:
    for table in _WATCHED:
        stop_counting_changes_of(table)
    drop_counter()
