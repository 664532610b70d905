"""Desired-state rows shared by every mode of wanting: insert a group (a window asked for
twice is one group: the unique constraint decides), find a group by its window, and read
observations as the pure core's spans."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.db.models import MosaicGroup
from reconciler.windows import ObservationSpan


def insert_group(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert a desired mosaic; None when a group with the same window exists."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(MosaicGroup)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["window_start", "window_end"])
        .returning(MosaicGroup.id)
    )
    return conn.execute(stmt).scalar()


def group_with_window(conn: Connection, start: datetime, end: datetime) -> int | None:
    """The id of the group with exactly this window, if any."""
    return conn.execute(
        select(MosaicGroup.id).where(
            MosaicGroup.window_start == start, MosaicGroup.window_end == end
        )
    ).scalar()


def observation_span(row: Row[Any]) -> ObservationSpan:
    """A row with ``key``, ``start_time``, ``end_time`` and ``dec_deg`` as a span."""
    return ObservationSpan(row.key, row.start_time, row.end_time, row.dec_deg)
