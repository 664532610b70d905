"""The writes of the pass: enqueue, claim, heartbeat, complete, fail, release, reclaim.

Every statement about a claimed action is conditional on its lease token and checks the
row count, so a worker that lost its lease can never overwrite the new holder's work.
Round trips are the cost of a queue: each function here is one or two statements, and the
claim and the completion, sent for every action, are built once and only bound.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Connection,
    Insert,
    Integer,
    String,
    Text,
    Update,
    and_,
    any_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.db.models import (
    Action,
    Event,
    MosaicGroup,
    MosaicGroupMember,
    Observation,
    RegistryEntry,
)
from reconciler.db.types import UTCDateTime
from reconciler.errors import PermanentError
from reconciler.model import ActionKey, ActionKind, ActionSpec, ActionState, ClaimedAction
from reconciler.retry import GiveUp, RetryLater


def record_event(
    conn: Connection,
    kind: str,
    message: str,
    *,
    at: datetime,
    group_id: int | None = None,
    action_id: int | None = None,
    actor: str | None = None,
) -> None:
    """Append one row to the event history."""
    conn.execute(
        Event.__table__.insert().values(
            at=at, kind=kind, message=message, group_id=group_id, action_id=action_id, actor=actor
        )
    )


def _insert(conn: Connection):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(Action)


def enqueue(conn: Connection, specs: Sequence[ActionSpec], *, now: datetime) -> int:
    """Insert actions that do not exist yet; existing keys are left alone (no duplicates).

    Returns the number of rows inserted.
    """
    if not specs:
        return 0
    rows = [
        {
            "kind": str(s.key.kind),
            "target": s.key.target,
            "generation": s.key.generation,
            "group_id": s.group_id,
            "priority": s.priority,
            "created_at": now,
        }
        for s in specs
    ]
    stmt = (
        _insert(conn)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["kind", "target", "generation"])
        .returning(Action.id)
    )
    return len(conn.execute(stmt).all())


def requeue(conn: Connection, spec: ActionSpec, *, now: datetime) -> bool:
    """Queue again a finished action whose product has gone, or a cancelled one that is
    wanted again, if nobody touched the row since observe read it.

    The condition on ``version`` is optimistic concurrency: if another worker changed the
    row after this pass read it, nothing happens and the next pass looks again.
    """
    assert spec.redo_version is not None
    result = conn.execute(
        update(Action)
        .where(
            _key_matches(spec.key),
            Action.state.in_([str(ActionState.DONE), str(ActionState.CANCELLED)]),
            Action.version == spec.redo_version,
        )
        .values(
            state=str(ActionState.PENDING),
            attempts=0,
            not_before=None,
            priority=spec.priority,
            group_id=spec.group_id,
            version=Action.version + 1,
            finished_at=None,
        )
    )
    return result.rowcount == 1


def _key_matches(key: ActionKey):
    return and_(
        Action.kind == str(key.kind),
        Action.target == key.target,
        Action.generation == key.generation,
    )


def _claim_statement(*, batching: bool, postgresql: bool) -> Update:
    """The claim as one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``,
    built once: a claim only binds its parameters (owner, token, now, expires, kinds, limit,
    and long_queue when ``batching``)."""
    now = bindparam("now", type_=UTCDateTime())
    runnable = (
        Action.state == str(ActionState.PENDING),
        Action.kind.in_(bindparam("kinds", expanding=True)),
        or_(Action.not_before.is_(None), Action.not_before <= now),
    )
    size: ColumnElement[int] = bindparam("limit", type_=Integer())
    if batching:
        long_queue = bindparam("long_queue", type_=Integer())
        # Ordered like the candidates, so both walk the partial index of pending rows.
        waiting = (
            select(Action.id)
            .where(*runnable)
            .order_by(Action.priority, Action.id)
            .limit(long_queue)
            .subquery()
        )
        count = select(func.count()).select_from(waiting).scalar_subquery()
        size = case((count >= long_queue, size), else_=1)
    candidates = (
        select(Action.id)
        .where(*runnable)
        .order_by(Action.priority, Action.id)
        .limit(size)
        .with_for_update(skip_locked=True)
    )
    chosen = candidates.scalar_subquery()
    # PostgreSQL plans ``id IN (SELECT …)`` of an unknown LIMIT as a hash join over a scan
    # of the whole table (5 ms at 20,000 rows, growing with history); ``id = ANY(ARRAY(…))``
    # looks the few ids up by primary key.
    held = Action.id == any_(func.array(chosen)) if postgresql else Action.id.in_(chosen)
    return (
        update(Action)
        .where(held)
        .values(
            state=str(ActionState.RUNNING),
            lease_owner=bindparam("owner"),
            lease_token=bindparam("token"),
            lease_expires_at=bindparam("expires", type_=UTCDateTime()),
            heartbeat_at=now,
            started_at=now,
            attempts=Action.attempts + 1,
            version=Action.version + 1,
        )
        .returning(
            Action.id,
            Action.kind,
            Action.target,
            Action.generation,
            Action.group_id,
            Action.attempts,
            Action.priority,
        )
    )


#: The claim statements by (batching, PostgreSQL).
_CLAIMS = {
    (batching, postgresql): _claim_statement(batching=batching, postgresql=postgresql)
    for batching in (False, True)
    for postgresql in (False, True)
}


def claim(
    conn: Connection,
    *,
    owner: str,
    kinds: Iterable[ActionKind],
    now: datetime,
    lease_seconds: float,
    limit: int = 1,
    long_queue: int | None = None,
) -> list[ClaimedAction]:
    """Lease up to ``limit`` runnable actions, earliest window first, under one token.

    With ``long_queue``, ``limit`` applies only while at least ``long_queue`` actions are
    runnable, and one action is leased otherwise: the same statement counts them, so a
    batch never takes the last few actions other workers could start now.

    PostgreSQL skips rows other workers hold (``FOR UPDATE SKIP LOCKED``); SQLite
    serialises claimers on ``BEGIN IMMEDIATE``. One statement (:func:`writing_one` will
    do); the caller's transaction commits the claim.
    """
    kind_names = [str(k) for k in kinds]
    if not kind_names:
        return []
    token = str(uuid.uuid4())
    batching = long_queue is not None and limit > 1
    params = {
        "owner": owner,
        "token": token,
        "now": now,
        "expires": now + timedelta(seconds=lease_seconds),
        "kinds": kind_names,
        "limit": limit,
        "long_queue": long_queue,
    }
    claimed = [
        ClaimedAction(
            id=row.id,
            key=ActionKey(ActionKind(row.kind), row.target, row.generation),
            group_id=row.group_id,
            attempts=row.attempts,
            owner=owner,
            token=token,
            priority=row.priority,
        )
        for row in conn.execute(_CLAIMS[batching, conn.dialect.name == "postgresql"], params)
    ]
    return sorted(claimed, key=lambda c: (c.priority, c.id))


#: A lease given up: the values every statement that ends a holding writes.
_NO_LEASE = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}


def _held(action: ClaimedAction):
    return and_(
        Action.id == action.id,
        Action.lease_token == action.token,
        Action.state == str(ActionState.RUNNING),
    )


def heartbeat(
    conn: Connection, action: ClaimedAction, *, now: datetime, lease_seconds: float
) -> bool:
    """Extend the lease of ``action`` and of every action claimed with it that is still
    held (a batch shares one token); False means ``action``'s lease was lost (expired and
    reclaimed by someone else)."""
    result = conn.execute(
        update(Action)
        .where(Action.lease_token == action.token, Action.state == str(ActionState.RUNNING))
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(Action.id)
    )
    return action.id in set(result.scalars())


def _completion_statements() -> tuple[Update, Insert, Insert]:
    """Marking a held action done, its ``action_done`` event, and both in one statement
    (a data-modifying ``WITH``, PostgreSQL only); built once, bound per completion with
    action_id, token, now, message, event_group_id and actor."""
    now = bindparam("now", type_=UTCDateTime())
    done = (
        update(Action)
        .where(
            Action.id == bindparam("action_id"),
            Action.lease_token == bindparam("token"),
            Action.state == str(ActionState.RUNNING),
        )
        .values(
            **_NO_LEASE,
            state=str(ActionState.DONE),
            finished_at=now,
            last_error=None,
            error_kind=None,
            not_before=None,
            version=Action.version + 1,
        )
    )
    event = {
        "at": now,
        "kind": literal("action_done"),
        "message": bindparam("message", type_=Text()),
        # Named unlike any column of actions: an UPDATE would take such a key as a SET.
        "group_id": bindparam("event_group_id", type_=Integer()),
        "actor": bindparam("actor", type_=String()),
    }
    event_alone = insert(Event).values(**event, action_id=bindparam("action_id"))
    marked = done.returning(Action.id).cte("done")
    columns = [value.label(name) for name, value in event.items()]
    both = (
        insert(Event)
        .from_select([*event, "action_id"], select(*columns, marked.c.id).select_from(marked))
        .returning(Event.id)
    )
    return done, event_alone, both


_DONE, _DONE_EVENT, _DONE_WITH_EVENT = _completion_statements()


def complete(
    conn: Connection, action: ClaimedAction, *, now: datetime, message: str, actor: str | None
) -> bool:
    """Mark a held action done and append its ``action_done`` event with ``message``.

    False means the lease was lost and nothing was written. On PostgreSQL this is one
    statement, fit for :func:`writing_one`; on SQLite, two in the caller's transaction.
    """
    params = {
        "action_id": action.id,
        "token": action.token,
        "now": now,
        "message": message,
        "event_group_id": action.group_id,
        "actor": actor,
    }
    if conn.dialect.name == "postgresql":
        return conn.execute(_DONE_WITH_EVENT, params).first() is not None
    if conn.execute(_DONE, params).rowcount != 1:
        return False
    conn.execute(_DONE_EVENT, params)
    return True


def fail(
    conn: Connection,
    action: ClaimedAction,
    decision: RetryLater | GiveUp,
    *,
    error_kind: str,
    message: str,
    now: datetime,
) -> bool:
    """Record a failed attempt: back to pending after a delay, or terminally failed."""
    values = _failure_values(decision, error_kind=error_kind, message=message, now=now)
    result = conn.execute(update(Action).where(_held(action)).values(**values))
    return result.rowcount == 1


def _failure_values(
    decision: RetryLater | GiveUp, *, error_kind: str, message: str, now: datetime
) -> dict[str, object]:
    values: dict[str, object] = {
        **_NO_LEASE,
        "last_error": message,
        "error_kind": error_kind,
        "finished_at": now,
        "version": Action.version + 1,
    }
    if isinstance(decision, RetryLater):
        values["state"] = str(ActionState.PENDING)
        values["not_before"] = now + timedelta(seconds=decision.delay_seconds)
    else:
        values["state"] = str(ActionState.FAILED)
        values["last_error"] = decision.reason
    return values


def release(conn: Connection, action: ClaimedAction, *, now: datetime) -> bool:
    """Give a held action back untouched (shutdown): pending again, the attempt not counted."""
    result = conn.execute(
        update(Action)
        .where(_held(action))
        .values(
            **_NO_LEASE,
            state=str(ActionState.PENDING),
            attempts=case((Action.attempts > 0, Action.attempts - 1), else_=0),
            version=Action.version + 1,
        )
    )
    return result.rowcount == 1


def release_unstarted(conn: Connection, actions: Sequence[ClaimedAction]) -> int:
    """Give back actions leased in a batch and never started: pending again, the attempt
    not counted, no event (nothing happened to them). Returns how many were still held."""
    if not actions:
        return 0
    tokens = {a.token for a in actions}
    result = conn.execute(
        update(Action)
        .where(
            Action.id.in_([a.id for a in actions]),
            Action.lease_token.in_(sorted(tokens)),
            Action.state == str(ActionState.RUNNING),
        )
        .values(
            **_NO_LEASE,
            state=str(ActionState.PENDING),
            attempts=case((Action.attempts > 0, Action.attempts - 1), else_=0),
            version=Action.version + 1,
        )
    )
    return result.rowcount


@dataclass(frozen=True)
class ExpiredLease:
    """A running action whose holder stopped heart-beating."""

    id: int
    key: ActionKey
    group_id: int | None
    attempts: int
    owner: str | None
    expired_at: datetime


def _expired(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (Action.state == str(ActionState.RUNNING), Action.lease_expires_at < now)


def any_expired_lease(conn: Connection, *, now: datetime) -> bool:
    """Whether any running action's lease ran out (one indexed look, no lock)."""
    return conn.execute(select(Action.id).where(*_expired(now)).limit(1)).first() is not None


def expired_leases(conn: Connection, *, now: datetime, limit: int = 100) -> list[ExpiredLease]:
    """Running actions whose lease ran out, locked for this transaction to settle."""
    stmt = (
        select(
            Action.id,
            Action.kind,
            Action.target,
            Action.generation,
            Action.group_id,
            Action.attempts,
            Action.lease_owner,
            Action.lease_expires_at,
        )
        .where(*_expired(now))
        .order_by(Action.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [
        ExpiredLease(
            id=row.id,
            key=ActionKey(ActionKind(row.kind), row.target, row.generation),
            group_id=row.group_id,
            attempts=row.attempts,
            owner=row.lease_owner,
            expired_at=row.lease_expires_at,
        )
        for row in conn.execute(stmt)
    ]


def settle_expired(
    conn: Connection, lease: ExpiredLease, decision: RetryLater | GiveUp, *, now: datetime
) -> bool:
    """Return an expired action to the queue (or fail it), if it is still the same lease."""
    message = f"lease of {lease.owner} expired at {lease.expired_at:%Y-%m-%d %H:%M:%S}"
    values = _failure_values(decision, error_kind="lease_expired", message=message, now=now)
    result = conn.execute(
        update(Action)
        .where(
            Action.id == lease.id,
            Action.state == str(ActionState.RUNNING),
            Action.lease_expires_at == lease.expired_at,
        )
        .values(**values)
    )
    return result.rowcount == 1


def live_lease_tokens(conn: Connection, *, now: datetime) -> list[str]:
    """The lease tokens of running actions whose lease has not run out."""
    return list(
        conn.execute(
            select(Action.lease_token).where(
                Action.state == str(ActionState.RUNNING),
                Action.lease_expires_at >= now,
                Action.lease_token.is_not(None),
            )
        ).scalars()
    )


def group_exists(conn: Connection, group_id: int) -> bool:
    """True when a mosaic group with this id exists."""
    found = conn.execute(select(MosaicGroup.id).where(MosaicGroup.id == group_id)).first()
    return found is not None


def cancel_pending(conn: Connection, group_id: int, *, now: datetime) -> int:
    """Cancel the queued (not running) actions a group asked for; returns how many.

    Another group that still wants one of them queues it again on its next pass.
    """
    result = conn.execute(
        update(Action)
        .where(Action.group_id == group_id, Action.state == str(ActionState.PENDING))
        .values(state=str(ActionState.CANCELLED), finished_at=now, version=Action.version + 1)
    )
    return result.rowcount


def reset_failed(conn: Connection, targets: Iterable[str]) -> int:
    """Give failed actions on these targets a fresh set of attempts; returns how many."""
    result = conn.execute(
        update(Action)
        .where(Action.target.in_(sorted(set(targets))), Action.state == str(ActionState.FAILED))
        .values(
            state=str(ActionState.PENDING),
            attempts=0,
            not_before=None,
            finished_at=None,
            version=Action.version + 1,
        )
    )
    return result.rowcount


def wake(conn: Connection, group_ids: Iterable[int]) -> list[int]:
    """Unpark these groups, so the next pass observes them again; returns those woken."""
    ids = sorted(set(group_ids))
    if not ids:
        return []
    woken = conn.execute(
        select(MosaicGroup.id).where(MosaicGroup.id.in_(ids), MosaicGroup.parked.is_(True))
    ).scalars()
    woken = sorted(woken)
    if woken:
        conn.execute(update(MosaicGroup).where(MosaicGroup.id.in_(woken)).values(parked=False))
    return woken


def groups_around(
    conn: Connection, observation_keys: Iterable[str], *, max_window: timedelta
) -> list[int]:
    """Parked groups that hold one of these observations as a member or whose window holds
    its start: what new data, or a retry of an action on it, may set going again. Each
    observation is looked up by the indexed window start, so the cost follows the keys."""
    keys = sorted(set(observation_keys))
    if not keys:
        return []
    found = set(
        conn.execute(
            select(MosaicGroupMember.group_id)
            .join(Observation, Observation.id == MosaicGroupMember.observation_id)
            .join(MosaicGroup, MosaicGroup.id == MosaicGroupMember.group_id)
            .where(Observation.key.in_(keys), MosaicGroup.parked.is_(True))
        ).scalars()
    )
    starts = conn.execute(select(Observation.start_time).where(Observation.key.in_(keys)))
    for start in starts.scalars():
        found.update(
            conn.execute(
                select(MosaicGroup.id).where(
                    MosaicGroup.window_start <= start,
                    MosaicGroup.window_start > start - max_window,
                    MosaicGroup.window_end > start,
                    MosaicGroup.parked.is_(True),
                )
            ).scalars()
        )
    return sorted(found)


def staged_mosaic_id(conn: Connection, group_id: int, generation: int) -> int:
    """The ``data_registry`` id of one group generation's mosaic.

    Raises
    ------
    PermanentError
        When the mosaic was never staged.
    """
    registry_id = conn.execute(
        select(RegistryEntry.id).where(
            RegistryEntry.kind == "mosaic",
            RegistryEntry.group_id == group_id,
            RegistryEntry.generation == generation,
        )
    ).scalar()
    if registry_id is None:
        raise PermanentError(f"group {group_id} generation {generation} has no staged mosaic")
    return registry_id
