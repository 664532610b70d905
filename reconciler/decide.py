"""The pure core: desired and observed state in, next actions and status out.

No I/O and no clock: ``now`` is an argument. Every pass calls :func:`decide` with the whole
observed state of the active groups (level-triggered), so the answer never depends on what
happened before, only on what is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from reconciler.model import (
    ActionKey,
    ActionKind,
    ActionSpec,
    ActionState,
    ActionStatus,
    DecidePolicy,
    GroupDecision,
    GroupObserved,
    ObservationState,
    Phase,
    Plan,
)
from reconciler.naming import group_target, observation_target


def decide(observed: Iterable[GroupObserved], *, now: datetime, policy: DecidePolicy) -> Plan:
    """Decide the next actions for every group and merge them into one ordered plan.

    An action wanted by several groups (an observation shared by overlapping windows)
    appears once, with the earliest window's priority.
    """
    decisions = tuple(decide_group(g, now=now, policy=policy) for g in observed)
    merged: dict[ActionKey, ActionSpec] = {}
    for decision in decisions:
        for spec in decision.wanted:
            known = merged.get(spec.key)
            if known is None or spec.priority < known.priority:
                merged[spec.key] = spec
    return Plan(decisions=decisions, actions=tuple(sorted(merged.values(), key=_sort_key)))


def clock_turns(
    observed: Iterable[GroupObserved], *, now: datetime, policy: DecidePolicy
) -> datetime | None:
    """The first moment after ``now`` at which the clock alone can change what
    :func:`decide` says of ``observed``: a window's arrival deadline passes, or a backing-off
    action's ``not_before``. None when only a change of ``observed`` can change it."""
    moments = []
    # Groups of one snapshot share one table of actions: each is read once.
    tables = {}
    for g in observed:
        tables[id(g.actions)] = g.actions
        end = g.group.window_end
        if end is not None and (g.data_through is None or g.data_through < end):
            moments.append(_arrival_deadline(end, policy))
    for actions in tables.values():
        moments.extend(
            status.not_before
            for status in actions.values()
            if status.not_before is not None and status.state is ActionState.PENDING
        )
    later = [moment for moment in moments if moment > now]
    return min(later, default=None)


def _sort_key(spec: ActionSpec) -> tuple[datetime, int, str, int]:
    return spec.sort_key


def decide_group(g: GroupObserved, *, now: datetime, policy: DecidePolicy) -> GroupDecision:
    """Decide one group's phase, the reason for it, and the actions it wants now."""
    group = g.group
    if group.cancelled:
        return GroupDecision(group.id, Phase.CANCELLED, "cancelled by request", None)
    if group.calibrator and (group.window_start is None or group.window_end is None):
        # A calibrator-centred request whose window the service fills in once a transit
        # of the calibrator has data: not malformed, just early.
        reason = (
            f"waiting for data around a transit of {group.calibrator} "
            "to centre the window on (see the group's events)"
        )
        return GroupDecision(group.id, Phase.WAITING, reason, None)
    problem = window_problem(group.window_start, group.window_end, policy.max_window)
    if problem is not None:
        return GroupDecision(group.id, Phase.INVALID, problem, None)
    if g.published_path is not None:
        return GroupDecision(group.id, Phase.PUBLISHED, f"published {g.published_path}", None)
    decision = _progress(g, now=now, policy=policy)
    if group.paused:
        return GroupDecision(group.id, Phase.PAUSED, f"paused; would be {decision.reason}", None)
    return decision


def window_problem(
    start: datetime | None, end: datetime | None, max_window: timedelta
) -> str | None:
    """Return why a window cannot be worked on, or None when it is well formed."""
    if start is None or end is None:
        return "window not set (no start or end time)"
    if end <= start:
        return (
            f"window end {end:%Y-%m-%d %H:%M:%S} is not after its start {start:%Y-%m-%d %H:%M:%S}"
        )
    if end - start > max_window:
        hours = max_window.total_seconds() / 3600
        return f"window of {(end - start).total_seconds() / 3600:.1f} h is longer than {hours:g} h"
    return None


def _progress(g: GroupObserved, *, now: datetime, policy: DecidePolicy) -> GroupDecision:
    group = g.group
    assert group.window_start is not None and group.window_end is not None
    priority = group.window_start
    arrived = (g.data_through is not None and g.data_through >= group.window_end) or (
        now >= _arrival_deadline(group.window_end, policy)
    )
    members = tuple(sorted(g.members, key=lambda m: m.start))
    # An observation whose raw data will not become complete (its grace time is over, or
    # its files vanished or broke) is left out, unless its MS exists: nothing after
    # conversion reads the raw files again.
    excluded = tuple(m for m in members if not (m.ready or m.converted or m.arriving))
    usable = tuple(m for m in members if m not in excluded)
    notes = [f"{m.key}: {m.problem or 'raw data incomplete'} (excluded)" for m in excluded]
    keys = tuple(m.key for m in excluded)

    wanted: list[ActionSpec] = []
    holds: list[_Hold] = []
    for member in usable:
        spec, hold = _member_step(member, g, priority)
        if spec is not None:
            wanted.append(spec)
        if hold is not None:
            holds.append(hold)

    if not usable:
        if arrived:
            none = (
                "no other observations in the window" if notes else "no observations in the window"
            )
            reason = "; ".join([*notes, none])
            return GroupDecision(group.id, Phase.INSUFFICIENT, reason, None, excluded=keys)
        reason = "; ".join([*notes, _arrival_reason(g, policy)])
        return GroupDecision(group.id, Phase.WAITING, reason, None, excluded=keys)

    if wanted or holds:
        decision = _in_progress(g, wanted, holds, now=now)
        return _with_notes(decision, notes, keys)

    if not arrived:
        reason = "; ".join([*notes, _arrival_reason(g, policy)])
        return GroupDecision(group.id, Phase.WAITING, reason, None, excluded=keys)
    if len(usable) < policy.min_observations:
        reason = "; ".join(
            [
                *notes,
                f"only {len(usable)} observation(s) in the window; "
                f"a mosaic needs at least {policy.min_observations}",
            ]
        )
        return GroupDecision(group.id, Phase.INSUFFICIENT, reason, None, excluded=keys)

    if not g.mosaic_done:
        kind = ActionKind.MOSAIC
    elif not g.catalogued:
        kind = ActionKind.CATALOGUE
    elif g.quality is None:
        kind = ActionKind.ASSESS
    elif g.quality.holds:
        reason = (
            f"held: quality assessment failed ({g.quality.summary}); "
            f"`reconciler publish --accept {group.id}` publishes it anyway"
        )
        return _with_notes(GroupDecision(group.id, Phase.HELD, reason, None), notes, keys)
    else:
        kind = ActionKind.PUBLISH
    key = ActionKey(kind, group_target(group.id), group.generation)
    spec = _spec(key, g, priority)
    return _with_notes(_in_progress(g, [spec], [], now=now), notes, keys)


def _with_notes(
    decision: GroupDecision, notes: list[str], excluded: tuple[str, ...]
) -> GroupDecision:
    """The decision with the excluded members named first in its reason."""
    if not notes:
        return decision
    return replace(decision, reason="; ".join([*notes, decision.reason]), excluded=excluded)


@dataclass(frozen=True)
class _Hold:
    """Why a member cannot have its next action yet. ``blocked``: no more data will help
    without someone acting (no calibration for its strip); otherwise its data are not all
    there yet."""

    reason: str
    blocked: bool = False


def _member_step(
    member: ObservationState, g: GroupObserved, priority: datetime
) -> tuple[ActionSpec | None, _Hold | None]:
    """The next action one member needs, or what holds it back."""
    if not (member.ready or member.converted):
        # Still arriving (excluded members never get here): wait for the rest of its files.
        return None, _Hold(f"{member.key}: {member.problem or 'raw data incomplete'}")
    target = observation_target(member.key)
    if not member.converted:
        return _spec(ActionKey(ActionKind.CONVERT, target), g, priority), None
    if not member.calibrated:
        calibration = g.calibration
        if calibration.solved:
            return _spec(ActionKey(ActionKind.APPLY, target), g, priority), None
        if calibration.solve_target is not None:
            # The calibrator observation may lie outside the window: convert it first.
            solve_on = observation_target(calibration.solve_target)
            kind = ActionKind.SOLVE if calibration.solve_target_converted else ActionKind.CONVERT
            return _spec(ActionKey(kind, solve_on), g, priority), None
        problem = calibration.problem or "no calibration available"
        return None, _Hold(f"{member.key}: {problem}", blocked=True)
    if not member.imaged:
        return _spec(ActionKey(ActionKind.IMAGE, target), g, priority), None
    return None, None


def _spec(key: ActionKey, g: GroupObserved, priority: datetime) -> ActionSpec:
    """An action spec; a finished action whose product vanished, or one cancelled while a
    group was paused, is asked to run again."""
    status = g.actions.get(key)
    requeue = status is not None and status.state in (ActionState.DONE, ActionState.CANCELLED)
    redo = status.version if requeue else None
    return ActionSpec(key=key, priority=priority, group_id=g.group.id, redo_version=redo)


_PHASE_OF_KIND = {
    ActionKind.CONVERT: Phase.CONVERTING,
    ActionKind.SOLVE: Phase.CALIBRATING,
    ActionKind.APPLY: Phase.CALIBRATING,
    ActionKind.IMAGE: Phase.IMAGING,
    ActionKind.MOSAIC: Phase.MOSAICKING,
    ActionKind.CATALOGUE: Phase.CATALOGUING,
    ActionKind.ASSESS: Phase.ASSESSING,
    ActionKind.PUBLISH: Phase.PUBLISHING,
}


def _in_progress(
    g: GroupObserved, wanted: list[ActionSpec], holds: list[_Hold], *, now: datetime
) -> GroupDecision:
    """Phase and reason of a group with work outstanding.

    A terminally failed action makes the group ``failed`` (its reason is the action's
    error), but the other actions stay wanted: they may serve overlapping windows. With
    nothing to do, a group is ``blocked`` when a member waits on something only a person
    (or a calibrator transit's data) can provide, else ``waiting``.
    """
    waiting = [h.reason for h in holds]
    group_id = g.group.id
    for spec in wanted:
        status = g.actions.get(spec.key)
        if status is not None and status.state is ActionState.FAILED:
            reason = f"{spec.key.kind} {spec.key.target} failed: {status.last_error or 'no reason'}"
            return GroupDecision(group_id, Phase.FAILED, reason, None, tuple(wanted))
    if not wanted:
        phase = Phase.BLOCKED if any(h.blocked for h in holds) else Phase.WAITING
        return GroupDecision(group_id, phase, "; ".join(waiting), None)
    first = min(wanted, key=lambda s: (s.key.kind.rank, s.key.target))
    phase = _PHASE_OF_KIND[first.key.kind]
    next_action = f"{first.key.kind} {first.key.target}"
    reprocessing = g.group.reprocessing_id is not None
    reason = _action_reason(first, g.actions.get(first.key), now=now, reprocessing=reprocessing)
    if waiting:
        reason = f"{reason}; waiting on {'; '.join(waiting)}"
    return GroupDecision(group_id, phase, reason, next_action, tuple(wanted))


def _action_reason(
    spec: ActionSpec, status: ActionStatus | None, *, now: datetime, reprocessing: bool
) -> str:
    label = f"{spec.key.kind} {spec.key.target}"
    if status is None:
        return f"{label} to be queued"
    if status.state is ActionState.RUNNING:
        return f"{label} running (attempt {status.attempts})"
    if status.state is ActionState.PENDING:
        if status.not_before is not None and status.not_before > now:
            return (
                f"{label} retrying after {status.not_before:%H:%M:%S} "
                f"(last error: {status.last_error})"
            )
        return f"{label} queued"
    if status.state is ActionState.DONE:
        if reprocessing:
            return f"{label} to run again: its product is missing or made under other settings"
        return f"{label} to run again: its product is missing"
    if status.state is ActionState.CANCELLED:
        return f"{label} to be queued again"
    return f"{label} {status.state}"


def _arrival_deadline(end: datetime, policy: DecidePolicy) -> datetime:
    """When a window's data are taken as complete; the end of time for a window that ends
    at the edge of the calendar (9999-12-31), which must not make decide raise."""
    try:
        return end + policy.arrival_grace
    except OverflowError:
        return datetime.max.replace(tzinfo=end.tzinfo)


def _arrival_reason(g: GroupObserved, policy: DecidePolicy) -> str:
    end = g.group.window_end
    assert end is not None
    if g.data_through is None:
        newest = "no data yet"
    else:
        newest = f"data so far end {g.data_through:%Y-%m-%d %H:%M:%S}"
    deadline = _arrival_deadline(end, policy)
    return (
        f"waiting for data up to {end:%Y-%m-%d %H:%M:%S} "
        f"({newest}; proceeds after {deadline:%Y-%m-%d %H:%M:%S})"
    )
