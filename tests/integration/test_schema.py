"""Migrations, desired rows by plain SQL, the uniqueness rules, and the status views."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from reconciler.db import queries
from reconciler.db.engine import make_engine, reading, refresh_statistics, writing
from reconciler.db.migrate import (
    check_models,
    current_revision,
    downgrade,
    head_revision,
    require_head,
    upgrade,
)
from reconciler.db.models import Action, MosaicGroup
from reconciler.desired.explicit import request_window
from reconciler.errors import RequestError, SchemaError
from reconciler.model import ActionKey, ActionKind, ActionSpec
from reconciler.retry import RetryLater
from tests.world import OBSERVATION, T0, add_observations

DAY = timedelta(hours=24)


def test_migrations_upgrade_downgrade_and_match_the_models(empty_db_url):
    engine = make_engine(empty_db_url)
    with pytest.raises(SchemaError, match="empty database"):
        require_head(engine)

    upgrade(engine)
    assert current_revision(engine) == head_revision()
    check_models(engine)
    require_head(engine)
    upgrade(engine)  # again: a no-op

    downgrade(engine, "base")
    assert current_revision(engine) is None
    with reading(engine) as conn:
        names = set(_tables(conn))
    assert "mosaic_groups" not in names and "actions" not in names

    upgrade(engine)
    check_models(engine)
    with reading(engine) as conn:
        for view in ("mosaic_status", "coverage_gaps", "pipeline_throughput"):
            conn.execute(text(f"SELECT * FROM {view}")).all()
    # Down one revision and up again: the checks on plain-SQL windows survive both ways.
    downgrade(engine, "0002")
    upgrade(engine)
    check_models(engine)
    with pytest.raises(DBAPIError), writing(engine) as conn:
        conn.execute(
            text("INSERT INTO mosaic_groups (window_start, window_end) VALUES ('soon', 'later')")
        )
    engine.dispose()


def test_init_refuses_a_database_a_newer_release_migrated(engine):
    with writing(engine) as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff0000newer'"))

    with pytest.raises(SchemaError, match="ffff0000newer, which this code does not know"):
        upgrade(engine)

    assert current_revision(engine) == "ffff0000newer", "left as it was"


def test_a_role_that_does_not_own_the_database_can_migrate_it(pg_admin, caplog):
    # Revision 0002 sets the database's time zone, which only its owner may do: a role
    # that may create tables but does not own the database migrates with a warning.
    admin, url_of = pg_admin
    suffix = uuid.uuid4().hex[:10]
    role, database = f"reconciler_user_{suffix}", f"reconciler_notowned_{suffix}"
    admin.execute(f'CREATE ROLE "{role}" LOGIN')
    admin.execute(f'CREATE DATABASE "{database}"')
    try:
        with psycopg.connect(url_of(database).replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'GRANT ALL ON SCHEMA public TO "{role}"')
        engine = make_engine(url_of(database).replace("postgres@", f"{role}@"))
        with caplog.at_level(logging.WARNING):
            upgrade(engine)
        assert current_revision(engine) == head_revision()
        check_models(engine)
        engine.dispose()
        assert f"database {database} is not owned by {role}" in caplog.text
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _tables(conn):
    if conn.dialect.name == "sqlite":
        return conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars()
    return conn.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    ).scalars()


def test_a_plain_sql_insert_naming_only_the_window_is_a_complete_request(engine: Engine):
    with writing(engine) as conn:
        conn.execute(
            text(
                "INSERT INTO mosaic_groups (window_start, window_end) "
                "VALUES ('2025-03-01T00:00:00', '2025-03-01 00:50:00')"
            )
        )
    with reading(engine) as conn:
        row = conn.execute(select(MosaicGroup)).one()
    assert row.window_start == datetime(2025, 3, 1, tzinfo=UTC)
    assert row.window_end == datetime(2025, 3, 1, 0, 50, tzinfo=UTC)
    assert (row.origin, row.generation, row.paused, row.cancelled, row.phase) == (
        "manual",
        1,
        False,
        False,
        "new",
    )
    assert abs(row.created_at - datetime.now(UTC)) < timedelta(minutes=5)

    again = request_window(engine, row.window_start, row.window_end, max_window=DAY)
    assert again.group_id == row.id and not again.created


def test_a_plain_sql_time_with_an_offset_means_the_same_instant_on_both_databases(engine):
    with writing(engine) as conn:
        conn.execute(
            text(
                "INSERT INTO mosaic_groups (window_start, window_end) "
                "VALUES ('2025-03-01 02:00:00+02:00', '2025-03-01T02:50:00+02:00')"
            )
        )
    with reading(engine) as conn:
        row = conn.execute(select(MosaicGroup)).one()
        shown = conn.execute(text("SELECT window_start FROM mosaic_status")).scalar_one()
    assert (row.window_start, row.window_end) == (
        datetime(2025, 3, 1, tzinfo=UTC),
        datetime(2025, 3, 1, 0, 50, tzinfo=UTC),
    )
    assert str(shown).startswith("2025-03-01 00:00:00")


@pytest.mark.parametrize(
    "start, end",
    [("2025-03-01 00:00:00", "2025-03-01 00:50:00"), ("2025-03-01T00:00:00Z", "2025-03-01T00:50")],
)
def test_the_same_window_twice_by_sql_is_refused_by_the_unique_constraint(engine, start, end):
    request_window(
        engine,
        datetime(2025, 3, 1, tzinfo=UTC),
        datetime(2025, 3, 1, 0, 50, tzinfo=UTC),
        max_window=DAY,
    )
    with pytest.raises(IntegrityError), writing(engine) as conn:
        conn.execute(
            text("INSERT INTO mosaic_groups (window_start, window_end) VALUES (:s, :e)"),
            {"s": start, "e": end},
        )


@pytest.mark.parametrize(
    "start, end",
    [("2025-03-01 01:00:00", "2025-03-01 00:00:00"), ("not a time", "2025-03-01 00:00:00")],
)
def test_sql_inserts_of_impossible_windows_are_refused(engine, start, end):
    with pytest.raises(DBAPIError), writing(engine) as conn:
        conn.execute(
            text("INSERT INTO mosaic_groups (window_start, window_end) VALUES (:s, :e)"),
            {"s": start, "e": end},
        )


def test_requests_return_the_existing_group_and_refuse_bad_windows(engine):
    start = datetime(2025, 3, 1, tzinfo=UTC)
    first = request_window(engine, start, start + timedelta(minutes=50), max_window=DAY)
    second = request_window(engine, start, start + timedelta(minutes=50), max_window=DAY)
    other = request_window(engine, start, start + timedelta(minutes=40), max_window=DAY)

    assert first.created and not second.created and first.group_id == second.group_id
    assert other.created and other.group_id != first.group_id
    with pytest.raises(RequestError, match="not after its start"):
        request_window(engine, start, start, max_window=DAY)
    with pytest.raises(RequestError, match="longer than 24 h"):
        request_window(engine, start, start + timedelta(hours=25), max_window=DAY)
    with reading(engine) as conn:
        assert conn.execute(select(func.count()).select_from(MosaicGroup)).scalar() == 2


def _spec(target: str) -> ActionSpec:
    return ActionSpec(ActionKey(ActionKind.CONVERT, target), priority=T0, group_id=None)


def test_enqueue_never_duplicates_an_action(engine):
    with writing(engine) as conn:
        assert queries.enqueue(conn, [_spec("obs:a"), _spec("obs:b")], now=T0) == 2
    with writing(engine) as conn:
        assert queries.enqueue(conn, [_spec("obs:a"), _spec("obs:c")], now=T0) == 1
    with reading(engine) as conn:
        assert conn.execute(select(func.count()).select_from(Action)).scalar() == 3


def test_a_worker_that_lost_its_lease_cannot_write(engine):
    with writing(engine) as conn:
        queries.enqueue(conn, [_spec("obs:a")], now=T0)
    with writing(engine) as conn:
        (old,) = queries.claim(
            conn, owner="old", kinds=[ActionKind.CONVERT], now=T0, lease_seconds=10
        )
    later = T0 + timedelta(seconds=11)
    with writing(engine) as conn:
        (lease,) = queries.expired_leases(conn, now=later)
        assert queries.settle_expired(conn, lease, RetryLater(0, "expired"), now=later)
    with writing(engine) as conn:
        (new,) = queries.claim(
            conn, owner="new", kinds=[ActionKind.CONVERT], now=later, lease_seconds=10
        )
    assert new.id == old.id and new.token != old.token and new.attempts == 2

    with writing(engine) as conn:
        assert not queries.heartbeat(conn, old, now=later, lease_seconds=10)
        assert not queries.complete(conn, old, now=later, message="old done", actor="old")
        assert not queries.release(conn, old, now=later)
    with writing(engine) as conn:
        assert queries.complete(conn, new, now=later, message="new done", actor="new")
    with reading(engine) as conn:
        row = conn.execute(select(Action)).one()
    assert (row.state, row.lease_token) == ("done", None)


def test_claims_skip_backing_off_actions_and_take_the_earliest_window(engine):
    specs = [
        ActionSpec(ActionKey(ActionKind.CONVERT, "obs:late"), priority=T0 + DAY, group_id=None),
        ActionSpec(ActionKey(ActionKind.CONVERT, "obs:early"), priority=T0, group_id=None),
        ActionSpec(ActionKey(ActionKind.IMAGE, "obs:other"), priority=T0, group_id=None),
    ]
    with writing(engine) as conn:
        queries.enqueue(conn, specs, now=T0)
        conn.execute(
            Action.__table__.update()
            .where(Action.target == "obs:early")
            .values(not_before=T0 + timedelta(minutes=5))
        )
    with writing(engine) as conn:
        claimed = queries.claim(
            conn, owner="w", kinds=[ActionKind.CONVERT], now=T0, lease_seconds=5, limit=5
        )
    assert [c.key.target for c in claimed] == ["obs:late"]
    with writing(engine) as conn:
        claimed = queries.claim(
            conn,
            owner="w",
            kinds=list(ActionKind),
            now=T0 + timedelta(minutes=6),
            lease_seconds=5,
            limit=5,
        )
    assert [c.key.target for c in claimed] == ["obs:early", "obs:other"]


def test_coverage_gaps_and_throughput_views(engine):
    add_observations(engine, 3)
    add_observations(engine, 2, start=T0 + 3 * OBSERVATION + timedelta(minutes=20))
    with writing(engine) as conn:
        queries.enqueue(conn, [_spec("obs:a"), _spec("obs:b")], now=T0)
        for claimed in queries.claim(
            conn, owner="w", kinds=[ActionKind.CONVERT], now=T0, lease_seconds=60, limit=2
        ):
            queries.complete(
                conn, claimed, now=T0 + timedelta(seconds=30), message="done", actor="w"
            )
    with reading(engine) as conn:
        gaps = conn.execute(
            text("SELECT gap_minutes, dec_before, dec_after FROM coverage_gaps")
        ).all()
        throughput = conn.execute(
            text("SELECT kind, completed, failed, mean_seconds FROM pipeline_throughput")
        ).all()
    assert len(gaps) == 1 and gaps[0].gap_minutes == pytest.approx(20, abs=0.01)
    assert [(t.kind, t.completed, t.failed) for t in throughput] == [("convert", 2, 0)]
    assert throughput[0].mean_seconds == pytest.approx(30, abs=0.01)


def test_mosaic_status_counts_members_and_shows_errors(engine):
    from tests.world import add_solution

    keys = add_observations(engine, 4)
    add_solution(engine, keys[0])
    group = request_window(engine, T0, T0 + 4 * OBSERVATION, max_window=DAY).group_id
    from reconciler.db import artifacts
    from reconciler.db.models import MosaicGroupMember, Observation

    with writing(engine) as conn:
        ids = conn.execute(select(Observation.id).order_by(Observation.start_time)).scalars().all()
        conn.execute(
            insert(MosaicGroupMember),
            [{"group_id": group, "observation_id": i, "position": n} for n, i in enumerate(ids)],
        )
        artifacts.record_measurement_set(
            conn,
            keys[0],
            path="/ms/a",
            start=T0,
            mid=T0,
            end=T0,
            ra_deg=0,
            dec_deg=55.57,
            n_rows=1,
            n_channels=1,
        )
        queries.enqueue(conn, [_spec(f"obs:{keys[1]}")], now=T0)
        (claimed,) = queries.claim(
            conn, owner="w", kinds=[ActionKind.CONVERT], now=T0, lease_seconds=5
        )
        queries.fail(
            conn, claimed, RetryLater(60, "x"), error_kind="temporary", message="disk busy", now=T0
        )
    with reading(engine) as conn:
        row = conn.execute(text("SELECT * FROM mosaic_status")).one()._mapping
    assert (row["members"], row["present"], row["converted"], row["calibrated"], row["imaged"]) == (
        4,
        4,
        1,
        0,
        0,
    )
    assert row["attempts"] == 1 and row["last_error"] == "disk busy"


def test_sqlite_planner_statistics_are_refreshed(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'stats.sqlite'}")
    upgrade(engine)
    add_observations(engine, 30)
    refresh_statistics(engine)
    with reading(engine) as conn:
        stats = dict(conn.execute(text("SELECT idx, stat FROM sqlite_stat1")).all())
    engine.dispose()
    assert stats["ix_observations_start_time"].split()[0] == "30"
