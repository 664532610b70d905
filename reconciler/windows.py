"""Pure window logic for the ways of wanting a mosaic (DESIGN §4).

Default tiling: per dec strip, windows of ``size`` consecutive observations that start
every ``stride`` observations (10 and 8: neighbours share 2), anchored at the first
observation of each contiguous run so the same data always give the same windows.
Calibrator-centred: the observations overlapping ``transit ± timespan / 2``.

Inputs are plain observation descriptors and every time is an argument: no clock, no
database, no files.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_SIZE = 10
DEFAULT_STRIDE = 8
DEFAULT_MIN_SIZE = 3


class WindowState(enum.StrEnum):
    """How far a window's membership is settled."""

    #: ``size`` members (tiling), or data span the whole requested interval (centred).
    COMPLETE = "complete"
    #: Data ran out and no more can arrive: an asymmetric window of at least ``min_size``.
    SHORT = "short"
    #: Membership can still grow: waiting for data.
    OPEN = "open"
    #: Closed with fewer than ``min_size`` members: reported, never worked on.
    TOO_SHORT = "too_short"


@dataclass(frozen=True)
class ObservationSpan:
    """What window logic needs to know about one observation.

    Attributes
    ----------
    key
        The observation's unique key.
    start, end
        Timezone-aware data start and end; ``end`` after ``start``.
    dec_deg
        Pointing declination, degrees.
    """

    key: str
    start: datetime
    end: datetime
    dec_deg: float

    def __post_init__(self) -> None:
        for moment in (self.start, self.end):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError(f"observation {self.key}: times must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"observation {self.key}: end {self.end} is not after {self.start}")


@dataclass(frozen=True)
class Window:
    """A set of consecutive observations to image and mosaic together.

    Attributes
    ----------
    start, end
        Start of the first member and end of the last.
    members
        Member keys in time order.
    dec_deg
        Pointing declination of the first member.
    state
        See :class:`WindowState`.
    """

    start: datetime
    end: datetime
    members: tuple[str, ...]
    dec_deg: float
    state: WindowState

    @classmethod
    def of(cls, members: Sequence[ObservationSpan], state: WindowState) -> Window:
        """Build a window from time-ordered, non-empty members."""
        return cls(
            start=members[0].start,
            end=max(m.end for m in members),
            members=tuple(m.key for m in members),
            dec_deg=members[0].dec_deg,
            state=state,
        )


@dataclass(frozen=True)
class Tiling:
    """The result of :func:`tile_windows`.

    Attributes
    ----------
    windows
        Complete, short and open windows, in time order.
    too_short
        Closed windows with fewer than ``min_size`` members, in time order: to be
        reported, never silently dropped.
    """

    windows: tuple[Window, ...]
    too_short: tuple[Window, ...]


@dataclass(frozen=True)
class WindowRefusal:
    """Why a calibrator-centred window cannot be formed.

    Attributes
    ----------
    transit
        The transit the window was centred on.
    start, end
        The requested interval.
    dec_deg, dec_tolerance_deg
        The strip searched.
    found
        Keys of the observations that were found (fewer than ``needed``).
    needed
        The minimum number of observations.
    final
        True when no more data can arrive for the interval (``closed_before`` has passed
        its end); False when waiting might still help.
    """

    transit: datetime
    start: datetime
    end: datetime
    dec_deg: float
    dec_tolerance_deg: float
    found: tuple[str, ...]
    needed: int
    final: bool

    @property
    def reason(self) -> str:
        """A one-line explanation for operators."""
        wait = "" if self.final else " yet; more data may still arrive"
        return (
            f"only {len(self.found)} observation(s) at dec {self.dec_deg:.2f}"
            f"±{self.dec_tolerance_deg:g} between {self.start:%Y-%m-%d %H:%M:%S} and "
            f"{self.end:%Y-%m-%d %H:%M:%S}; at least {self.needed} needed{wait}"
        )


def sort_observations(observations: Iterable[ObservationSpan]) -> list[ObservationSpan]:
    """Return observations in (start, key) order; refuse duplicate keys.

    Raises
    ------
    ValueError
        If two observations share a key.
    """
    ordered = sorted(observations, key=lambda o: (o.start, o.key))
    seen: set[str] = set()
    for observation in ordered:
        if observation.key in seen:
            raise ValueError(f"observation key {observation.key!r} appears twice")
        seen.add(observation.key)
    return ordered


def contiguous_runs(
    observations: Iterable[ObservationSpan], *, max_gap: timedelta, dec_tolerance_deg: float
) -> list[tuple[ObservationSpan, ...]]:
    """Split observations into contiguous runs on one dec strip.

    A run ends where the next observation starts more than ``max_gap`` after the end of
    the one before it, or points more than ``dec_tolerance_deg`` away from the run's first
    observation (comparing with the first, not the previous, so slow drift cannot chain
    a run across strips).

    Returns
    -------
    list of tuple of ObservationSpan
        Runs in time order, each in (start, key) order.
    """
    runs: list[list[ObservationSpan]] = []
    run_end: datetime | None = None  # latest end so far: neighbours may overlap
    for observation in sort_observations(observations):
        if (
            run_end is not None
            and observation.start - run_end <= max_gap
            and abs(observation.dec_deg - runs[-1][0].dec_deg) <= dec_tolerance_deg
        ):
            runs[-1].append(observation)
            run_end = max(run_end, observation.end)
        else:
            runs.append([observation])
            run_end = observation.end
    return [tuple(run) for run in runs]


def tile_windows(
    observations: Iterable[ObservationSpan],
    *,
    max_gap: timedelta,
    dec_tolerance_deg: float,
    size: int = DEFAULT_SIZE,
    stride: int = DEFAULT_STRIDE,
    min_size: int = DEFAULT_MIN_SIZE,
    closed_before: datetime | None = None,
) -> Tiling:
    """Tile observations into overlapping windows (default tiling, DESIGN §4).

    Each contiguous run (see :func:`contiguous_runs`) is cut into windows of ``size``
    observations starting at run positions 0, ``stride``, 2 ``stride``, ...; a window is
    formed only if it holds an observation its predecessor does not, so consecutive
    windows share exactly ``size - stride`` observations. The result depends only on the
    set of observations, never on their order.

    A run is *closed* when another run follows it, or when ``closed_before`` says no
    observation starting before that time is still to come and the run's last end plus
    ``max_gap`` is before it (pass a time after all data to mean "end of data"). The last
    window of a closed run may be short: ``SHORT`` with at least ``min_size`` members,
    ``TOO_SHORT`` (returned separately) with fewer. The last window of a run that is not
    closed is ``OPEN`` unless it is already full.

    Parameters
    ----------
    observations
        Observations of any strips, in any order; keys must be unique.
    max_gap
        Longest gap between one observation's end and the next one's start within a run.
    dec_tolerance_deg
        Largest dec difference from a run's first observation within the run.
    size, stride, min_size
        Window size, step between window starts, and smallest workable window
        (``1 <= stride <= size``, ``1 <= min_size <= size``).
    closed_before
        Timezone-aware time before which all observations are known, or None.

    Returns
    -------
    Tiling

    Raises
    ------
    ValueError
        For inconsistent parameters or duplicate keys.
    """
    _check_tiling_parameters(size, stride, min_size, max_gap)
    runs = contiguous_runs(observations, max_gap=max_gap, dec_tolerance_deg=dec_tolerance_deg)
    windows: list[Window] = []
    too_short: list[Window] = []
    for number, run in enumerate(runs):
        followed = number + 1 < len(runs)
        timed_out = closed_before is not None and max(o.end for o in run) + max_gap < closed_before
        for window in _tile_run(run, size, stride, min_size, closed=followed or timed_out):
            (too_short if window.state is WindowState.TOO_SHORT else windows).append(window)
    return Tiling(tuple(windows), tuple(too_short))


def _check_tiling_parameters(size: int, stride: int, min_size: int, max_gap: timedelta) -> None:
    if size < 1 or not 1 <= stride <= size:
        raise ValueError(f"need size >= 1 and 1 <= stride <= size, got {size=} {stride=}")
    if not 1 <= min_size <= size:
        raise ValueError(f"need 1 <= min_size <= size, got {min_size=} {size=}")
    if max_gap < timedelta(0):
        raise ValueError(f"max_gap must not be negative, got {max_gap}")


def _tile_run(
    run: Sequence[ObservationSpan], size: int, stride: int, min_size: int, *, closed: bool
) -> list[Window]:
    overlap = size - stride
    windows = []
    for first in range(0, len(run), stride):
        # Past the first window, a window whose members all sit in its predecessor's
        # overlap adds nothing: the run is already covered.
        if first > 0 and len(run) <= first + overlap:
            break
        members = run[first : first + size]
        if len(members) == size:
            state = WindowState.COMPLETE
        elif not closed:
            state = WindowState.OPEN
        elif len(members) >= min_size:
            state = WindowState.SHORT
        else:
            state = WindowState.TOO_SHORT
        windows.append(Window.of(members, state))
    return windows


def centred_window(
    transit: datetime,
    timespan: timedelta,
    observations: Iterable[ObservationSpan],
    *,
    dec_deg: float,
    dec_tolerance_deg: float,
    min_size: int = DEFAULT_MIN_SIZE,
    closed_before: datetime | None = None,
) -> Window | WindowRefusal:
    """Form the window centred on a transit (calibrator-centred mode, DESIGN §4).

    Members are the observations on the strip (``|dec - dec_deg| <= dec_tolerance_deg``)
    that overlap ``[transit - timespan / 2, transit + timespan / 2)``.

    Parameters
    ----------
    transit
        Timezone-aware transit time.
    timespan
        Length of the requested interval (positive).
    observations
        Candidate observations, any order, unique keys.
    dec_deg, dec_tolerance_deg
        The strip.
    min_size
        Fewest members worth a mosaic.
    closed_before
        Time before which all observations are known, or None (more may arrive).

    Returns
    -------
    Window or WindowRefusal
        ``COMPLETE`` when members span the whole interval; otherwise ``SHORT`` (asymmetric)
        once ``closed_before`` reaches the interval's end, else ``OPEN``. A refusal, saying
        what was found and whether waiting can help, when fewer than ``min_size`` members.
        Gaps inside the interval do not change the state; only its two ends are checked.

    Raises
    ------
    ValueError
        For a non-positive timespan, ``min_size < 1`` or duplicate keys.
    """
    if timespan <= timedelta(0):
        raise ValueError(f"timespan must be positive, got {timespan}")
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size}")
    start, end = transit - timespan / 2, transit + timespan / 2
    members = [
        o
        for o in sort_observations(observations)
        if abs(o.dec_deg - dec_deg) <= dec_tolerance_deg and o.start < end and o.end > start
    ]
    final = closed_before is not None and closed_before >= end
    if len(members) < min_size:
        return WindowRefusal(
            transit=transit,
            start=start,
            end=end,
            dec_deg=dec_deg,
            dec_tolerance_deg=dec_tolerance_deg,
            found=tuple(m.key for m in members),
            needed=min_size,
            final=final,
        )
    spans_interval = members[0].start <= start and max(m.end for m in members) >= end
    if spans_interval:
        state = WindowState.COMPLETE
    else:
        state = WindowState.SHORT if final else WindowState.OPEN
    return Window.of(members, state)
