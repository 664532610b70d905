"""The queue's fast path: batches of short actions claimed, leased, fenced and given back
correctly, claims and completions in one statement each on PostgreSQL, and pooled
connections pinged only after sitting idle."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import OperationalError

from reconciler.db import engine as db_engine
from reconciler.db import queries
from reconciler.db.engine import reading, writing, writing_one
from reconciler.db.models import Action, Event
from reconciler.engine.claims import LONG_QUEUE_BATCHES, Claims
from reconciler.engine.registry import load_registry
from reconciler.model import ActionKey, ActionKind, ActionSpec
from reconciler.retry import RetryLater
from reconciler.service import Reconciler
from tests.conftest import PG_ADMIN_URL
from tests.world import T0

BATCH = 5


def enqueue(engine: Engine, count: int) -> None:
    specs = [
        ActionSpec(
            ActionKey(ActionKind.CONVERT, f"obs:{i:04d}"),
            priority=T0 + timedelta(seconds=i),
            group_id=None,
        )
        for i in range(count)
    ]
    with writing(engine) as conn:
        queries.enqueue(conn, specs, now=T0)


def claims_of(engine: Engine, owner: str = "w", lease_seconds: float = 60.0) -> Claims:
    return Claims(
        engine,
        owner=owner,
        kinds=[ActionKind.CONVERT],
        lease_seconds=lease_seconds,
        batch=BATCH,
        clock=lambda: T0,
    )


def rows(engine: Engine) -> dict[str, tuple]:
    with reading(engine) as conn:
        found = conn.execute(
            select(Action.target, Action.state, Action.lease_token, Action.attempts)
        ).all()
    return {target: (state, token, attempts) for target, state, token, attempts in found}


def running(engine: Engine) -> dict[str, str]:
    """Target → lease token of every running action."""
    return {t: token for t, (state, token, _) in rows(engine).items() if state == "running"}


def complete(engine: Engine, action) -> bool:
    with writing_one(engine) as conn:
        return queries.complete(conn, action, now=T0, message="done", actor="w")


def test_a_worker_claims_one_at_a_time_until_its_actions_prove_short(engine):
    enqueue(engine, LONG_QUEUE_BATCHES * BATCH * 2)
    claims = claims_of(engine)

    first = claims.next()
    assert list(running(engine)) == [first.key.target] and not claims.holding

    assert complete(engine, first)
    claims.performed(0.01)
    second = claims.next()

    leased = running(engine)
    assert len(leased) == BATCH and set(leased.values()) == {second.token}
    assert second.key.target == "obs:0001", "earliest first"
    handed = [second] + [claims.next() for _ in range(BATCH - 1)]
    assert [a.key.target for a in handed] == sorted(leased)
    assert not claims.holding


def test_a_batch_is_claimed_only_while_the_queue_is_long(engine):
    enqueue(engine, LONG_QUEUE_BATCHES * BATCH - 1)
    claims = claims_of(engine)
    claims.performed(0.01)

    claims.next()

    assert len(running(engine)) == 1, "a short queue is left to every worker"


def test_a_long_action_sends_the_rest_of_its_batch_back(engine):
    enqueue(engine, LONG_QUEUE_BATCHES * BATCH)
    claims = claims_of(engine)
    claims.performed(0.01)
    first = claims.next()
    assert len(running(engine)) == BATCH

    assert complete(engine, first)
    claims.performed(30.0)

    assert running(engine) == {} and not claims.holding
    state = rows(engine)
    assert state[first.key.target][0] == "done"
    given_back = [v for t, v in state.items() if t != first.key.target]
    assert all(v == ("pending", None, 0) for v in given_back), "the attempt is not counted"
    claims.next()
    assert len(running(engine)) == 1, "single claims after a long action"


def test_the_heartbeat_of_the_running_action_keeps_its_whole_batch(engine):
    enqueue(engine, LONG_QUEUE_BATCHES * BATCH)
    claims = claims_of(engine, lease_seconds=10.0)
    claims.performed(0.01)
    first = claims.next()
    later = T0 + timedelta(seconds=8)

    with writing(engine) as conn:
        assert queries.heartbeat(conn, first, now=later, lease_seconds=10.0)
    with writing(engine) as conn:
        expired = queries.expired_leases(conn, now=T0 + timedelta(seconds=12))

    assert expired == [], "the held actions were renewed with the running one"
    with reading(engine) as conn:
        expiries = set(
            conn.execute(select(Action.lease_expires_at).where(Action.state == "running")).scalars()
        )
    assert expiries == {later + timedelta(seconds=10)}


def test_a_held_action_reclaimed_by_another_worker_is_fenced_off(engine):
    enqueue(engine, LONG_QUEUE_BATCHES * BATCH)
    claims = claims_of(engine, lease_seconds=10.0)
    claims.performed(0.01)
    claims.next()
    held = claims.next()
    after = T0 + timedelta(seconds=11)
    with writing(engine) as conn:
        for lease in queries.expired_leases(conn, now=after):
            queries.settle_expired(conn, lease, RetryLater(0, "expired"), now=after)
    with writing(engine) as conn:
        taken = queries.claim(
            conn, owner="other", kinds=[ActionKind.CONVERT], now=after, lease_seconds=60, limit=99
        )
    assert held.id in {a.id for a in taken}

    assert not complete(engine, held), "the old token writes nothing"
    assert claims.release() == 0, "nothing of the batch is this worker's any more"
    assert set(running(engine).values()) == {taken[0].token}
    with reading(engine) as conn:
        assert conn.execute(select(Event.id).where(Event.kind == "action_done")).all() == []


def test_completion_writes_its_event_in_the_same_write(engine):
    enqueue(engine, 1)
    action = claims_of(engine).next()

    assert complete(engine, action)

    with reading(engine) as conn:
        (found,) = conn.execute(select(Event.kind, Event.action_id, Event.actor, Event.message))
    assert tuple(found) == ("action_done", action.id, "w", "done")
    assert not complete(engine, action), "a second completion writes nothing"
    with reading(engine) as conn:
        assert len(conn.execute(select(Event.id)).all()) == 1


def test_a_pass_gives_back_what_it_claimed_and_did_not_start(engine, settings):
    settings = replace(
        settings,
        passes=replace(settings.passes, max_actions=1, claim_batch=BATCH),
    )
    enqueue(engine, LONG_QUEUE_BATCHES * BATCH)
    service = Reconciler(engine, settings, load_registry(settings), clock=lambda: T0)
    service._claims().performed(0.01)

    report = service.run_pass()

    (performed,) = report.actions
    assert running(engine) == {}
    state = rows(engine)
    untouched = {t: v for t, v in state.items() if t != performed.label.split()[1]}
    assert all(v == ("pending", None, 0) for v in untouched.values())


def test_claim_and_completion_are_one_statement_each_on_postgresql(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no round trips to save")
    enqueue(engine, 1)
    autocommit: list[bool] = []

    def note(conn, cursor, statement, *_):
        autocommit.append(conn.connection.dbapi_connection.autocommit)

    event.listen(engine, "before_cursor_execute", note)

    action = claims_of(engine).next()
    assert complete(engine, action)

    assert autocommit == [True, True], "two statements, no BEGIN and COMMIT around either"


def backend_pid(engine: Engine) -> int:
    with reading(engine) as conn:
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_idle_long_enough_is_pinged_and_replaced(engine, monkeypatch):
    if engine.dialect.name != "postgresql":
        pytest.skip("an embedded database has no connection to lose")
    pid = backend_pid(engine)
    terminate(pid)
    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_SECONDS", 0.0)

    assert backend_pid(engine) != pid


def test_a_connection_lost_while_busy_fails_one_transaction_only(engine, monkeypatch):
    if engine.dialect.name != "postgresql":
        pytest.skip("an embedded database has no connection to lose")
    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_SECONDS", 3600.0)
    pid = backend_pid(engine)
    terminate(pid)

    with pytest.raises(OperationalError):
        backend_pid(engine)
    assert backend_pid(engine) != pid, "the pool replaced the connection"
