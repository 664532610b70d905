"""Calibration eligibility: which observation holds the transit of a strip's calibrator, and
which solution serves an observation.

Pure: the catalogue, the solutions and the candidate observations are arguments, and the
site enters only through the transit finder (built once from ``settings.site``). Observe
asks here what a window needs; the solve and apply steps ask here what to do, so the two
can never disagree about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from reconciler.catalogue import Calibrator, choose_calibrator
from reconciler.sky import TransitFinder


class SolutionLike(Protocol):
    """What eligibility needs to know of a registered calibration solution."""

    @property
    def id(self) -> int: ...
    @property
    def dec_deg(self) -> float: ...
    @property
    def transit_time(self) -> datetime: ...
    @property
    def valid_from(self) -> datetime: ...
    @property
    def valid_until(self) -> datetime: ...


class ObservationLike(Protocol):
    """What eligibility needs to know of an observation."""

    @property
    def key(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def dec_deg(self) -> float: ...
    @property
    def ready(self) -> bool: ...


S = TypeVar("S", bound=SolutionLike)


def serving_solution(
    solutions: Iterable[S],
    *,
    dec_deg: float,
    start: datetime,
    end: datetime,
    tolerance_deg: float,
) -> S | None:
    """The solution that calibrates the data ``[start, end]`` pointed at ``dec_deg``.

    A solution serves when it is on the same dec strip (within ``tolerance_deg``) and valid
    over the whole span; of several, the one whose transit is nearest the middle wins, then
    the lowest id, so the choice never depends on the order given. None when none serves.
    """
    middle = start + (end - start) / 2
    serving = [
        s
        for s in solutions
        if abs(s.dec_deg - dec_deg) <= tolerance_deg
        and s.valid_from <= start
        and s.valid_until >= end
    ]
    if not serving:
        return None
    return min(serving, key=lambda s: (abs(s.transit_time - middle), s.id))


@dataclass(frozen=True)
class HeldTransit:
    """The calibrator transit an observation holds: what a solve on it solves on."""

    calibrator: Calibrator
    moment: datetime


def held_transit(
    calibrators: Iterable[Calibrator],
    transits: TransitFinder,
    *,
    dec_deg: float,
    start: datetime,
    end: datetime,
) -> HeldTransit | str:
    """The transit of the calibrator of the strip ``dec_deg`` inside ``[start, end)``.

    When there is none, why: no calibrator serves the strip, or its transit falls outside
    the span.
    """
    calibrator = choose_calibrator(calibrators, dec_deg)
    if calibrator is None:
        return f"no bandpass calibrator registered for dec {dec_deg:.2f}"
    inside = [
        t for t in transits(calibrator.ra_deg, calibrator.dec_deg, start, end) if start <= t < end
    ]
    if not inside:
        return f"no transit of {calibrator.name}"
    return HeldTransit(calibrator, min(inside))


@dataclass(frozen=True)
class TransitSearch:
    """Where to look for a solve: the strip's calibrator and its transits whose solutions
    would serve the data, nearest first; or, when there is none, why."""

    calibrator: Calibrator | None
    moments: tuple[datetime, ...]
    problem: str | None = None


def transits_to_solve_on(
    calibrators: Iterable[Calibrator],
    transits: TransitFinder,
    *,
    dec_deg: float,
    start: datetime,
    end: datetime,
    validity: timedelta,
) -> TransitSearch:
    """The transits of the strip's calibrator whose solution would cover ``[start, end]``.

    A solution is valid ``validity`` either side of its transit, so transits in
    ``[end - validity, start + validity]`` qualify; they come nearest the middle first.
    """
    calibrator = choose_calibrator(calibrators, dec_deg)
    if calibrator is None:
        return TransitSearch(None, (), f"no bandpass calibrator registered for dec {dec_deg:.2f}")
    middle = start + (end - start) / 2
    moments = transits(calibrator.ra_deg, calibrator.dec_deg, end - validity, start + validity)
    return TransitSearch(calibrator, tuple(sorted(moments, key=lambda t: (abs(t - middle), t))))


def solve_target(
    search: TransitSearch,
    candidates: Sequence[ObservationLike],
    calibrators: Sequence[Calibrator],
    transits: TransitFinder,
    validity: timedelta,
) -> ObservationLike | str:
    """The observation to solve on for ``search``, or why there is none.

    It holds the nearest of the search's transits, its raw data are ready, and a solve on
    it (:func:`held_transit` at its own pointing) would use the same calibrator, so the
    solve step agrees with what is asked of it.
    """
    calibrator = search.calibrator
    if calibrator is None:
        return search.problem or "no bandpass calibrator"
    for moment in search.moments:
        for candidate in candidates:
            if not (candidate.ready and candidate.start <= moment < candidate.end):
                continue
            held = held_transit(
                calibrators,
                transits,
                dec_deg=candidate.dec_deg,
                start=candidate.start,
                end=candidate.end,
            )
            if isinstance(held, HeldTransit) and held.calibrator.name == calibrator.name:
                return candidate
    hours = validity.total_seconds() / 3600
    return f"no observation holds a transit of {calibrator.name} within {hours:g} h"
