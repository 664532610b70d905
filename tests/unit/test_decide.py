"""Tests for reconciler.decide: the phase, reason and wanted actions of every kind of group."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.decide import DecidePolicy, clock_turns, decide, decide_group, window_problem
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
    Quality,
    QualityVerdict,
)
from reconciler.naming import group_target, observation_key, observation_target

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FIVE_MINUTES = timedelta(minutes=5)
WINDOW_END = T0 + 3 * FIVE_MINUTES
POLICY = DecidePolicy(
    arrival_grace=timedelta(minutes=30), min_observations=3, max_window=timedelta(hours=24)
)
#: Before the window's end plus the grace: late data may still come.
EARLY = WINDOW_END + timedelta(minutes=10)
#: After the window's end plus the grace: work goes ahead with what is there.
LATE = WINDOW_END + timedelta(hours=1)
SOLVED = CalibrationState(solved=True)


def key_of(i: int) -> str:
    return observation_key(T0 + i * FIVE_MINUTES)


def member(i: int, stage: str = "raw", **overrides) -> ObservationState:
    """Observation ``i`` of the window, with every artifact up to ``stage`` present."""
    stages = ("raw", "converted", "calibrated", "imaged")
    done = stages.index(stage)
    values = {
        "key": key_of(i),
        "start": T0 + i * FIVE_MINUTES,
        "end": T0 + (i + 1) * FIVE_MINUTES,
        "dec_deg": 55.0,
        "converted": done >= 1,
        "calibrated": done >= 2,
        "imaged": done >= 3,
    }
    values.update(overrides)
    return ObservationState(**values)


def members(stage: str, n: int = 3) -> tuple[ObservationState, ...]:
    return tuple(member(i, stage) for i in range(n))


def group(**overrides) -> DesiredGroup:
    values = {"id": 1, "window_start": T0, "window_end": WINDOW_END}
    values.update(overrides)
    return DesiredGroup(**values)


def observed(group_: DesiredGroup | None = None, **overrides) -> GroupObserved:
    values = {"group": group_ or group(), "calibration": SOLVED}
    values.update(overrides)
    return GroupObserved(**values)


def obs_key(kind: ActionKind, i: int) -> ActionKey:
    return ActionKey(kind, observation_target(key_of(i)))


def status(key: ActionKey, state: ActionState, **overrides) -> ActionStatus:
    values = {"key": key, "state": state, "attempts": 1, "version": 1}
    values.update(overrides)
    return ActionStatus(**values)


def with_actions(g: GroupObserved, *statuses: ActionStatus) -> GroupObserved:
    return replace(g, actions={s.key: s for s in statuses})


def wanted_keys(decision) -> list[ActionKey]:
    return [s.key for s in decision.wanted]


CONVERTS = [obs_key(ActionKind.CONVERT, i) for i in range(3)]
APPLIES = [obs_key(ActionKind.APPLY, i) for i in range(3)]
IMAGES = [obs_key(ActionKind.IMAGE, i) for i in range(3)]
SOLVE_ON_0 = obs_key(ActionKind.SOLVE, 0)
MOSAIC = ActionKey(ActionKind.MOSAIC, group_target(1), 1)
CATALOGUE = ActionKey(ActionKind.CATALOGUE, group_target(1), 1)
ASSESS = ActionKey(ActionKind.ASSESS, group_target(1), 1)
PUBLISH = ActionKey(ActionKind.PUBLISH, group_target(1), 1)
FAILED_QA = QualityVerdict(Quality.FAILED, "flux scale 0.600 is off by 40% (limit 0.2)")
NO_CALIBRATOR = "no bandpass calibrator registered for dec 55.00"

PHASE_CASES = [
    pytest.param(
        observed(group(cancelled=True), members=members("raw")),
        LATE,
        Phase.CANCELLED,
        "cancelled by request",
        [],
        id="cancelled",
    ),
    pytest.param(
        observed(group(cancelled=True, window_start=None)),
        LATE,
        Phase.CANCELLED,
        "cancelled by request",
        [],
        id="cancelled-beats-invalid",
    ),
    pytest.param(
        observed(group(window_start=None)),
        LATE,
        Phase.INVALID,
        "window not set",
        [],
        id="invalid-no-start",
    ),
    pytest.param(
        observed(group(window_end=None)),
        LATE,
        Phase.INVALID,
        "window not set",
        [],
        id="invalid-no-end",
    ),
    pytest.param(
        observed(group(window_end=T0), members=members("raw")),
        LATE,
        Phase.INVALID,
        "window end 2025-03-01 12:00:00 is not after its start 2025-03-01 12:00:00",
        [],
        id="invalid-end-equals-start",
    ),
    pytest.param(
        observed(group(window_end=T0 - FIVE_MINUTES)),
        LATE,
        Phase.INVALID,
        "is not after its start",
        [],
        id="invalid-end-before-start",
    ),
    pytest.param(
        observed(group(window_end=T0 + timedelta(hours=25)), members=members("raw")),
        LATE,
        Phase.INVALID,
        "window of 25.0 h is longer than 24 h",
        [],
        id="invalid-too-long",
    ),
    pytest.param(
        observed(members=members("raw"), published_path="/products/mosaics/m1.fits"),
        LATE,
        Phase.PUBLISHED,
        "published /products/mosaics/m1.fits",
        [],
        id="published-wants-nothing-even-with-raw-members",
    ),
    pytest.param(
        observed(group(paused=True), members=members("raw")),
        LATE,
        Phase.PAUSED,
        f"paused; would be convert {observation_target(key_of(0))} to be queued",
        [],
        id="paused-wants-nothing",
    ),
    pytest.param(
        observed(),
        EARLY,
        Phase.WAITING,
        "waiting for data up to 2025-03-01 12:15:00 (no data yet; "
        "proceeds after 2025-03-01 12:45:00)",
        [],
        id="no-members-before-grace",
    ),
    pytest.param(
        observed(data_through=T0 + FIVE_MINUTES),
        EARLY,
        Phase.WAITING,
        "data so far end 2025-03-01 12:05:00",
        [],
        id="no-members-partial-data-before-grace",
    ),
    pytest.param(
        observed(),
        LATE,
        Phase.INSUFFICIENT,
        "no observations in the window",
        [],
        id="no-members-after-grace",
    ),
    pytest.param(
        observed(data_through=WINDOW_END),
        EARLY,
        Phase.INSUFFICIENT,
        "no observations in the window",
        [],
        id="no-members-data-through-window-end",
    ),
    pytest.param(
        observed(members=(member(0, "imaged"), member(1, "raw", ready=False, arriving=True))),
        LATE,
        Phase.WAITING,
        f"{key_of(1)}: raw data incomplete",
        [],
        id="waiting-for-raw-data",
    ),
    pytest.param(
        observed(members=(member(0, "imaged"), member(1, "raw", ready=False))),
        LATE,
        Phase.INSUFFICIENT,
        f"{key_of(1)}: raw data incomplete (excluded); only 1 observation(s) in the window; "
        "a mosaic needs at least 3",
        [],
        id="raw-data-that-will-not-come-excluded-too-few-left",
    ),
    pytest.param(
        observed(
            members=(*members("imaged", 3), member(3, "raw", ready=False, problem="sb07 gone")),
        ),
        LATE,
        Phase.MOSAICKING,
        f"{key_of(3)}: sb07 gone (excluded); mosaic {group_target(1)} to be queued",
        [ActionKey(ActionKind.MOSAIC, group_target(1), 1)],
        id="raw-data-that-will-not-come-excluded-the-rest-mosaicked",
    ),
    pytest.param(
        observed(
            members=(*members("imaged", 2), member(2, "converted", ready=False)),
            calibration=SOLVED,
        ),
        LATE,
        Phase.CALIBRATING,
        f"apply {observation_target(key_of(2))} to be queued",
        [obs_key(ActionKind.APPLY, 2)],
        id="a-converted-member-needs-no-raw-data",
    ),
    pytest.param(
        observed(
            members=(member(0, "raw", ready=False, arriving=True, problem="subband 7 missing"),)
        ),
        LATE,
        Phase.WAITING,
        f"{key_of(0)}: subband 7 missing",
        [],
        id="waiting-for-raw-data-with-problem",
    ),
    pytest.param(
        observed(members=(member(0, "raw"), member(1, "raw", ready=False, arriving=True))),
        LATE,
        Phase.CONVERTING,
        f"convert {observation_target(key_of(0))} to be queued; "
        f"waiting on {key_of(1)}: raw data incomplete",
        CONVERTS[:1],
        id="converting-while-another-member-is-not-ready",
    ),
    pytest.param(
        observed(members=members("raw")),
        EARLY,
        Phase.CONVERTING,
        f"convert {observation_target(key_of(0))} to be queued",
        CONVERTS,
        id="converting-before-window-data-complete",
    ),
    pytest.param(
        observed(
            members=members("converted"),
            calibration=CalibrationState(solve_target=key_of(0), solve_target_converted=True),
        ),
        LATE,
        Phase.CALIBRATING,
        f"solve {observation_target(key_of(0))} to be queued",
        [SOLVE_ON_0] * 3,
        id="calibrating-solve",
    ),
    pytest.param(
        observed(
            members=members("converted"),
            calibration=CalibrationState(solve_target=key_of(-12)),
        ),
        LATE,
        Phase.CONVERTING,
        f"convert {observation_target(key_of(-12))} to be queued",
        [obs_key(ActionKind.CONVERT, -12)] * 3,
        id="calibrator-observation-outside-window-converted-first",
    ),
    pytest.param(
        observed(members=members("converted"), calibration=SOLVED),
        LATE,
        Phase.CALIBRATING,
        f"apply {observation_target(key_of(0))} to be queued",
        APPLIES,
        id="calibrating-apply",
    ),
    pytest.param(
        observed(
            members=members("converted"),
            calibration=CalibrationState(problem=NO_CALIBRATOR),
        ),
        LATE,
        Phase.BLOCKED,
        f"{key_of(0)}: {NO_CALIBRATOR}; {key_of(1)}: {NO_CALIBRATOR}",
        [],
        id="calibration-problem",
    ),
    pytest.param(
        observed(members=members("converted"), calibration=CalibrationState()),
        LATE,
        Phase.BLOCKED,
        f"{key_of(0)}: no calibration available",
        [],
        id="calibration-unknown",
    ),
    pytest.param(
        observed(
            members=(member(0, "converted"), member(1, "raw", ready=False, arriving=True)),
            calibration=CalibrationState(problem=NO_CALIBRATOR),
        ),
        EARLY,
        Phase.BLOCKED,
        f"{key_of(0)}: {NO_CALIBRATOR}; {key_of(1)}: raw data incomplete",
        [],
        id="blocked-outranks-waiting-for-raw-data",
    ),
    pytest.param(
        observed(
            members=(member(0, "converted"), member(1, "raw")),
            calibration=CalibrationState(solve_target=key_of(0), solve_target_converted=True),
        ),
        LATE,
        Phase.CONVERTING,
        f"convert {observation_target(key_of(1))} to be queued",
        [SOLVE_ON_0, CONVERTS[1]],
        id="convert-ranks-before-solve",
    ),
    pytest.param(
        observed(members=members("calibrated")),
        LATE,
        Phase.IMAGING,
        f"image {observation_target(key_of(0))} to be queued",
        IMAGES,
        id="imaging",
    ),
    pytest.param(
        observed(members=members("imaged")),
        LATE,
        Phase.MOSAICKING,
        "mosaic group:1 to be queued",
        [MOSAIC],
        id="mosaicking",
    ),
    pytest.param(
        observed(members=members("imaged"), data_through=WINDOW_END),
        EARLY,
        Phase.MOSAICKING,
        "mosaic group:1 to be queued",
        [MOSAIC],
        id="mosaicking-once-data-through-window-end",
    ),
    pytest.param(
        observed(members=members("imaged"), mosaic_done=True),
        LATE,
        Phase.CATALOGUING,
        "catalogue group:1 to be queued",
        [CATALOGUE],
        id="cataloguing",
    ),
    pytest.param(
        observed(members=members("imaged"), mosaic_done=True, catalogued=True),
        LATE,
        Phase.ASSESSING,
        "assess group:1 to be queued",
        [ASSESS],
        id="assessing",
    ),
    pytest.param(
        observed(
            members=members("imaged"),
            mosaic_done=True,
            catalogued=True,
            quality=QualityVerdict(Quality.PASSED),
        ),
        LATE,
        Phase.PUBLISHING,
        "publish group:1 to be queued",
        [PUBLISH],
        id="publishing",
    ),
    pytest.param(
        observed(
            members=members("imaged"),
            mosaic_done=True,
            catalogued=True,
            quality=QualityVerdict(Quality.WARNING, "dynamic range 12 (warning below 20)"),
        ),
        LATE,
        Phase.PUBLISHING,
        "publish group:1 to be queued",
        [PUBLISH],
        id="publishing-with-a-warning",
    ),
    pytest.param(
        observed(members=members("imaged"), mosaic_done=True, catalogued=True, quality=FAILED_QA),
        LATE,
        Phase.HELD,
        "held: quality assessment failed (flux scale 0.600 is off by 40% (limit 0.2)); "
        "`reconciler publish --accept 1` publishes it anyway",
        [],
        id="held-when-quality-fails",
    ),
    pytest.param(
        observed(
            members=members("imaged"),
            mosaic_done=True,
            catalogued=True,
            quality=replace(FAILED_QA, accepted=True),
        ),
        LATE,
        Phase.PUBLISHING,
        "publish group:1 to be queued",
        [PUBLISH],
        id="publishing-a-failed-mosaic-someone-accepted",
    ),
    pytest.param(
        observed(members=members("imaged", n=2)),
        LATE,
        Phase.INSUFFICIENT,
        "only 2 observation(s) in the window; a mosaic needs at least 3",
        [],
        id="fewer-than-min-observations",
    ),
    pytest.param(
        observed(members=members("imaged"), data_through=WINDOW_END - FIVE_MINUTES),
        EARLY,
        Phase.WAITING,
        "waiting for data up to 2025-03-01 12:15:00 (data so far end 2025-03-01 12:10:00; "
        "proceeds after 2025-03-01 12:45:00)",
        [],
        id="all-imaged-but-data-not-arrived",
    ),
    pytest.param(
        observed(members=members("imaged", n=2)),
        EARLY,
        Phase.WAITING,
        "waiting for data up to",
        [],
        id="too-few-but-more-may-arrive",
    ),
]


@pytest.mark.parametrize(("g", "now", "phase", "reason", "wanted"), PHASE_CASES)
def test_decide_group_phase_reason_and_wanted_actions(g, now, phase, reason, wanted):
    decision = decide_group(g, now=now, policy=POLICY)

    assert decision.group_id == g.group.id
    assert decision.phase is phase
    assert reason in decision.reason
    assert wanted_keys(decision) == wanted
    assert all(s.priority == T0 and s.group_id == 1 for s in decision.wanted)
    if wanted:
        first = min(wanted, key=lambda k: (k.kind.rank, k.target))
        assert decision.next_action == f"{first.kind} {first.target}"
    else:
        assert decision.next_action is None


def test_arrival_grace_ends_exactly_at_window_end_plus_grace():
    g = observed(members=members("imaged"))
    just_before = WINDOW_END + POLICY.arrival_grace - timedelta(seconds=1)

    assert decide_group(g, now=just_before, policy=POLICY).phase is Phase.WAITING
    at_deadline = decide_group(g, now=WINDOW_END + POLICY.arrival_grace, policy=POLICY)
    assert at_deadline.phase is Phase.MOSAICKING


def test_min_observations_comes_from_the_policy():
    g = observed(members=members("imaged", n=2))
    policy = replace(POLICY, min_observations=2)

    assert decide_group(g, now=LATE, policy=policy).phase is Phase.MOSAICKING


def test_group_actions_carry_the_group_generation():
    g = observed(group(id=7, generation=4), members=members("imaged"), mosaic_done=True)

    decision = decide_group(g, now=LATE, policy=POLICY)

    assert wanted_keys(decision) == [ActionKey(ActionKind.CATALOGUE, "group:7", 4)]
    assert decision.next_action == "catalogue group:7"


def test_paused_group_reason_tells_what_it_would_do_and_wants_nothing():
    g = with_actions(
        observed(group(paused=True), members=members("raw")),
        status(CONVERTS[0], ActionState.FAILED, last_error="bad header"),
    )

    decision = decide_group(g, now=LATE, policy=POLICY)

    assert decision.phase is Phase.PAUSED
    assert decision.reason.startswith("paused; would be ")
    assert "bad header" in decision.reason
    assert decision.wanted == ()
    assert decision.next_action is None


def test_window_problem_accepts_a_window_of_exactly_the_maximum_length():
    assert window_problem(T0, T0 + timedelta(hours=24), timedelta(hours=24)) is None
    assert window_problem(T0, T0 + timedelta(hours=24, seconds=1), timedelta(hours=24))


def test_failed_action_fails_the_group_but_other_actions_stay_wanted():
    g = with_actions(
        observed(members=members("raw")),
        status(CONVERTS[1], ActionState.FAILED, attempts=5, last_error="truncated file"),
    )

    decision = decide_group(g, now=LATE, policy=POLICY)

    assert decision.phase is Phase.FAILED
    assert decision.reason == f"convert {observation_target(key_of(1))} failed: truncated file"
    assert decision.next_action is None
    assert wanted_keys(decision) == CONVERTS
    assert all(s.redo_version is None for s in decision.wanted)


def test_failed_action_without_an_error_says_no_reason():
    g = with_actions(observed(members=members("raw")), status(CONVERTS[0], ActionState.FAILED))

    decision = decide_group(g, now=LATE, policy=POLICY)

    assert decision.reason.endswith("failed: no reason")


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        pytest.param(
            status(
                CONVERTS[0],
                ActionState.PENDING,
                not_before=LATE + timedelta(minutes=2),
                last_error="disk busy",
            ),
            "retrying after 13:17:00 (last error: disk busy)",
            id="backing-off",
        ),
        pytest.param(
            status(CONVERTS[0], ActionState.PENDING, not_before=LATE),
            "queued",
            id="backoff-over",
        ),
        pytest.param(status(CONVERTS[0], ActionState.PENDING), "queued", id="pending"),
        pytest.param(
            status(CONVERTS[0], ActionState.RUNNING, attempts=2),
            "running (attempt 2)",
            id="running",
        ),
        pytest.param(
            status(CONVERTS[0], ActionState.DONE),
            "to run again: its product is missing",
            id="done-product-missing",
        ),
        pytest.param(
            status(CONVERTS[0], ActionState.CANCELLED), "to be queued again", id="cancelled"
        ),
    ],
)
def test_reason_describes_the_first_actions_row(action, reason):
    g = with_actions(observed(members=members("raw")), action)

    decision = decide_group(g, now=LATE, policy=POLICY)

    assert decision.phase is Phase.CONVERTING
    assert decision.reason == f"convert {observation_target(key_of(0))} {reason}"


@pytest.mark.parametrize(
    ("state", "redo_version"),
    [
        (ActionState.DONE, 3),
        (ActionState.CANCELLED, 3),
        (ActionState.PENDING, None),
        (ActionState.RUNNING, None),
        (ActionState.FAILED, None),
    ],
)
def test_only_done_or_cancelled_actions_wanted_again_carry_redo_version(state, redo_version):
    g = with_actions(
        observed(members=(member(0, "calibrated"),)),
        status(IMAGES[0], state, version=3),
    )

    (spec,) = decide_group(g, now=LATE, policy=POLICY).wanted

    assert spec == ActionSpec(IMAGES[0], priority=T0, group_id=1, redo_version=redo_version)


def test_a_reprocessing_redoes_a_finished_action_saying_its_product_may_be_out_of_date():
    # Observe counts a product made under other settings as missing for such a group.
    g = with_actions(
        observed(group(reprocessing_id=7), members=(member(0, "calibrated"),)),
        status(IMAGES[0], ActionState.DONE, version=2),
    )

    decision = decide_group(g, now=LATE, policy=POLICY)

    assert decision.phase is Phase.IMAGING
    assert decision.wanted == (ActionSpec(IMAGES[0], priority=T0, group_id=1, redo_version=2),)
    assert decision.reason.endswith(
        "to run again: its product is missing or made under other settings"
    )


def test_done_mosaic_whose_product_is_missing_is_redone_with_its_version():
    g = with_actions(
        observed(members=members("imaged")), status(MOSAIC, ActionState.DONE, version=2)
    )

    decision = decide_group(g, now=LATE, policy=POLICY)

    assert decision.phase is Phase.MOSAICKING
    assert decision.wanted == (ActionSpec(MOSAIC, priority=T0, group_id=1, redo_version=2),)


def test_a_finished_action_whose_product_exists_is_not_wanted():
    g = with_actions(
        observed(members=members("imaged")),
        *(status(k, ActionState.DONE) for k in CONVERTS + APPLIES + IMAGES),
    )

    assert wanted_keys(decide_group(g, now=LATE, policy=POLICY)) == [MOSAIC]


# --- decide(): merging the groups' wants into one ordered plan -----------------------------


def overlapping_groups() -> tuple[GroupObserved, GroupObserved]:
    """Group 1 holds observations 0-2, group 2 (starting 10 minutes later) holds 2-4."""
    first = observed(group(id=1), members=tuple(member(i) for i in range(3)))
    second = observed(
        group(id=2, window_start=T0 + 2 * FIVE_MINUTES, window_end=T0 + 5 * FIVE_MINUTES),
        members=tuple(member(i) for i in range(2, 5)),
    )
    return first, second


@pytest.mark.parametrize("reverse", [False, True], ids=["earlier-first", "later-first"])
def test_shared_action_appears_once_with_the_earlier_windows_priority(reverse):
    groups = overlapping_groups()
    if reverse:
        groups = groups[::-1]

    plan = decide(groups, now=LATE, policy=POLICY)

    keys = [s.key for s in plan.actions]
    assert keys == [obs_key(ActionKind.CONVERT, i) for i in range(5)]
    by_key = {s.key: s for s in plan.actions}
    shared = by_key[obs_key(ActionKind.CONVERT, 2)]
    assert (shared.priority, shared.group_id) == (T0, 1)
    later_only = by_key[obs_key(ActionKind.CONVERT, 4)]
    assert (later_only.priority, later_only.group_id) == (T0 + 2 * FIVE_MINUTES, 2)
    assert [d.group_id for d in plan.decisions] == [g.group.id for g in groups]


def test_paused_earlier_group_does_not_lend_its_priority():
    first, second = overlapping_groups()
    first = replace(first, group=replace(first.group, paused=True))

    plan = decide([first, second], now=LATE, policy=POLICY)

    assert [s.key for s in plan.actions] == [obs_key(ActionKind.CONVERT, i) for i in (2, 3, 4)]
    assert {s.priority for s in plan.actions} == {T0 + 2 * FIVE_MINUTES}


def test_plan_is_ordered_by_priority_then_pipeline_rank_then_target():
    early = observed(
        group(id=1),
        members=(member(0, "calibrated"), member(1, "raw"), member(2, "converted")),
    )
    late_start = T0 + timedelta(hours=1)
    late = observed(
        group(id=2, window_start=late_start, window_end=late_start + 3 * FIVE_MINUTES),
        members=tuple(replace(member(12 + i, "imaged"), dec_deg=30.0) for i in range(3)),
    )

    plan = decide([late, early], now=late_start + timedelta(hours=2), policy=POLICY)

    assert [(s.priority, s.key) for s in plan.actions] == [
        (T0, obs_key(ActionKind.CONVERT, 1)),
        (T0, obs_key(ActionKind.APPLY, 2)),
        (T0, obs_key(ActionKind.IMAGE, 0)),
        (late_start, ActionKey(ActionKind.MOSAIC, "group:2", 1)),
    ]


def test_decide_of_no_groups_is_an_empty_plan():
    plan = decide([], now=LATE, policy=POLICY)

    assert plan.decisions == ()
    assert plan.actions == ()


CLOCK_CASES = {
    "waiting for the window's data": observed(members=members("imaged", 2)),
    "backing off": with_actions(
        observed(members=(member(0, "raw", ready=True),)),
        status(CONVERTS[0], ActionState.PENDING, not_before=EARLY + timedelta(minutes=7)),
    ),
    "backing off while waiting": with_actions(
        observed(members=(member(0, "raw", ready=True), member(1, "imaged"))),
        status(CONVERTS[0], ActionState.PENDING, not_before=EARLY + timedelta(hours=2)),
    ),
    "all data in": observed(members=members("imaged"), data_through=WINDOW_END),
}


@pytest.mark.parametrize("g", CLOCK_CASES.values(), ids=CLOCK_CASES.keys())
def test_decide_says_the_same_until_the_clock_turns(g):
    """What the settled world relies on: until ``clock_turns``, decide's answer holds."""
    turns = clock_turns([g], now=EARLY, policy=POLICY)
    before = decide([g], now=EARLY, policy=POLICY)
    if turns is None:
        moments = [EARLY + timedelta(days=d) for d in (1, 30, 3650)]
    else:
        assert turns > EARLY
        step = (turns - EARLY) / 7
        moments = [EARLY + i * step for i in range(1, 7)] + [turns - timedelta(microseconds=1)]
    for moment in moments:
        assert decide([g], now=moment, policy=POLICY) == before, moment


def test_the_clock_turns_at_the_first_deadline_or_backoff_end():
    backoff = EARLY + timedelta(minutes=7)
    g = with_actions(
        observed(members=(member(0, "raw", ready=True),)),
        status(CONVERTS[0], ActionState.PENDING, not_before=backoff),
        status(CONVERTS[1], ActionState.RUNNING, not_before=EARLY + timedelta(minutes=1)),
    )
    assert clock_turns([g], now=EARLY, policy=POLICY) == backoff
    reasons = [decide([g], now=t, policy=POLICY).decisions[0].reason for t in (EARLY, backoff)]
    assert "retrying after" in reasons[0] and reasons[1].endswith("queued")
    # With a later backoff, the arrival deadline (the window's end plus the grace) is first.
    later = with_actions(g, status(CONVERTS[0], ActionState.PENDING, not_before=LATE))
    assert clock_turns([later], now=EARLY, policy=POLICY) == WINDOW_END + POLICY.arrival_grace
    assert clock_turns([], now=EARLY, policy=POLICY) is None
