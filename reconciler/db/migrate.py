"""Alembic, driven from code: migrate to head, and refuse to run on an old schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine

from reconciler.config import redact_url
from reconciler.errors import SchemaError

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config() -> Config:
    """An Alembic config for this project's migrations (no URL: callers pass a connection)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _run(engine: Engine, operation: Callable[..., None], *args: str) -> None:
    """Run an Alembic command on ``engine`` inside one transaction."""
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        operation(config, *args)


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database forward to ``revision``; a no-op when it is already there.

    Raises
    ------
    SchemaError
        When the database is at a revision this code does not know (a newer release
        migrated it): it is left as it is.
    """
    current = current_revision(engine)
    if current is not None and not _known(current):
        where = redact_url(engine.url.render_as_string(hide_password=False))
        raise SchemaError(
            f"database {where} is at schema revision {current}, which this code does not "
            f"know (its newest is {head_revision()}): a newer release migrated it"
        )
    _run(engine, command.upgrade, revision)


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database back to ``revision``."""
    _run(engine, command.downgrade, revision)


def check_models(engine: Engine) -> None:
    """Raise if the models and the migrated schema disagree (``alembic check``)."""
    _run(engine, command.check)


def require_head(engine: Engine) -> None:
    """Raise :class:`SchemaError` with a one-line reason unless the database is at head."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        where = redact_url(engine.url.render_as_string(hide_password=False))
        found = "an empty database" if current is None else f"schema revision {current}"
        raise SchemaError(
            f"database {where} has {found}, this code needs {head}: run `reconciler init`"
        )
