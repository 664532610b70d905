"""Calibration eligibility: the one place that says which observation holds a strip's
calibrator transit and which solution serves an observation. Observe and the solve/apply
steps both ask it; these are also the cases where they used to disagree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reconciler.catalogue import Calibrator
from reconciler.eligibility import (
    HeldTransit,
    held_transit,
    serving_solution,
    solve_target,
    transits_to_solve_on,
)
from reconciler.model import Site
from reconciler.sky import DSA110, transit_finder

C0834 = Calibrator("0834+555", 128.72877, 55.57252, 8.8, 2.0)
C3C286 = Calibrator("1331+305", 202.78453, 30.50916, 15.0, 2.0)
#: A calibrator as bright as 0834+555 would look, 1.9° north of it.
NORTH = Calibrator("0900+574", 135.0, 57.47, 30.0, 2.0)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
FIVE = timedelta(minutes=5)
T0 = datetime(2025, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Obs:
    key: str
    start: datetime
    end: datetime
    dec_deg: float = 55.57
    ready: bool = True


@dataclass(frozen=True)
class Solution:
    id: int
    dec_deg: float
    transit_time: datetime
    valid_from: datetime
    valid_until: datetime


def solution(id_: int, transit: datetime, *, dec: float = 55.57, hours: float = 24) -> Solution:
    validity = timedelta(hours=hours)
    return Solution(id_, dec, transit, transit - validity, transit + validity)


def around(moment: datetime, key: str = "cal", **kw) -> Obs:
    """A five-minute observation holding ``moment``."""
    return Obs(key, moment - timedelta(minutes=2), moment + timedelta(minutes=3), **kw)


def fixed(*moments: datetime):
    """A transit finder that knows only ``moments`` (whatever the source)."""

    def find(ra, dec, start, end):
        return [m for m in moments if start <= m <= end]

    return find


# --- which solution serves an observation ----------------------------------------------


def test_the_solution_nearest_the_middle_serves():
    near, far = solution(1, T0 + 2 * HOUR), solution(2, T0 - 10 * HOUR)
    chosen = serving_solution(
        [far, near], dec_deg=55.57, start=T0, end=T0 + FIVE, tolerance_deg=1.0
    )
    assert chosen == near


def test_ties_go_to_the_lowest_id_whatever_the_order():
    a, b = solution(7, T0 + HOUR), solution(3, T0 - HOUR + FIVE)
    for order in ([a, b], [b, a]):
        chosen = serving_solution(order, dec_deg=55.57, start=T0, end=T0 + FIVE, tolerance_deg=1)
        assert chosen == b


def test_a_solution_must_cover_the_whole_span_on_the_same_strip():
    expiring = solution(1, T0 - 24 * HOUR + timedelta(minutes=2))  # ends inside the span
    other_strip = solution(2, T0, dec=30.0)
    assert (
        serving_solution(
            [expiring, other_strip], dec_deg=55.57, start=T0, end=T0 + FIVE, tolerance_deg=1.0
        )
        is None
    )


def test_each_member_is_served_even_when_no_single_solution_covers_the_window():
    # Observe used to ask for one solution covering the whole window, apply for one per
    # observation: here each member has a solution but none covers both, so observe kept
    # asking for a solve that apply did not need. Now both ask per observation.
    first, second = solution(1, T0), solution(2, T0 + 2 * DAY)
    minute = timedelta(minutes=1)
    early = Obs("a", T0 + 23 * HOUR + 50 * minute, T0 + 23 * HOUR + 55 * minute)
    late = Obs("b", T0 + 24 * HOUR + 5 * minute, T0 + 24 * HOUR + 10 * minute)
    served = [
        serving_solution(
            [first, second], dec_deg=m.dec_deg, start=m.start, end=m.end, tolerance_deg=1.0
        )
        for m in (early, late)
    ]
    assert served == [first, second]
    whole = serving_solution(
        [first, second], dec_deg=55.57, start=early.start, end=late.end, tolerance_deg=1.0
    )
    assert whole is None


# --- which observation holds the transit -----------------------------------------------


def test_the_transit_nearest_the_data_is_searched_first():
    before, after = T0 - 20 * HOUR, T0 + 3 * HOUR
    search = transits_to_solve_on(
        [C0834], fixed(before, after), dec_deg=55.57, start=T0, end=T0 + HOUR, validity=DAY
    )
    assert search.calibrator == C0834
    assert search.moments == (after, before)


def test_no_calibrator_for_the_strip_is_the_reason():
    search = transits_to_solve_on(
        [C3C286], fixed(T0), dec_deg=55.57, start=T0, end=T0 + HOUR, validity=DAY
    )
    found = solve_target(search, [around(T0)], [C3C286], fixed(T0), DAY)
    assert found == "no bandpass calibrator registered for dec 55.57"


def test_the_observation_holding_the_nearest_transit_is_the_target():
    moments = (T0 - 20 * HOUR, T0 + 3 * HOUR)
    finder = fixed(*moments)
    search = transits_to_solve_on(
        [C0834], finder, dec_deg=55.57, start=T0, end=T0 + HOUR, validity=DAY
    )
    candidates = [around(moments[0], "far"), around(moments[1], "near")]
    found = solve_target(search, candidates, [C0834], finder, DAY)
    assert found == candidates[1]


def test_an_observation_not_ready_is_passed_over():
    moments = (T0 - 20 * HOUR, T0 + 3 * HOUR)
    finder = fixed(*moments)
    search = transits_to_solve_on(
        [C0834], finder, dec_deg=55.57, start=T0, end=T0 + HOUR, validity=DAY
    )
    candidates = [around(moments[0], "far"), around(moments[1], "near", ready=False)]
    assert solve_target(search, candidates, [C0834], finder, DAY) == candidates[0]


def test_no_observation_holding_a_transit_is_the_reason():
    finder = fixed(T0 + 3 * HOUR)
    search = transits_to_solve_on(
        [C0834], finder, dec_deg=55.57, start=T0, end=T0 + HOUR, validity=DAY
    )
    found = solve_target(search, [around(T0 + 5 * HOUR)], [C0834], finder, DAY)
    assert found == "no observation holds a transit of 0834+555 within 24 h"


def test_a_target_whose_own_strip_has_another_calibrator_is_not_chosen():
    # The window's strip (55.57) is 0834+555's, but an observation holding that transit
    # pointed 1.9° north is the brighter NORTH's strip: a solve on it would have solved on
    # NORTH (the solve step chose by the observation's own dec), so observe must not pick it.
    moment = T0 + 3 * HOUR
    finder = fixed(moment)
    calibrators = [C0834, NORTH]
    search = transits_to_solve_on(
        calibrators, finder, dec_deg=55.57, start=T0, end=T0 + HOUR, validity=DAY
    )
    north_pointed = around(moment, "north", dec_deg=57.47)
    assert search.calibrator == C0834
    assert isinstance(
        held_transit(
            calibrators, finder, dec_deg=57.47, start=north_pointed.start, end=north_pointed.end
        ),
        HeldTransit,
    )
    found = solve_target(search, [north_pointed], calibrators, finder, DAY)
    assert found == "no observation holds a transit of 0834+555 within 24 h"
    on_strip = around(moment, "on-strip", dec_deg=55.6)
    assert solve_target(search, [north_pointed, on_strip], calibrators, finder, DAY) == on_strip


def test_the_configured_site_decides_the_transit_for_observe_and_the_solve_alike():
    # The solve step used the hard-coded DSA-110 site while observe used the configured
    # one: at another site observe chose an observation the solve step then refused.
    greenwich = Site(latitude_deg=51.4779, longitude_deg=0.0, height_m=46.0)
    finder = transit_finder(greenwich)
    search = transits_to_solve_on(
        [C0834], finder, dec_deg=55.57, start=T0, end=T0 + HOUR, validity=DAY
    )
    target = around(search.moments[0], "greenwich-transit")
    assert solve_target(search, [target], [C0834], finder, DAY) == target
    held = held_transit([C0834], finder, dec_deg=55.57, start=target.start, end=target.end)
    assert isinstance(held, HeldTransit) and held.calibrator == C0834
    assert abs(held.moment - search.moments[0]) < timedelta(seconds=1)
    at_dsa110 = held_transit(
        [C0834], transit_finder(DSA110), dec_deg=55.57, start=target.start, end=target.end
    )
    assert at_dsa110 == "no transit of 0834+555"
