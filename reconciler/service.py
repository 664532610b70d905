"""The reconcile pass: what one worker does each time the service runs.

A pass: settle expired leases → observe → decide → enqueue what is missing and write each
group's status → claim and perform actions (earliest window first) → repeat until nothing
is runnable or the pass's caps (actions, seconds) are reached.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, update
from sqlalchemy.exc import DBAPIError

from reconciler.conditions import RepeatedCondition
from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.changes import racy_seconds, world_changes
from reconciler.db.engine import reading, reading_one, refresh_statistics, writing
from reconciler.db.models import MosaicGroup, MosaicGroupMember
from reconciler.decide import clock_turns, decide
from reconciler.desired import WantReport, want
from reconciler.discover import DiscoveryReport, discover
from reconciler.engine.claims import Claims
from reconciler.engine.debris import remove_debris
from reconciler.engine.execute import ActionReport, Executor
from reconciler.engine.registry import ActionRegistry
from reconciler.engine.runner import remove_orphaned_scratch
from reconciler.errors import describe
from reconciler.io.watch import ChangeHints, IncomingWatcher
from reconciler.model import ClaimedAction, GroupDecision, Phase, Plan
from reconciler.observations import DiscoveryPolicy
from reconciler.observe import ObservedGroup, Snapshot, observe, observe_in
from reconciler.retention import Retention, remove_published_staging
from reconciler.settled import SettledWorld
from reconciler.sky import TransitFinder, transit_finder
from reconciler.verify import VerifyReport, verify_published

log = logging.getLogger("reconciler")

#: How long an idle worker waits for its busy peers to unlock more work.
_IDLE_WAIT_SECONDS = 0.2
#: How often a service refreshes SQLite's planner statistics as the tables grow.
_STATISTICS_EVERY_SECONDS = 3600.0


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


def worker_name() -> str:
    """A name for this worker that is unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class PassReport:
    """What one pass did."""

    started: datetime
    seconds: float = 0.0
    reconciles: int = 0
    enqueued: int = 0
    reclaimed: int = 0
    discovery: DiscoveryReport | None = None
    wanting: WantReport | None = None
    verification: VerifyReport | None = None
    staging_removed: int = 0
    intermediates_removed: int = 0
    actions: list[ActionReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when any action attempt in this pass failed."""
        return any(a.failed for a in self.actions)


class Reconciler:
    """Performs passes for one worker against one database.

    ``clock``, ``jitter`` and ``transits`` are injectable so tests control time and
    randomness; in production they are the wall clock, ``random.random`` and the transits
    at the configured site.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        registry: ActionRegistry,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        jitter: Callable[[], float] = random.random,
        transits: TransitFinder | None = None,
        discover_files: bool = True,
    ) -> None:
        self.engine = engine
        self.discover_files = discover_files
        self.settings = settings
        self.registry = registry
        self.owner = owner or worker_name()
        self.clock = clock
        self.jitter = jitter
        self.transits = transits if transits is not None else transit_finder(settings.site)
        self.executor = Executor(
            engine, settings, registry, owner=self.owner, clock=clock, jitter=jitter
        )
        self._report_lock = threading.Lock()
        self._local = threading.local()
        self._trouble = RepeatedCondition(log)
        #: Leftovers of dead attempts may exist: at start, and after a reclaim or a failure.
        self._leftovers_possible = True
        self._statistics_at: float | None = None
        self._retention = Retention()
        self._settled = SettledWorld(60 * settings.passes.resync_minutes)
        #: The kernel's file events on the incoming tree, once :meth:`watch_incoming` is called.
        self.watcher: IncomingWatcher | None = None

    # --- reading -------------------------------------------------------------------------

    def snapshot(self, group_ids: list[int] | None = None) -> Snapshot:
        """Observe the active groups (or the given ones) without changing anything."""
        return observe(
            self.engine,
            self.registry,
            self.settings,
            now=self.clock(),
            group_ids=group_ids,
            transits=self.transits,
        )

    def plan(self, group_ids: list[int] | None = None) -> tuple[Snapshot, Plan]:
        """What the next pass would decide, and the snapshot it decided on; read-only."""
        snapshot = self.snapshot(group_ids)
        plan = decide(snapshot.observed, now=snapshot.at, policy=self.settings.decide_policy)
        return snapshot, plan

    # --- the pass ------------------------------------------------------------------------

    def run_pass(self, stop: threading.Event | None = None) -> PassReport:
        """One pass: reconcile and perform actions until idle, stopped, or out of budget.

        Each worker reconciles again before every claim, so the stage an action unlocks
        competes at once, by window start, with the rest: the earliest window fills first.
        """
        stop = stop or threading.Event()
        started_clock = time.monotonic()
        report = PassReport(started=self.clock())
        budget = _Budget(
            self.settings.passes.max_actions, started_clock + self.settings.passes.max_seconds
        )
        report.reclaimed = self.reclaim_expired()
        if report.reclaimed or self._leftovers_possible:
            self._remove_leftovers()
        if self.discover_files:
            report.discovery = self.discover()
            self._wake_for_new_data(report.discovery)
        report.wanting = self.want()
        report.verification = verify_published(
            self.engine, self.settings, now=self.clock(), actor=self.owner
        )
        report.staging_removed = remove_published_staging(
            self.engine, self.settings, now=self.clock()
        )
        report.intermediates_removed = self.retain()
        workers = self.settings.passes.workers
        if workers == 1:
            self._work(stop, budget, report)
        else:
            threads = [
                threading.Thread(target=self._work, args=(stop, budget, report), name=f"worker-{i}")
                for i in range(workers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if not report.reconciles:
            self._count_reconcile(report, self.reconcile())
        self._refresh_statistics()
        if not report.errors:
            self._trouble.clear("passes run cleanly again")
        report.seconds = time.monotonic() - started_clock
        return report

    def _refresh_statistics(self) -> None:
        """After the first pass, then hourly: the tables grow from empty to millions of
        rows, and the planner's choices should follow."""
        now = time.monotonic()
        if self._statistics_at is None or now - self._statistics_at >= _STATISTICS_EVERY_SECONDS:
            self._statistics_at = now
            refresh_statistics(self.engine)

    def _remove_leftovers(self) -> None:
        """Once per process, whenever a lease was reclaimed (its holder may have died) and
        after an attempt failed: delete what dead attempts left behind, the scratch
        directories of dead services on this host and the attempt-private names under the
        work and products roots."""
        self._leftovers_possible = False
        for path in remove_orphaned_scratch():
            log.info("removed %s, left behind by a service that is gone", path)
        roots = (self.settings.paths.work, self.settings.paths.products)
        for path in remove_debris(self.engine, roots, now=self.clock()):
            log.info("removed %s, left behind by an attempt that is gone", path)

    def discover(self) -> DiscoveryReport:
        """Read new or changed raw files and (re)group them into observations."""
        d = self.settings.discovery
        policy = DiscoveryPolicy(
            grace=timedelta(minutes=d.grace_minutes),
            min_subbands=d.min_subbands,
            expected_subbands=d.expected_subbands,
        )
        hints = self.watcher.drain() if self.watcher is not None else ChangeHints()
        try:
            found = discover(
                self.engine,
                self.settings.paths.incoming,
                now=self.clock(),
                policy=policy,
                scan=d.scan,
                hints=hints,
            )
        except BaseException:
            if self.watcher is not None:
                self.watcher.put_back(hints)
            raise
        for path, error in found.errors.items():
            log.warning("raw file %s skipped: %s", path, error)
        return found

    def retain(self, *, force: bool = False) -> int:
        """Give back disk: remove the intermediates no window needs any more (every
        ``retention.LOOK_EVERY``, or now with ``force``); returns how many were removed."""
        return self._retention.run(self.engine, self.settings, now=self.clock(), force=force)

    def watch_incoming(self) -> None:
        """Receive the kernel's file events on the incoming tree from now on (when
        ``discovery.watch``): touched directories are looked at by the next pass."""
        if self.settings.discovery.watch and self.watcher is None:
            self.watcher = IncomingWatcher(self.settings.paths.incoming)

    def stop_watching(self) -> None:
        """Stop receiving file events."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()

    def _wake_for_new_data(self, found: DiscoveryReport) -> None:
        """Parked groups whose window got new or changed observations are observed again:
        the data may be what they lacked."""
        keys = found.observations_created + found.observations_updated
        if not keys:
            return
        with writing(self.engine) as conn:
            around = queries.groups_around(
                conn, keys, max_window=self.settings.decide_policy.max_window
            )
            woken = queries.wake(conn, around)
        if woken:
            log.info("new data in the windows of parked group(s) %s: looking again", woken)

    def want(self) -> WantReport:
        """Desired state the service derives itself: calibrator-only rows get their window,
        the default tiling its next windows (if ``tiling.enabled``), and late data a note."""
        return want(
            self.engine, self.settings, transits=self.transits, now=self.clock(), actor=self.owner
        )

    def reconcile(self, *, full: bool = False) -> int:
        """Observe, decide, and write back: new actions and group statuses. Returns #queued.

        Skipped while the world is as the last look found it settled (:mod:`reconciler.
        settled`), unless ``full``.
        """
        now = self.clock()
        started = self._settled.monotonic()
        if not full:
            with reading_one(self.engine) as conn:
                if self._settled.holds(world_changes(conn), now, read_at=started):
                    return 0
        with reading(self.engine) as conn:
            # Read again first, in the look's own snapshot: the look sees every change
            # counted (a change since the read above leaves the world unsettled).
            counter = world_changes(conn)
            racy = racy_seconds(conn)
            snapshot = observe_in(
                conn,
                self.registry,
                self.settings,
                now=now,
                transits=self.transits,
            )
        policy = self.settings.decide_policy
        plan = decide(snapshot.observed, now=now, policy=policy)
        queued, wrote = self._write_back(snapshot, plan)
        turns = [
            t
            for t in (snapshot.turns_at, clock_turns(snapshot.observed, now=now, policy=policy))
            if t is not None
        ]
        self._settled.looked(
            counter,
            started=started,
            racy_seconds=racy,
            wrote=wrote,
            turns_at=min(turns, default=None),
        )
        return queued

    def apply(self, snapshot: Snapshot, plan: Plan) -> int:
        """Enqueue the plan's new actions and write changed statuses, in one transaction."""
        return self._write_back(snapshot, plan)[0]

    def _write_back(self, snapshot: Snapshot, plan: Plan) -> tuple[int, bool]:
        """:meth:`apply`; returns how many actions were queued and whether anything was
        written."""
        now = snapshot.at
        new = [s for s in plan.actions if s.key not in snapshot.known_actions]
        redo = [s for s in plan.actions if s.redo_version is not None]
        groups = {g.observed.group.id: g for g in snapshot.groups}
        changed = [
            d
            for d in plan.decisions
            if _status_changed(groups[d.group_id], d) or _membership_changed(groups[d.group_id], d)
        ]
        if not (new or redo or changed):
            return 0, False
        with writing(self.engine) as conn:
            queued = queries.enqueue(conn, new, now=now)
            for spec in redo:
                if queries.requeue(conn, spec, now=now):
                    queries.record_event(
                        conn,
                        "action_requeued",
                        f"{spec.key.kind} {spec.key.target}: queued again",
                        at=now,
                        group_id=spec.group_id,
                        actor=self.owner,
                    )
            for decision in changed:
                _write_status(conn, groups[decision.group_id], decision, now, self.owner)
        return queued, True

    def reclaim_expired(self) -> int:
        """Return actions whose holder stopped heart-beating to the queue (or fail them)."""
        return self.executor.reclaim_expired()

    def _work(self, stop: threading.Event, budget: _Budget, report: PassReport) -> None:
        """One worker's loop: reconcile, claim, perform; wait while others may unlock work.
        Actions of a batch this worker holds and has not started go back when it stops."""
        claims = self._claims()
        try:
            self._work_on(claims, stop, budget, report)
        finally:
            try:
                claims.release()
            except Exception as exc:
                # Their leases run out and the next pass reclaims them.
                self._note_pass_error(report, "giving back unstarted actions", exc)

    def _work_on(
        self, claims: Claims, stop: threading.Event, budget: _Budget, report: PassReport
    ) -> None:
        while not stop.is_set() and budget.take():
            try:
                # The next action of a batch held needs no new decision: it was runnable
                # and earliest when the batch was claimed, a moment ago.
                if not claims.holding:
                    self._count_reconcile(report, self.reconcile())
                claimed = self.claim_next()
            except Exception as exc:
                # The slot goes back whatever failed, so the other workers see the truth;
                # this worker's part of the pass ends and the next pass starts afresh.
                budget.give_back()
                self._note_pass_error(report, "reconcile or claim", exc)
                return
            if claimed is None:
                budget.give_back()
                if not budget.others_busy():
                    return
                stop.wait(_IDLE_WAIT_SECONDS)
                continue
            try:
                result = self.perform(claimed, stop)
            except Exception as exc:
                # Not even the failure could be recorded (the database is away): the lease
                # runs out and the action is reclaimed; this worker's part of the pass ends.
                self._note_pass_error(report, f"action {claimed.id}", exc)
                return
            finally:
                budget.finished()
            claims.performed(result.seconds)
            with self._report_lock:
                report.actions.append(result)
            if result.outcome != "done":
                self._leftovers_possible = True

    def _note_pass_error(self, report: PassReport, where: str, exc: Exception) -> None:
        """One log line for a failure outside any action (the database, most often)."""
        message = f"{where} failed: {describe(exc)}"
        with self._report_lock:
            report.errors.append(message)
        # A database that is away fails every pass the same way: one line while it lasts.
        self._trouble.report(message, traceback=not isinstance(exc, DBAPIError))

    def _count_reconcile(self, report: PassReport, queued: int) -> None:
        with self._report_lock:
            report.reconciles += 1
            report.enqueued += queued

    def claim_next(self) -> ClaimedAction | None:
        """Lease the earliest runnable action this worker can perform, if any: the next of
        a batch this worker thread holds, else a new claim (a batch only when many short
        actions wait: :mod:`reconciler.engine.claims`)."""
        return self._claims().next()

    def _claims(self) -> Claims:
        """This worker thread's claims (each thread of a pass is one worker)."""
        claims = getattr(self._local, "claims", None)
        if claims is None:
            claims = self._local.claims = Claims(
                self.engine,
                owner=self.owner,
                kinds=self.registry.kinds,
                lease_seconds=self.settings.lease.seconds,
                batch=self.settings.passes.claim_batch,
                clock=self.clock,
            )
        return claims

    def perform(self, claimed: ClaimedAction, stop: threading.Event) -> ActionReport:
        """Run one claimed action out of process and record its outcome, fenced by its token."""
        return self.executor.perform(claimed, stop)


class _Budget:
    """Caps shared by the worker threads of one pass (actions started, wall time), and the
    count of actions in flight, so an idle worker knows whether more work may appear."""

    def __init__(self, max_actions: int, deadline: float) -> None:
        self._left = max_actions
        self._deadline = deadline
        self._busy = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0 or time.monotonic() >= self._deadline:
                return False
            self._left -= 1
            self._busy += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._left += 1
            self._busy -= 1

    def finished(self) -> None:
        with self._lock:
            self._busy -= 1

    def others_busy(self) -> bool:
        with self._lock:
            return self._busy > 0


def _status_changed(group: ObservedGroup, decision: GroupDecision) -> bool:
    return (
        group.stored_phase,
        group.stored_reason,
        group.stored_next_action,
        group.stored_parked,
    ) != (str(decision.phase), decision.reason, decision.next_action, decision.phase.parks)


def _members_of(group: ObservedGroup, decision: GroupDecision) -> tuple[int, ...]:
    """The ids of the observations the mosaic is made of: those decide did not exclude."""
    excluded = set(decision.excluded)
    return tuple(
        oid
        for oid, member in zip(group.member_ids, group.observed.members, strict=True)
        if member.key not in excluded
    )


def _membership_changed(group: ObservedGroup, decision: GroupDecision) -> bool:
    frozen = group.observed.mosaic_done or group.observed.published_path is not None
    dec_unset = group.stored_dec_deg is None and bool(group.observed.members)
    members = set(_members_of(group, decision))
    return dec_unset or (not frozen and members != group.recorded_member_ids)


def _write_status(
    conn: Connection, group: ObservedGroup, decision: GroupDecision, now: datetime, actor: str
) -> None:
    """Write one group's status columns and membership; log a phase change as an event."""
    group_id = decision.group_id
    values: dict[str, object] = {
        "phase": str(decision.phase),
        "status_reason": decision.reason,
        "next_action": decision.next_action,
        "status_updated_at": now,
        "parked": decision.phase.parks,
    }
    if decision.phase is Phase.PUBLISHED:
        values["published_path"] = group.observed.published_path
    if group.stored_dec_deg is None and group.observed.members:
        values["dec_deg"] = group.observed.members[0].dec_deg
    conn.execute(update(MosaicGroup).where(MosaicGroup.id == group_id).values(**values))
    if _membership_changed(group, decision) and not group.observed.mosaic_done:
        members = _members_of(group, decision)
        conn.execute(
            delete(MosaicGroupMember).where(
                MosaicGroupMember.group_id == group_id, MosaicGroupMember.role == "member"
            )
        )
        if members:
            conn.execute(
                MosaicGroupMember.__table__.insert(),
                [
                    {"group_id": group_id, "observation_id": oid, "position": i, "role": "member"}
                    for i, oid in enumerate(members)
                ],
            )
    if group.stored_phase != str(decision.phase):
        queries.record_event(
            conn,
            "phase",
            f"{group.stored_phase} → {decision.phase}: {decision.reason}",
            at=now,
            group_id=group_id,
            actor=actor,
        )
