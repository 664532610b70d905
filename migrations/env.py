"""Alembic environment: batch mode so SQLite can alter tables, URL from the settings."""

from __future__ import annotations

from alembic import context

from reconciler.config import load_settings
from reconciler.db.engine import make_engine
from reconciler.db.models import Base

config = context.config
target_metadata = Base.metadata

#: Kept by migrations alone, not by the models: the change counter (SQLite's table;
#: PostgreSQL's is a sequence), read by :mod:`reconciler.db.changes`.
_UNMODELLED_TABLES = frozenset({"world_changes"})


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    return not (type_ == "table" and name in _UNMODELLED_TABLES)


def _connectable():
    connection = config.attributes.get("connection")
    if connection is not None:
        return connection
    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    return make_engine(url)


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    context.configure(
        url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = _connectable()
    if hasattr(connectable, "connect"):
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
