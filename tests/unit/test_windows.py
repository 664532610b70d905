"""Tests for reconciler.windows: default tiling and calibrator-centred windows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.windows import (
    ObservationSpan,
    Tiling,
    Window,
    WindowRefusal,
    WindowState,
    centred_window,
    contiguous_runs,
    tile_windows,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)
MAX_GAP = timedelta(minutes=6)
DEC_TOL = 0.5


def series(count: int, *, start: datetime = T0, dec: float = 55.0, prefix: str = "o"):
    """`count` back-to-back 5-minute observations."""
    return [
        ObservationSpan(f"{prefix}{i:03d}", start + i * FIVE_MIN, start + (i + 1) * FIVE_MIN, dec)
        for i in range(count)
    ]


def tile(observations, **kwargs) -> Tiling:
    kwargs.setdefault("max_gap", MAX_GAP)
    kwargs.setdefault("dec_tolerance_deg", DEC_TOL)
    return tile_windows(observations, **kwargs)


def keys(observations) -> tuple[str, ...]:
    return tuple(o.key for o in observations)


# --- examples -----------------------------------------------------------------------------


def test_a_closed_run_of_25_ends_with_an_asymmetric_window():
    obs = series(25)
    result = tile(obs, closed_before=obs[-1].end + timedelta(hours=1))
    assert [w.members for w in result.windows] == [
        keys(obs[0:10]),
        keys(obs[8:18]),
        keys(obs[16:25]),
    ]
    assert [w.state for w in result.windows] == [
        WindowState.COMPLETE,
        WindowState.COMPLETE,
        WindowState.SHORT,
    ]
    assert result.too_short == ()
    last = result.windows[-1]
    assert (last.start, last.end, last.dec_deg) == (obs[16].start, obs[24].end, 55.0)


def test_an_open_run_waits_for_data_instead_of_closing_short():
    obs = series(25)
    result = tile(obs)
    assert result.windows[-1].state is WindowState.OPEN
    assert result.windows[-1].members == keys(obs[16:25])
    # closed_before too close to the last observation: the next one could still come.
    assert tile(obs, closed_before=obs[-1].end + MAX_GAP).windows[-1].state is WindowState.OPEN


def test_a_run_whose_tail_is_already_covered_makes_no_extra_window():
    # 26 = 10 + 8 + 8: the would-be fourth window holds only the last two, already in the third.
    obs = series(26)
    result = tile(obs, closed_before=obs[-1].end + timedelta(hours=1))
    assert [len(w.members) for w in result.windows] == [10, 10, 10]
    assert all(w.state is WindowState.COMPLETE for w in result.windows)


def test_one_observation_past_a_full_window_gives_a_minimum_window():
    obs = series(11)
    result = tile(obs, closed_before=obs[-1].end + timedelta(hours=1))
    assert [w.members for w in result.windows] == [keys(obs[0:10]), keys(obs[8:11])]
    assert result.windows[-1].state is WindowState.SHORT


def test_a_too_short_run_is_reported_not_dropped():
    short_run = series(2, prefix="a")
    later = series(12, start=T0 + timedelta(hours=2), prefix="b")
    result = tile(short_run + later)
    assert result.too_short == (Window.of(short_run, WindowState.TOO_SHORT),)
    assert result.windows[0].members == keys(later[0:10])


def test_a_short_run_still_open_is_waiting_not_too_short():
    result = tile(series(2))
    assert result.too_short == ()
    assert [w.state for w in result.windows] == [WindowState.OPEN]


def test_a_gap_longer_than_max_gap_splits_the_run_and_closes_it():
    first = series(5, prefix="a")
    exactly = series(5, start=first[-1].end + MAX_GAP, prefix="b")
    assert len(contiguous_runs(first + exactly, max_gap=MAX_GAP, dec_tolerance_deg=DEC_TOL)) == 1
    beyond = series(5, start=first[-1].end + MAX_GAP + timedelta(seconds=1), prefix="c")
    result = tile(first + beyond)
    assert [w.members for w in result.windows] == [keys(first), keys(beyond)]
    assert [w.state for w in result.windows] == [WindowState.SHORT, WindowState.OPEN]


def test_a_dec_change_without_a_time_gap_splits_the_run():
    first = series(6, dec=55.0, prefix="a")
    second = series(6, start=first[-1].end, dec=30.0, prefix="b")
    result = tile(first + second)
    assert [(w.members, w.dec_deg) for w in result.windows] == [
        (keys(first), 55.0),
        (keys(second), 30.0),
    ]


def test_small_dec_jitter_stays_in_one_run():
    obs = [
        ObservationSpan(o.key, o.start, o.end, 55.0 + (0.01 if i % 2 else -0.01))
        for i, o in enumerate(series(12))
    ]
    assert len(contiguous_runs(obs, max_gap=MAX_GAP, dec_tolerance_deg=DEC_TOL)) == 1


def test_duplicate_keys_and_bad_parameters_are_refused():
    obs = series(3)
    with pytest.raises(ValueError, match="appears twice"):
        tile([*obs, obs[0]])
    with pytest.raises(ValueError, match="stride"):
        tile(obs, stride=11)
    with pytest.raises(ValueError, match="min_size"):
        tile(obs, min_size=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        ObservationSpan("x", datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 5), 55.0)
    with pytest.raises(ValueError, match="not after"):
        ObservationSpan("x", T0, T0, 55.0)


# --- properties ---------------------------------------------------------------------------


@st.composite
def observation_sets(draw):
    """Runs of 5-minute observations with occasional gaps, dec changes and jitter."""
    count = draw(st.integers(min_value=0, max_value=45))
    labels = draw(st.permutations(range(count)))  # keys deliberately not in time order
    observations = []
    start, dec = T0, 55.0
    for i in range(count):
        kind = draw(st.sampled_from(["next"] * 6 + ["jitter", "gap", "dec"]))
        if kind == "jitter":
            start += timedelta(seconds=draw(st.integers(-30, 60)))
        elif kind == "gap":
            start += draw(
                st.sampled_from([timedelta(minutes=6), timedelta(minutes=7), timedelta(hours=3)])
            )
        elif kind == "dec":
            dec = draw(st.sampled_from([20.0, 55.0, 71.5]))
        observations.append(ObservationSpan(f"k{labels[i]:03d}", start, start + FIVE_MIN, dec))
        start += FIVE_MIN
    return observations


def all_windows(result: Tiling) -> list[Window]:
    return sorted(result.windows + result.too_short, key=lambda w: w.start)


@settings(max_examples=100, deadline=None)
@given(observation_sets(), st.randoms(use_true_random=False), st.booleans())
def test_tiling_does_not_depend_on_input_order(observations, rng, closed):
    closed_before = T0 + timedelta(days=2) if closed else None
    shuffled = list(observations)
    rng.shuffle(shuffled)
    assert tile(shuffled, closed_before=closed_before) == tile(
        observations, closed_before=closed_before
    )


@settings(max_examples=100, deadline=None)
@given(observation_sets(), st.booleans())
def test_every_observation_is_in_a_window_and_no_window_repeats(observations, closed):
    result = tile(observations, closed_before=T0 + timedelta(days=2) if closed else None)
    windows = all_windows(result)
    covered = {key for w in windows for key in w.members}
    assert covered == set(keys(observations))
    assert len({w.members for w in windows}) == len(windows)
    assert len({w.start for w in windows}) == len(windows)
    if closed:
        assert all(w.state is not WindowState.OPEN for w in windows)


@settings(max_examples=100, deadline=None)
@given(observation_sets())
def test_consecutive_windows_of_a_run_share_exactly_two(observations):
    runs = contiguous_runs(observations, max_gap=MAX_GAP, dec_tolerance_deg=DEC_TOL)
    windows = all_windows(tile(observations))
    for run in runs:
        run_keys = set(keys(run))
        in_run = [w for w in windows if set(w.members) <= run_keys]
        assert {k for w in in_run for k in w.members} == run_keys  # no window straddles runs
        for before, after in itertools.pairwise(in_run):
            assert len(set(before.members) & set(after.members)) == 2
            assert before.members[-2:] == after.members[:2]


@settings(max_examples=100, deadline=None)
@given(observation_sets())
def test_windows_never_span_a_gap_or_a_dec_change(observations):
    by_key = {o.key: o for o in observations}
    for window in all_windows(tile(observations)):
        members = [by_key[k] for k in window.members]
        assert len(members) <= 10
        for position in range(1, len(members)):
            latest_end = max(m.end for m in members[:position])
            assert members[position].start - latest_end <= MAX_GAP
        assert all(abs(m.dec_deg - members[0].dec_deg) <= DEC_TOL for m in members)


@settings(max_examples=100, deadline=None)
@given(observation_sets(), st.integers(min_value=0, max_value=45))
def test_settled_windows_never_change_when_later_data_arrive(observations, cut):
    ordered = sorted(observations, key=lambda o: (o.start, o.key))
    if cut >= len(ordered):
        return
    horizon = ordered[cut].start
    known = [o for o in ordered if o.start < horizon]
    early = tile(known, closed_before=horizon)
    final = tile(ordered, closed_before=T0 + timedelta(days=2))
    settled = [w for w in all_windows(early) if w.state is not WindowState.OPEN]
    assert set(settled) <= set(all_windows(final))


# --- calibrator-centred windows -----------------------------------------------------------


TRANSIT = T0 + timedelta(minutes=62, seconds=30)  # inside o012
SPAN = timedelta(minutes=50)


def test_centred_window_with_full_data_is_complete():
    obs = series(30)
    window = centred_window(TRANSIT, SPAN, obs, dec_deg=55.0, dec_tolerance_deg=DEC_TOL)
    assert isinstance(window, Window)
    assert window.state is WindowState.COMPLETE
    # [37.5 min, 87.5 min) overlaps observations 7..17.
    assert window.members == keys(obs[7:18])


def test_centred_window_is_half_open():
    obs = series(30)
    window = centred_window(
        T0 + timedelta(minutes=50),
        timedelta(minutes=20),
        obs,
        dec_deg=55.0,
        dec_tolerance_deg=DEC_TOL,
    )
    # [40, 60) min: o008..o011; o007 ends at 40 and o012 starts at 60.
    assert window.members == keys(obs[8:12])


def test_centred_window_where_data_start_late_is_asymmetric():
    obs = series(30)[10:]  # data begin at 50 min, after the window opens at 37.5 min
    open_window = centred_window(TRANSIT, SPAN, obs, dec_deg=55.0, dec_tolerance_deg=DEC_TOL)
    assert open_window.state is WindowState.OPEN
    closed = centred_window(
        TRANSIT, SPAN, obs, dec_deg=55.0, dec_tolerance_deg=DEC_TOL, closed_before=TRANSIT + SPAN
    )
    assert closed.state is WindowState.SHORT
    assert closed.members == keys(obs[0:8])


def test_centred_window_ignores_other_strips():
    here = series(30)
    elsewhere = series(30, dec=30.0, prefix="x")
    window = centred_window(
        TRANSIT, SPAN, here + elsewhere, dec_deg=55.0, dec_tolerance_deg=DEC_TOL
    )
    assert all(k.startswith("o") for k in window.members)


def test_centred_window_refuses_with_too_few_observations():
    obs = series(30)[16:]  # only o016 and o017 reach into the window
    refusal = centred_window(TRANSIT, SPAN, obs, dec_deg=55.0, dec_tolerance_deg=DEC_TOL)
    assert isinstance(refusal, WindowRefusal)
    assert refusal.found == ("o016", "o017")
    assert refusal.needed == 3
    assert not refusal.final
    assert "only 2 observation(s)" in refusal.reason and "may still arrive" in refusal.reason
    final = centred_window(
        TRANSIT, SPAN, obs, dec_deg=55.0, dec_tolerance_deg=DEC_TOL, closed_before=TRANSIT + SPAN
    )
    assert final.final and "may still arrive" not in final.reason
    nothing = centred_window(TRANSIT, SPAN, [], dec_deg=55.0, dec_tolerance_deg=DEC_TOL)
    assert isinstance(nothing, WindowRefusal) and nothing.found == ()


def test_centred_window_refuses_a_non_positive_timespan():
    with pytest.raises(ValueError, match="timespan"):
        centred_window(TRANSIT, timedelta(0), series(3), dec_deg=55.0, dec_tolerance_deg=DEC_TOL)
