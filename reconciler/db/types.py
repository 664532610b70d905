"""Column types shared by the models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC instant: stored naive (``TIMESTAMP WITHOUT TIME ZONE``), returned aware.

    Every time in the database is UTC, so a plain SQL ``INSERT`` of
    ``'2025-01-01 00:00:00'`` means the same on SQLite and PostgreSQL whatever the session's
    time zone.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"refusing a naive datetime {value.isoformat()}: give UTC times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: object, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            # A row inserted by hand on SQLite may hold any ISO spelling.
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class UTCInstant(UTCDateTime):
    """A UTC instant people write by hand (a mosaic's window), perhaps with an offset.

    PostgreSQL stores it as ``TIMESTAMP WITH TIME ZONE``, so ``'2025-03-01 02:00+02'`` is
    the instant it names instead of 02:00 with the offset dropped (the database's time zone
    is UTC, so a time without an offset is UTC too); SQLite's triggers normalise it.
    """

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(DateTime())


class utcnow(FunctionElement[datetime]):
    """Server-side "now" in UTC, for defaults that plain SQL inserts also get."""

    type = DateTime()
    inherit_cache = True


@compiles(utcnow, "postgresql")
def _utcnow_postgresql(element: utcnow, compiler: SQLCompiler, **kw: object) -> str:
    return "TIMEZONE('utc', CURRENT_TIMESTAMP)"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: SQLCompiler, **kw: object) -> str:
    # CURRENT_TIMESTAMP is UTC on SQLite; the parentheses make it a default expression.
    return "(strftime('%Y-%m-%d %H:%M:%f000', 'now'))"


class window_end_after_start(ColumnElement[bool]):
    """``window_end > window_start`` compared as instants.

    SQLite compares text, and a hand-written row may spell its times differently (``T`` or
    a space), so there the comparison goes through ``julianday``.
    """

    type = Boolean()
    inherit_cache = True


@compiles(window_end_after_start)
def _window_order_default(
    element: window_end_after_start, compiler: SQLCompiler, **kw: object
) -> str:
    return "window_end > window_start"


@compiles(window_end_after_start, "sqlite")
def _window_order_sqlite(
    element: window_end_after_start, compiler: SQLCompiler, **kw: object
) -> str:
    return "julianday(window_end) > julianday(window_start)"
