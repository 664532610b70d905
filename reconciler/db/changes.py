"""The change counter: how many changes the tables a pass observes have seen.

Every insert, delete and update of an observed column of those tables advances it, by
triggers (migration ``0005``), whoever writes: the service, the CLI or plain SQL. While it
stands still, a pass would observe what the last one did, so it need not observe again
(:mod:`reconciler.settled`).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

#: On PostgreSQL the counter is a sequence advanced as a transaction commits, a moment
#: before the change becomes visible (a sequence is not transactional, and takes no lock
#: the writers would queue on). A look that starts this long after the counter last moved
#: sees every change it counts. On SQLite the counter is written in the writer's own
#: transaction, so a reader sees both or neither.
RACY_SECONDS = {"postgresql": 2.0, "sqlite": 0.0}

_READ = {
    # A new sequence reads (1, not called); the first change makes it (1, called).
    "postgresql": text("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM world_changes"),
    "sqlite": text("SELECT counter FROM world_changes WHERE id = 1"),
}


def world_changes(conn: Connection) -> int:
    """The counter's value now."""
    value = conn.execute(_READ[conn.dialect.name]).scalar_one()
    return int(value)


def racy_seconds(conn: Connection) -> float:
    """How long after the counter moved a look must start to be sure to see the change."""
    return RACY_SECONDS[conn.dialect.name]
