"""Perform one claimed action: prepare its payload, run it in a child process under its
lease, and record the outcome, every write fenced by the lease token.

This is the engine's side of an action; what the action does is its handler's business
(:mod:`reconciler.engine.registry`, the handlers in :mod:`reconciler.steps`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from reconciler.conditions import RepeatedCondition
from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.engine import reading, reading_one, writing, writing_one
from reconciler.engine.registry import ActionRegistry
from reconciler.engine.runner import (
    KILL_GRACE_SECONDS,
    ChildLimits,
    Failed,
    Interrupted,
    LeaseLost,
    Outcome,
    Succeeded,
    run_in_child,
)
from reconciler.errors import ActionError, PermanentError, TemporaryError, describe
from reconciler.io.logs import rotate
from reconciler.model import ClaimedAction
from reconciler.retry import FailureKind, GiveUp, after_failure, decision_text

log = logging.getLogger("reconciler")


@dataclass(frozen=True)
class ActionReport:
    """How one claimed action ended in this pass."""

    action_id: int
    label: str
    outcome: str
    seconds: float
    message: str = ""

    @property
    def failed(self) -> bool:
        """True for an attempt that ended in an error (retried or terminal)."""
        return self.outcome in {"retry", "failed"}


def failure_of(exc: ActionError, prefix: str, seconds: float) -> Failed:
    """An error raised in the parent (prepare or record), as a failed outcome."""
    kind = FailureKind.PERMANENT if isinstance(exc, PermanentError) else FailureKind.TEMPORARY
    delay = exc.delay_seconds if isinstance(exc, TemporaryError) else None
    return Failed(kind, f"{prefix}{exc}", seconds, delay)


def attempt_id(token: str) -> str:
    """The attempt's name in temporary file names: its lease token as 32 hex digits."""
    return uuid.UUID(token).hex


def crash_of(exc: Exception, prefix: str, seconds: float) -> Failed:
    """An unexpected exception in the parent, as a failed outcome that is retried."""
    return Failed(FailureKind.CRASHED, f"{prefix}{describe(exc)}", seconds)


class Executor:
    """Performs the actions one worker claimed, against one database."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        registry: ActionRegistry,
        *,
        owner: str,
        clock: Callable[[], datetime],
        jitter: Callable[[], float],
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.registry = registry
        self.owner = owner
        self.clock = clock
        self.jitter = jitter
        self._heartbeats = RepeatedCondition(log)

    def perform(self, claimed: ClaimedAction, stop: threading.Event) -> ActionReport:
        """Run one claimed action out of process and record its outcome, fenced by its token."""
        handler = self.registry[claimed.key.kind]
        label = f"{claimed.key.kind} {claimed.key.target}"
        payload: dict[str, Any] = {}
        # The lease was taken (or last extended) no later than now.
        renewed = [time.monotonic()]
        try:
            with reading(self.engine) as conn:
                payload = handler.prepare(conn, claimed, self.settings)
            payload["attempt_id"] = attempt_id(claimed.token)
        except ActionError as exc:
            outcome: Outcome = failure_of(exc, "", 0.0)
        except Exception as exc:
            outcome = crash_of(exc, "preparing failed: ", 0.0)
        else:
            try:
                outcome = run_in_child(
                    handler.run,
                    payload,
                    ChildLimits(
                        timeout_seconds=handler.timeout_seconds
                        or self.settings.actions.timeout_seconds,
                        heartbeat_seconds=self.settings.lease.heartbeat_seconds,
                        env=handler.child_env(self.settings) if handler.child_env else {},
                    ),
                    renew_lease=lambda: self._renew(claimed, renewed),
                    stop=stop,
                    log_path=self._log_path(claimed),
                )
            except Exception as exc:
                outcome = crash_of(exc, "running the child process failed: ", 0.0)
        report = self._settle(claimed, payload, outcome)
        log.info(
            "%s attempt %d: %s after %.1f s%s",
            label,
            claimed.attempts,
            report.outcome,
            report.seconds,
            f": {report.message}" if report.message else "",
        )
        return report

    def reclaim_expired(self) -> int:
        """Return actions whose holder stopped heart-beating to the queue (or fail them).

        Called at the start of every pass and after every heartbeat of a running action,
        so a dead worker's claim is reclaimed within one heartbeat interval of its expiry
        even while a long pass runs.
        """
        now = self.clock()
        policy = self.settings.retry_policy
        # Most often there is none: one read, without the write lock or a transaction.
        with reading_one(self.engine) as conn:
            if not queries.any_expired_lease(conn, now=now):
                return 0
        with writing(self.engine) as conn:
            leases = queries.expired_leases(conn, now=now)
            for lease in leases:
                message = f"lease of {lease.owner} expired"
                decision = after_failure(
                    policy,
                    attempts=lease.attempts,
                    kind=FailureKind.LEASE_EXPIRED,
                    message=message,
                    jitter_draw=self.jitter(),
                )
                if queries.settle_expired(conn, lease, decision, now=now):
                    queries.record_event(
                        conn,
                        "lease_expired",
                        f"{lease.key.kind} {lease.key.target}: {message}; "
                        f"{decision_text(decision)}",
                        at=now,
                        group_id=lease.group_id,
                        action_id=lease.id,
                        actor=self.owner,
                    )
        return len(leases)

    def _log_path(self, claimed: ClaimedAction) -> Path:
        """Where the child's output goes: one file per action, appended per attempt (the
        previous attempts' output set aside once over ``retention.log_max_mb``)."""
        name = f"{claimed.key.kind}_{claimed.key.target.replace(':', '_')}.log"
        path = self.settings.paths.work / "logs" / "actions" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rotate(path, max_bytes=int(self.settings.retention.log_max_mb * 1e6), keep=1)
        return path

    def _renew(self, claimed: ClaimedAction, renewed: list[float]) -> bool:
        """Extend the lease; False when it is lost, or may be lost before the child ends.

        ``renewed`` holds the monotonic time of the last extension. A renewal that fails
        (any error) keeps the child only while the lease surely holds: past
        ``lease.seconds - heartbeat - kill grace`` without one, the child is stopped, so
        it is gone before anyone can reclaim the action and start another attempt.
        """
        try:
            with writing(self.engine) as conn:
                held = queries.heartbeat(
                    conn, claimed, now=self.clock(), lease_seconds=self.settings.lease.seconds
                )
        except Exception as exc:
            lease = self.settings.lease
            margin = lease.seconds - lease.heartbeat_seconds - KILL_GRACE_SECONDS
            silent = time.monotonic() - renewed[0]
            if silent >= margin:
                log.warning(
                    "action %d: no lease renewal for %.0f s (%s); stopping its child",
                    claimed.id,
                    silent,
                    describe(exc),
                )
                return False
            self._heartbeats.report(f"heartbeats failing: {describe(exc)}")
            return True
        self._heartbeats.clear("heartbeats succeed again")
        if held:
            renewed[0] = time.monotonic()
            self.reclaim_expired()
        return held

    def _settle(
        self, claimed: ClaimedAction, payload: dict[str, Any], outcome: Outcome
    ) -> ActionReport:
        label = f"{claimed.key.kind} {claimed.key.target}"
        now = self.clock()
        if isinstance(outcome, Succeeded):
            record = self.registry[claimed.key.kind].record
            # Without a record to write, completing is one statement on PostgreSQL.
            transaction = writing if record is not None else writing_one
            try:
                with transaction(self.engine) as conn:
                    message = f"{label} done in {outcome.seconds:.1f} s"
                    if not queries.complete(
                        conn, claimed, now=now, message=message, actor=self.owner
                    ):
                        return self._lost(claimed, label, outcome.seconds)
                    if record is not None:
                        record(conn, claimed, payload, outcome.result)
                return ActionReport(claimed.id, label, "done", outcome.seconds)
            except ActionError as exc:
                outcome = failure_of(exc, "recording the result failed: ", outcome.seconds)
            except Exception as exc:
                # The transaction rolled back; the failure is recorded in a new one, with
                # the real cause, so the attempt never ends as a silent lease expiry.
                outcome = crash_of(exc, "recording the result failed: ", outcome.seconds)
        if isinstance(outcome, LeaseLost):
            return self._lost(claimed, label, outcome.seconds)
        if isinstance(outcome, Interrupted):
            with writing(self.engine) as conn:
                queries.release(conn, claimed, now=now)
                queries.record_event(
                    conn,
                    "action_released",
                    f"{label} released: the worker is stopping",
                    at=now,
                    group_id=claimed.group_id,
                    action_id=claimed.id,
                    actor=self.owner,
                )
            return ActionReport(claimed.id, label, "released", outcome.seconds)
        assert isinstance(outcome, Failed)
        decision = after_failure(
            self.settings.retry_policy,
            attempts=claimed.attempts,
            kind=outcome.kind,
            message=outcome.message,
            jitter_draw=self.jitter(),
            requested_delay=outcome.delay_seconds,
        )
        gave_up = isinstance(decision, GiveUp)
        with writing(self.engine) as conn:
            if not queries.fail(
                conn, claimed, decision, error_kind=outcome.kind, message=outcome.message, now=now
            ):
                return self._lost(claimed, label, outcome.seconds)
            queries.record_event(
                conn,
                "action_failed" if gave_up else "action_retry",
                f"{label}: {outcome.message}; {decision_text(decision)}",
                at=now,
                group_id=claimed.group_id,
                action_id=claimed.id,
                actor=self.owner,
            )
        verdict = "failed" if gave_up else "retry"
        return ActionReport(claimed.id, label, verdict, outcome.seconds, outcome.message)

    def _lost(self, claimed: ClaimedAction, label: str, seconds: float) -> ActionReport:
        with writing(self.engine) as conn:
            queries.record_event(
                conn,
                "lease_lost",
                f"{label}: lease lost; this worker's result was discarded",
                at=self.clock(),
                group_id=claimed.group_id,
                action_id=claimed.id,
                actor=self.owner,
            )
        return ActionReport(claimed.id, label, "lease-lost", seconds)
