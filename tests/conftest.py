"""Database fixtures: every database test runs on SQLite and on PostgreSQL.

Each test gets a fresh database: a copy of a migrated SQLite file, or a PostgreSQL database
cloned from a migrated template (fast: no migrations per test). Under CI (``CI=true``) the
PostgreSQL half must run: an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from sqlalchemy import Engine

from reconciler.config import PathSettings, Settings
from reconciler.db.engine import make_engine
from reconciler.db.migrate import upgrade

PG_ADMIN_URL = os.environ.get("RECONCILER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True, connect_timeout=5)


def unavailable(message: str) -> NoReturn:
    """A part the test needs is missing: a failure under CI (where the setup provides
    every part), a skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _reachable_pg_admin() -> psycopg.Connection:
    try:
        return _pg_admin()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}".replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session", autouse=True)
def world_scratch(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Files made by tests.world builders go under pytest's temporary directory."""
    import tests.world

    tests.world.SCRATCH = str(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database, created once per test session."""
    admin = _reachable_pg_admin()
    name = f"reconciler_tmpl_{os.getpid()}"
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(_pg_url(name))
    upgrade(engine)
    engine.dispose()
    yield name
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


def fresh_database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, migrated database of ``backend`` that lives as long as the test."""
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "reconciler.sqlite"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    template = request.getfixturevalue("pg_template")
    name = f"reconciler_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def drop() -> None:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    request.addfinalizer(drop)
    return _pg_url(name)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a fresh migrated database, once per backend."""
    return fresh_database_url(request.param, request, tmp_path)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh database with no schema at all, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    admin = _reachable_pg_admin()
    name = f"reconciler_empty_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield _pg_url(name)
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_admin() -> Iterator[tuple[psycopg.Connection, Callable[[str], str]]]:
    """A superuser connection to the shared PostgreSQL and the URL maker for its databases;
    for the tests that only PostgreSQL has a subject for (roles and ownership)."""
    admin = _reachable_pg_admin()
    with admin:
        yield admin, _pg_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a fresh migrated database."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def make_settings(tmp_path: Path, db_url: str, **sections: dict) -> Settings:
    """Settings for a test: its own directories, the test actions, quick retries."""
    base = Settings()
    values = {
        "database": replace(base.database, url=db_url),
        "paths": PathSettings(
            incoming=tmp_path / "incoming", work=tmp_path / "work", products=tmp_path / "products"
        ),
        "retry": replace(base.retry, base_delay_seconds=0.0, jitter=0.0),
        "windows": replace(base.windows, arrival_grace_minutes=0.0),
        "actions": replace(base.actions, registry="tests.engine_actions:registry"),
        "passes": replace(base.passes, max_actions=100),
        # Tests ask for their windows; those about the default tiling switch it on.
        "tiling": replace(base.tiling, enabled=False),
    }
    for name, changes in sections.items():
        values[name] = replace(values.get(name, getattr(base, name)), **changes)
    settings = replace(base, **values)
    settings.paths.work.mkdir(parents=True, exist_ok=True)
    return settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """Settings on the fresh database of this test."""
    return make_settings(tmp_path, db_url)


def write_config(tmp_path: Path, db_url: str, extra: str = "") -> Path:
    """A settings file for commands run as a user would: this test's database and
    directories, the test actions, no tiling; ``extra`` TOML is appended."""
    path = tmp_path / "reconciler.toml"
    path.write_text(
        f"""
[database]
url = "{db_url}"
[paths]
incoming = "{tmp_path / "incoming"}"
work = "{tmp_path / "work"}"
products = "{tmp_path / "products"}"
[actions]
registry = "tests.engine_actions:registry"
[tiling]
enabled = false
{extra}"""
    )
    (tmp_path / "work").mkdir(exist_ok=True)
    return path


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Path:
    """A settings file on the fresh database of this test."""
    return write_config(tmp_path, db_url)


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Service processes a test starts; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
