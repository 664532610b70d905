"""Property test of the whole pure loop: decide, perform a few actions, decide again.

A tiny in-memory world stands in for the database and the files: observations with the
artifacts they have, desired groups, calibration per dec strip, and the ``actions`` rows.
Each step asks :func:`decide` for the plan, performs the first few runnable actions by
changing the world, and checks the plan against the rules of the design: work drains
earliest window first, nothing finished is done again unless its product vanished, a failed
action blocks only the groups that need it, and the loop settles where it should.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.decide import DecidePolicy, decide
from reconciler.model import (
    ActionKey,
    ActionKind,
    ActionSpec,
    ActionState,
    ActionStatus,
    CalibrationState,
    DesiredGroup,
    GroupObserved,
    ObservationState,
    Phase,
    Plan,
    Quality,
    QualityVerdict,
)
from reconciler.naming import group_target, observation_key, observation_target, parse_target

T0 = datetime(2025, 3, 1, tzinfo=UTC)
SLOT = timedelta(minutes=5)
STRIPS = (30.0, 55.0)
GRACE = timedelta(minutes=30)
#: Phases in which a group wants no action.
IDLE_PHASES = {
    Phase.CANCELLED,
    Phase.INVALID,
    Phase.PUBLISHED,
    Phase.PAUSED,
    Phase.WAITING,
    Phase.BLOCKED,
    Phase.INSUFFICIENT,
    Phase.HELD,
}
OBSERVATION_KINDS = (ActionKind.CONVERT, ActionKind.SOLVE, ActionKind.APPLY, ActionKind.IMAGE)
GROUP_KINDS = (ActionKind.MOSAIC, ActionKind.CATALOGUE, ActionKind.ASSESS, ActionKind.PUBLISH)
#: The artifact flag of an observation that each observation action produces.
PRODUCT_FLAG = {
    ActionKind.CONVERT: "converted",
    ActionKind.APPLY: "calibrated",
    ActionKind.IMAGE: "imaged",
}
#: Actions whose product a test may delete behind the reconciler's back.
#: The verdict every assessment in this world reaches.
PASSED = QualityVerdict(Quality.PASSED)
REMOVABLE = (*PRODUCT_FLAG, ActionKind.MOSAIC, ActionKind.CATALOGUE, ActionKind.ASSESS)


@dataclass
class World:
    """Everything observe would read: artifacts, desired groups and action rows."""

    observations: dict[str, ObservationState]
    groups: tuple[DesiredGroup, ...]
    strips: dict[float, CalibrationState]
    data_through: datetime
    #: Actions that fail permanently whenever they run.
    doomed: frozenset[ActionKey]
    mosaics: set[int] = field(default_factory=set)
    catalogues: set[int] = field(default_factory=set)
    assessed: set[int] = field(default_factory=set)
    published: dict[int, str] = field(default_factory=dict)
    actions: dict[ActionKey, ActionStatus] = field(default_factory=dict)
    #: Finished actions whose product was deleted since they last ran.
    removed: set[ActionKey] = field(default_factory=set)
    performed: list[ActionKey] = field(default_factory=list)

    def members(self, group: DesiredGroup) -> tuple[ObservationState, ...]:
        start, end = group.window_start, group.window_end
        if start is None or end is None:
            return ()
        return tuple(o for o in self.observations.values() if start <= o.start < end)

    def observed(self) -> list[GroupObserved]:
        result = []
        for group in self.groups:
            members = self.members(group)
            calibration = self.calibration(members[0].dec_deg) if members else CalibrationState()
            result.append(
                GroupObserved(
                    group=group,
                    members=members,
                    calibration=calibration,
                    data_through=self.data_through,
                    mosaic_done=group.id in self.mosaics,
                    catalogued=group.id in self.catalogues,
                    quality=PASSED if group.id in self.assessed else None,
                    published_path=self.published.get(group.id),
                    actions=dict(self.actions),
                )
            )
        return result

    def calibration(self, dec: float) -> CalibrationState:
        """The strip's calibration, as observe sees it (the solve target's MS may exist)."""
        state = self.strips[dec]
        if state.solve_target is None:
            return state
        converted = self.observations[state.solve_target].converted
        return replace(state, solve_target_converted=converted)

    def possible_actions(self) -> list[ActionKey]:
        return sorted(
            [
                ActionKey(k, observation_target(o))
                for o in self.observations
                for k in OBSERVATION_KINDS
            ]
            + [
                ActionKey(k, group_target(g.id), g.generation)
                for g in self.groups
                for k in GROUP_KINDS
            ]
        )

    def runnable(self, plan: Plan) -> list[ActionSpec]:
        """The plan's actions a worker may claim: a failed row is never claimed again."""
        return [
            s
            for s in plan.actions
            if s.key not in self.actions or self.actions[s.key].state is not ActionState.FAILED
        ]

    def perform(self, spec: ActionSpec) -> None:
        key = spec.key
        row = self.actions.get(key)
        if row is None:
            assert spec.redo_version is None
            version = 1
        else:
            # Property (d): a finished action runs again only when its product is gone.
            assert row.state is ActionState.DONE
            assert key in self.removed, f"{key} ran twice without losing its product"
            assert spec.redo_version == row.version
            version = row.version + 1
        self.removed.discard(key)
        self.performed.append(key)
        if key in self.doomed:
            self.actions[key] = ActionStatus(
                key, ActionState.FAILED, 1, version, last_error="corrupt input"
            )
            return
        self._make_product(key)
        self.actions[key] = ActionStatus(key, ActionState.DONE, 1, version)

    def _make_product(self, key: ActionKey) -> None:
        _, name = parse_target(key.target)
        if key.kind is ActionKind.MOSAIC:
            self.mosaics.add(int(name))
        elif key.kind is ActionKind.CATALOGUE:
            self.catalogues.add(int(name))
        elif key.kind is ActionKind.ASSESS:
            self.assessed.add(int(name))
        elif key.kind is ActionKind.PUBLISH:
            self.published[int(name)] = f"mosaics/group{name}.fits"
        elif key.kind is ActionKind.SOLVE:
            self.strips[self.observations[name].dec_deg] = CalibrationState(solved=True)
        else:
            flag = PRODUCT_FLAG[key.kind]
            self.observations[name] = replace(self.observations[name], **{flag: True})

    def remove_product(self, choice: int) -> None:
        """Delete the product of one finished action (the ``choice``-th that has one)."""
        candidates = sorted(
            key
            for key, row in self.actions.items()
            if row.state is ActionState.DONE and key.kind in REMOVABLE and self._has_product(key)
        )
        if not candidates:
            return
        key = candidates[choice % len(candidates)]
        _, name = parse_target(key.target)
        if key.kind is ActionKind.MOSAIC:
            self.mosaics.discard(int(name))
        elif key.kind is ActionKind.CATALOGUE:
            self.catalogues.discard(int(name))
        elif key.kind is ActionKind.ASSESS:
            self.assessed.discard(int(name))
        else:
            flag = PRODUCT_FLAG[key.kind]
            self.observations[name] = replace(self.observations[name], **{flag: False})
        self.removed.add(key)

    def _has_product(self, key: ActionKey) -> bool:
        _, name = parse_target(key.target)
        if key.kind is ActionKind.MOSAIC:
            return int(name) in self.mosaics and int(name) not in self.published
        if key.kind is ActionKind.CATALOGUE:
            return int(name) in self.catalogues and int(name) not in self.published
        if key.kind is ActionKind.ASSESS:
            return int(name) in self.assessed and int(name) not in self.published
        return getattr(self.observations[name], PRODUCT_FLAG[key.kind])


@dataclass(frozen=True)
class Scenario:
    world: World
    policy: DecidePolicy
    start_now: datetime
    tick: timedelta
    #: (step, choice): before that step, delete the product of one finished action.
    removals: tuple[tuple[int, int], ...]


def rarely(one_in: int) -> st.SearchStrategy[bool]:
    """True about once in ``one_in`` draws (and False when shrinking)."""
    return st.sampled_from([False] * (one_in - 1) + [True])


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    slots = draw(st.lists(st.integers(0, 15), min_size=2, max_size=12, unique=True))
    strips = STRIPS[: draw(st.integers(1, 2))]
    observations = {}
    for slot in sorted(slots):
        start = T0 + slot * SLOT
        key = observation_key(start)
        ready = not draw(rarely(20))
        observations[key] = ObservationState(
            key=key,
            start=start,
            end=start + SLOT,
            dec_deg=draw(st.sampled_from(strips)),
            ready=ready,
            # Of those never ready, some are still in their grace time, some are not.
            arriving=not ready and draw(st.booleans()),
        )
    calibration = {}
    for dec in strips:
        candidates = sorted(k for k, o in observations.items() if o.dec_deg == dec and o.ready)
        mode = draw(st.sampled_from(["solved", "solve", "solve", "problem"]))
        if mode == "solved":
            calibration[dec] = CalibrationState(solved=True)
        elif mode == "solve" and candidates:
            calibration[dec] = CalibrationState(solve_target=draw(st.sampled_from(candidates)))
        else:
            calibration[dec] = CalibrationState(problem=f"no bandpass calibrator for dec {dec}")

    groups = []
    for group_id in range(1, draw(st.integers(1, 4)) + 1):
        start = T0 + draw(st.integers(0, 12)) * SLOT
        # Now and then an ill-formed window (end at or before start).
        length = (draw(st.integers(-1, 0)) if draw(rarely(10)) else draw(st.integers(1, 8))) * SLOT
        groups.append(
            DesiredGroup(
                id=group_id,
                window_start=start,
                window_end=start + length,
                paused=draw(rarely(10)),
                cancelled=draw(rarely(10)),
            )
        )

    world = World(
        observations=observations,
        groups=tuple(groups),
        strips=calibration,
        data_through=T0 + draw(st.integers(0, 24)) * SLOT,
        doomed=frozenset(),
    )
    failing = draw(st.lists(st.sampled_from(world.possible_actions()), max_size=2))
    world = replace(world, doomed=frozenset(failing))
    return Scenario(
        world=world,
        policy=DecidePolicy(arrival_grace=GRACE, min_observations=draw(st.integers(1, 3))),
        start_now=T0 + draw(st.integers(0, 30)) * SLOT,
        tick=draw(st.sampled_from([timedelta(0), SLOT])),
        removals=tuple(
            sorted(draw(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 50)), max_size=3)))
        ),
    )


def check_plan(plan: Plan, world: World) -> None:
    """Property (c) and the shape of every decision."""
    keys = [s.key for s in plan.actions]
    assert len(keys) == len(set(keys)), "an action appears twice in one plan"
    assert list(plan.actions) == sorted(
        plan.actions, key=lambda s: (s.priority, s.key.kind.rank, s.key.target)
    )

    starts = {g.id: g.window_start for g in world.groups}
    wanted_by: dict[ActionKey, set[int]] = defaultdict(set)
    for decision in plan.decisions:
        for spec in decision.wanted:
            wanted_by[spec.key].add(decision.group_id)
            assert spec.priority == starts[decision.group_id]
    assert set(wanted_by) == set(keys)
    for spec in plan.actions:
        # Earliest first: the priority is the start of the earliest window wanting it.
        assert spec.priority == min(starts[g] for g in wanted_by[spec.key])
        assert spec.group_id in wanted_by[spec.key]
        assert starts[spec.group_id] == spec.priority
        row = world.actions.get(spec.key)
        finished = row is not None and row.state is ActionState.DONE
        assert spec.redo_version == (row.version if finished else None)

    for decision in plan.decisions:
        group = world.groups[decision.group_id - 1]
        if group.cancelled:
            assert decision.phase is Phase.CANCELLED
        elif group.paused and decision.phase is not Phase.INVALID:
            assert decision.phase in {Phase.PAUSED, Phase.PUBLISHED}
        if decision.phase in IDLE_PHASES:
            assert decision.wanted == ()
            assert decision.next_action is None
        elif decision.phase is not Phase.FAILED:
            first = min(decision.wanted, key=lambda s: (s.key.kind.rank, s.key.target))
            assert decision.next_action == f"{first.key.kind} {first.key.target}"


def expected_phase(group: DesiredGroup, world: World, policy: DecidePolicy, now: datetime):
    """Where a group should settle when none of the actions it needs has failed."""
    start, end = group.window_start, group.window_end
    if group.cancelled:
        return Phase.CANCELLED
    if start is None or end is None or end <= start:
        return Phase.INVALID
    if group.id in world.published:
        return Phase.PUBLISHED
    if group.paused:
        return Phase.PAUSED
    members = world.members(group)
    arrived = world.data_through >= end or now >= end + policy.arrival_grace
    # Raw data that will never be complete leave their observation out of the mosaic.
    usable = [m for m in members if m.ready or m.converted or m.arriving]
    if not usable:
        return Phase.INSUFFICIENT if arrived else Phase.WAITING
    # Calibration is the first member's strip's; another group may have calibrated the rest.
    # A convertible member that cannot be calibrated blocks the group; one arriving waits.
    uncalibratable = world.strips[members[0].dec_deg].problem is not None and any(
        (m.ready or m.converted) and not m.calibrated for m in usable
    )
    if uncalibratable:
        return Phase.BLOCKED
    if not all(m.ready or m.converted for m in usable) or not arrived:
        return Phase.WAITING
    if len(usable) < policy.min_observations:
        return Phase.INSUFFICIENT
    return Phase.PUBLISHED


def check_settled(plan: Plan, world: World, policy: DecidePolicy, now: datetime) -> None:
    """Properties (b) and no head-of-line blocking: each group is where it should be."""
    for decision in plan.decisions:
        group = world.groups[decision.group_id - 1]
        failed = [
            s.key
            for s in decision.wanted
            if s.key in world.actions and world.actions[s.key].state is ActionState.FAILED
        ]
        if decision.phase is Phase.FAILED:
            assert failed, "a group failed without a failed action"
            assert all(key in world.doomed for key in failed)
        else:
            assert not failed
            assert decision.phase is expected_phase(group, world, policy, now), decision.reason


@settings(max_examples=500, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_the_pure_loop_converges_earliest_window_first(scenario, data):
    world, policy = copy.deepcopy(scenario.world), scenario.policy
    removals = list(scenario.removals)
    latest_deadline = max(g.window_end for g in world.groups) + policy.arrival_grace
    # Every step performs an action, loses a product or lets time pass towards the deadline.
    bound = 10 * len(world.possible_actions()) + 10 + len(removals) + 50
    now = scenario.start_now

    for step in range(bound):
        while removals and removals[0][0] <= step:
            world.remove_product(removals.pop(0)[1])
        plan = decide(world.observed(), now=now, policy=policy)
        check_plan(plan, world)
        runnable = world.runnable(plan)
        if runnable:
            for spec in runnable[: data.draw(st.integers(1, 3), label="actions this step")]:
                world.perform(spec)
        elif removals:
            world.remove_product(removals.pop(0)[1])
        elif not scenario.tick or now >= latest_deadline:
            break  # settled: neither work nor the passing of time can change anything
        now += scenario.tick
    else:
        pytest.fail(f"no convergence within {bound} steps")

    again = decide(world.observed(), now=now, policy=policy)
    assert world.runnable(again) == []
    assert again.decisions == plan.decisions
    check_settled(again, world, policy, now)
