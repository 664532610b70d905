"""Decide never raises, whatever desired rows and observed state it is given: one bad row
must not stop the pass for every other group (a window ending 9999-12-31 once did)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.decide import decide, decide_group
from reconciler.model import (
    CalibrationState,
    DecidePolicy,
    DesiredGroup,
    GroupObserved,
    ObservationState,
    Origin,
    Phase,
)

EDGES = st.sampled_from(
    [
        datetime.min.replace(tzinfo=UTC),
        datetime(9999, 12, 31, 23, 0, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
    ]
)
#: Any moment, the edges of the calendar often.
MOMENTS = EDGES | st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
)
SPANS = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3_650_000))
SHORT = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=2))


@st.composite
def windows(draw: st.DrawFn) -> tuple[datetime | None, datetime | None]:
    """Windows of any kind, many of them short ones ending at the edge of the calendar."""
    end = draw(st.none() | MOMENTS)
    if end is not None and draw(st.booleans()):
        start = end - min(draw(SHORT), end - datetime.min.replace(tzinfo=UTC))
    else:
        start = draw(st.none() | MOMENTS)
    return start, end


@st.composite
def groups(draw: st.DrawFn, group_id: int) -> GroupObserved:
    start, end = draw(windows())
    desired = DesiredGroup(
        id=group_id,
        window_start=start,
        window_end=end,
        generation=draw(st.integers(1, 2**31 - 1)),
        paused=draw(st.booleans()),
        cancelled=draw(st.booleans()),
        origin=draw(st.sampled_from(Origin)),
        calibrator=draw(st.none() | st.text(max_size=20)),
    )
    members = tuple(
        ObservationState(
            key=f"2025-03-01T00:{i:02d}:00",
            start=start,
            end=start,
            dec_deg=draw(st.floats(-90, 90)),
            ready=draw(st.booleans()),
            problem=draw(st.none() | st.text(max_size=20)),
            converted=draw(st.booleans()),
            calibrated=draw(st.booleans()),
            imaged=draw(st.booleans()),
        )
        for i, start in enumerate(draw(st.lists(MOMENTS, max_size=4)))
    )
    calibration = draw(
        st.sampled_from(
            [
                CalibrationState(),
                CalibrationState(solved=True),
                CalibrationState(solve_target="2025-03-01T00:00:00"),
                CalibrationState(problem="no bandpass calibrator registered for dec 1.00"),
            ]
        )
    )
    return GroupObserved(
        group=desired,
        members=members,
        calibration=calibration,
        data_through=draw(st.none() | MOMENTS),
        mosaic_done=draw(st.booleans()),
        published_path=draw(st.none() | st.just("/products/mosaics/m.fits")),
    )


@settings(max_examples=400, deadline=None)
@given(
    observed=st.lists(st.integers(1, 10**6), max_size=4, unique=True).flatmap(
        lambda ids: st.tuples(*(groups(i) for i in ids))
    ),
    now=MOMENTS,
    grace=SHORT | SPANS,
    max_window=SHORT | SPANS,
    min_observations=st.integers(1, 100),
)
def test_decide_never_raises_on_extreme_but_valid_rows(
    observed, now, grace, max_window, min_observations
):
    policy = DecidePolicy(grace, min_observations, max_window)
    plan = decide(observed, now=now, policy=policy)
    assert len(plan.decisions) == len(observed)
    assert all(isinstance(d.phase, Phase) for d in plan.decisions)


def test_a_window_at_the_end_of_the_calendar_waits_for_its_data():
    end = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    group = DesiredGroup(id=1, window_start=end - timedelta(hours=1), window_end=end)
    decision = decide_group(
        GroupObserved(group=group),
        now=datetime(2026, 1, 1, tzinfo=UTC),
        policy=DecidePolicy(max_window=timedelta(hours=2)),
    )
    assert decision.phase is Phase.WAITING
