"""Engines and transactions for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE`` so two processes serialise on the write lock up front instead of
failing half-way with "database is locked". Reads use a deferred ``BEGIN`` (a snapshot).
PostgreSQL reads run ``REPEATABLE READ READ ONLY`` so one observe sees one snapshot.

Round trips are the cost of a short transaction on PostgreSQL: ``BEGIN``, each statement
and ``COMMIT`` are one each. A write of one statement can go alone (:func:`writing_one`),
and a pooled connection is pinged only when it sat idle long enough for the server to have
gone away unnoticed; a connection lost while in use fails its transaction, which the
service handles like any outage (the pass ends, the next one starts on a new connection).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url

from reconciler.config import Settings

_READ_ONLY = "reconciler_read_only"
#: A pooled connection idle for longer than this is pinged before use. A worker busy with
#: short actions reuses its connection within milliseconds and pays no ping; one that
#: waited for a child process, or between passes, does.
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN_AT = "reconciler_checked_in_at"


def normalise_url(url: str | URL) -> URL:
    """Return the URL with psycopg 3 as PostgreSQL driver (``postgresql://`` means it)."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def engine_for(settings: Settings) -> Engine:
    """The engine of the configured database, with the configured time-outs."""
    database = settings.database
    return make_engine(
        settings.database_url,
        busy_timeout_seconds=database.busy_timeout_seconds,
        statement_timeout_seconds=database.statement_timeout_seconds,
    )


def make_engine(
    url: str | URL,
    *,
    busy_timeout_seconds: float = 30.0,
    statement_timeout_seconds: float = 120.0,
    **kwargs: Any,
) -> Engine:
    """Create an engine configured for the reconciler's transaction discipline.

    On PostgreSQL a statement, or a transaction left idle, is ended by the server after
    ``statement_timeout_seconds``, and a connection whose server stops answering is given
    up by the client after as long (TCP user timeout and keepalives): a hung connection
    never freezes a heartbeat for longer than a lease.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, busy_timeout_seconds, **kwargs)
    timeout_ms = int(statement_timeout_seconds * 1000)
    # Short OLTP statements: JIT compilation and parallel workers only ever add latency
    # here (starting one parallel worker took 7 ms, for a query an index answers in 0.2 ms).
    options = (
        "-c timezone=UTC -c jit=off -c max_parallel_workers_per_gather=0 "
        f"-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms}"
    )
    connect_args = {
        "options": options,
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": timeout_ms,
    }
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    _ping_after_idle(engine)
    return engine


def _ping_after_idle(engine: Engine) -> None:
    """Ping a pooled connection on checkout when it was idle for more than
    :data:`PING_AFTER_IDLE_SECONDS`; a dead one is replaced before anyone uses it."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_CHECKED_IN_AT)
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out another (a new one if need be).
            raise exc.DisconnectionError(f"pooled connection is gone: {error}") from error


def _sqlite_engine(url: URL, busy_timeout_seconds: float, **kwargs: Any) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_seconds}, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN IMMEDIATE is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction, committed on success and rolled back on error."""
    with engine.begin() as conn:
        yield conn


@contextmanager
def writing_one(engine: Engine) -> Iterator[Connection]:
    """A write of exactly one statement, atomic by itself.

    On PostgreSQL the statement runs in autocommit: one round trip instead of three
    (``BEGIN``, the statement, ``COMMIT``). On SQLite it is a :func:`writing` transaction.
    The caller sends one statement only (a query function documented as such): a second
    would commit on its own.
    """
    if engine.dialect.name != "postgresql":
        with writing(engine) as conn:
            yield conn
        return
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that sees one consistent snapshot."""
    options: dict[str, Any] = {_READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    with engine.connect() as conn:
        conn = conn.execution_options(**options)
        with conn.begin():
            yield conn


@contextmanager
def reading_one(engine: Engine) -> Iterator[Connection]:
    """A read of exactly one statement, consistent by itself.

    On PostgreSQL the statement runs in autocommit: one round trip instead of three. On
    SQLite it is a :func:`reading` transaction (its ``BEGIN`` costs no round trip). The
    caller sends one statement only: a second would see another snapshot.
    """
    if engine.dialect.name != "postgresql":
        with reading(engine) as conn:
            yield conn
        return
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def refresh_statistics(engine: Engine) -> None:
    """Give SQLite's query planner current table statistics (PostgreSQL's autovacuum
    keeps its own). Sampled (``analysis_limit``), so it takes milliseconds whatever the
    size of the database; without it the planner guesses from indexes alone."""
    if engine.dialect.name != "sqlite":
        return
    with writing(engine) as conn:
        conn.exec_driver_sql("PRAGMA analysis_limit=1000")
        conn.exec_driver_sql("ANALYZE")


def dialect_insert(conn: Connection, table: Any) -> Any:
    """``INSERT`` into ``table`` (a model or a Table) in the connection's dialect, which has
    ``on_conflict_do_update`` and ``on_conflict_do_nothing`` on both backends."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
