"""Plain values shared by every layer: enums and frozen dataclasses, no I/O.

The vocabulary follows the reconcile contract: a :class:`DesiredGroup` is what someone asked
for, a :class:`GroupObserved` is what the world holds for it right now, and the pure core
turns the two into :class:`ActionSpec` values (what should happen next) and a
:class:`GroupDecision` (the status to show).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class ActionKind(enum.StrEnum):
    """Pipeline actions, in the order a window needs them."""

    CONVERT = "convert"
    SOLVE = "solve"
    APPLY = "apply"
    IMAGE = "image"
    MOSAIC = "mosaic"
    CATALOGUE = "catalogue"
    ASSESS = "assess"
    PUBLISH = "publish"

    @property
    def rank(self) -> int:
        """Position in the pipeline; earlier stages sort first among equal windows."""
        return _KIND_RANK[self]


_KIND_RANK = {kind: rank for rank, kind in enumerate(ActionKind)}


class ActionState(enum.StrEnum):
    """Life cycle of one claimable action row."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Phase(enum.StrEnum):
    """Where a desired mosaic stands; shown by ``status`` and the ``mosaic_status`` view.

    ``waiting``: its data are still arriving; ``blocked``: data are there but cannot go on
    until something changes that a pass cannot do (a calibrator registered for the strip,
    an observation holding its transit); ``held``: its mosaic failed quality assessment and
    is not published unless someone accepts it.
    """

    NEW = "new"
    WAITING = "waiting"
    BLOCKED = "blocked"
    CONVERTING = "converting"
    CALIBRATING = "calibrating"
    IMAGING = "imaging"
    MOSAICKING = "mosaicking"
    CATALOGUING = "cataloguing"
    ASSESSING = "assessing"
    HELD = "held"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    FAILED = "failed"
    INSUFFICIENT = "insufficient"
    INVALID = "invalid"
    PAUSED = "paused"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True when no further pass will change the phase without a person acting."""
        return self in {Phase.PUBLISHED, Phase.CANCELLED, Phase.INVALID}

    @property
    def parks(self) -> bool:
        """True when the group can make no progress by itself: passes stop observing it
        until a retry or new data in its window wakes it."""
        return self in {Phase.FAILED, Phase.INSUFFICIENT, Phase.HELD}


class Origin(enum.StrEnum):
    """How a desired mosaic came to exist."""

    MANUAL = "manual"
    CALIBRATOR = "calibrator"
    TILING = "tiling"


#: Observation-level actions carry this generation; only group actions follow the group's.
OBSERVATION_GENERATION = 0


@dataclass(frozen=True, order=True)
class ActionKey:
    """Identity of an action: the unique constraint of the ``actions`` table."""

    kind: ActionKind
    target: str
    generation: int = OBSERVATION_GENERATION


@dataclass(frozen=True)
class ActionStatus:
    """What the ``actions`` table says about one key, as read by observe."""

    key: ActionKey
    state: ActionState
    attempts: int
    version: int
    not_before: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class ActionSpec:
    """One action the world needs next.

    ``priority`` is the start of the earliest window that wants it, so work drains
    earliest-window first. ``redo_version`` is set when a finished action's product has
    vanished: the action is reset only if its row still has that version.
    """

    key: ActionKey
    priority: datetime
    group_id: int
    redo_version: int | None = None

    @property
    def sort_key(self) -> tuple[datetime, int, str, int]:
        """Earliest window first, then pipeline order, then target name."""
        return (self.priority, self.key.kind.rank, self.key.target, self.key.generation)


@dataclass(frozen=True)
class DesiredGroup:
    """A row of ``mosaic_groups``: the desired state, as a person or the tiler asked."""

    id: int
    window_start: datetime | None
    window_end: datetime | None
    generation: int = 1
    paused: bool = False
    cancelled: bool = False
    origin: Origin = Origin.MANUAL
    calibrator: str | None = None
    #: The reprocessing that asked for this generation: its members' products made under
    #: other settings count as missing (observe sees to that).
    reprocessing_id: int | None = None


@dataclass(frozen=True)
class ObservationState:
    """One member observation and the artifacts that exist for it.

    ``ready``: its raw data are complete enough to convert. ``arriving``: not ready, but
    discovery still waits for its missing files (its grace time is not over); a member
    neither ready nor arriving will not become ready by itself.
    """

    key: str
    start: datetime
    end: datetime
    dec_deg: float
    ready: bool = True
    problem: str | None = None
    arriving: bool = False
    converted: bool = False
    calibrated: bool = False
    imaged: bool = False


@dataclass(frozen=True)
class CalibrationState:
    """Calibration available to a group's dec strip.

    ``solved`` means a valid solution covers the members; otherwise ``solve_target`` names
    the observation holding the calibrator transit to solve on (``solve_target_converted``
    once its MS exists), or ``problem`` says why there is none.
    """

    solved: bool = False
    solve_target: str | None = None
    solve_target_converted: bool = False
    problem: str | None = None


class Quality(enum.StrEnum):
    """The verdict of a mosaic's quality assessment."""

    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"


@dataclass(frozen=True)
class QualityVerdict:
    """What the quality assessment of a group generation's mosaic concluded: ``summary``
    names every reason for a warning or a failure; ``accepted`` is true when someone chose
    to publish a failed mosaic anyway."""

    quality: Quality
    summary: str = ""
    accepted: bool = False

    @property
    def holds(self) -> bool:
        """True when the mosaic must not be published as it is."""
        return self.quality is Quality.FAILED and not self.accepted


@dataclass(frozen=True)
class GroupObserved:
    """Everything the pure core needs to know about one desired mosaic."""

    group: DesiredGroup
    members: tuple[ObservationState, ...] = ()
    calibration: CalibrationState = CalibrationState()
    data_through: datetime | None = None
    mosaic_done: bool = False
    #: The staged mosaic's source catalogue and rms map are there.
    catalogued: bool = False
    #: The staged mosaic's quality assessment, once made (its figure is there).
    quality: QualityVerdict | None = None
    published_path: str | None = None
    actions: dict[ActionKey, ActionStatus] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupDecision:
    """The status the pass writes back onto a group, with the actions it wants."""

    group_id: int
    phase: Phase
    reason: str
    next_action: str | None
    wanted: tuple[ActionSpec, ...] = ()
    #: Keys of members left out of the mosaic (raw data that will not become complete).
    excluded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Decisions for every active group and the merged, ordered actions they want."""

    decisions: tuple[GroupDecision, ...]
    actions: tuple[ActionSpec, ...]


@dataclass(frozen=True)
class ClaimedAction:
    """An action leased to one worker; ``token`` fences every write about it."""

    id: int
    key: ActionKey
    group_id: int | None
    attempts: int
    owner: str
    token: str
    priority: datetime


@dataclass(frozen=True)
class Site:
    """A geodetic position on the Earth (WGS84); the defaults are DSA-110 at OVRO.

    Attributes
    ----------
    latitude_deg, longitude_deg
        Geodetic latitude and east longitude, degrees.
    height_m
        Height above the ellipsoid, metres.
    """

    latitude_deg: float = 37.2314
    longitude_deg: float = -118.2817
    height_m: float = 1222.0


@dataclass(frozen=True)
class ScanPolicy:
    """How much of the incoming tree a discovery pass looks at (:mod:`reconciler.discover`).

    ``recent``: directories changed within it are looked at every pass. ``sweep``: how often
    every directory is. ``resync``: how often every file is. ``settle``: files written
    within it are stat'd every pass.
    """

    recent: timedelta = timedelta(hours=24)
    sweep: timedelta = timedelta(minutes=10)
    resync: timedelta = timedelta(hours=24)
    settle: timedelta = timedelta(minutes=30)


@dataclass(frozen=True)
class DecidePolicy:
    """Knobs of the pure core (from the configuration).

    ``arrival_grace``: how long after a window's end to wait for late data before working
    with what is there. ``min_observations``: fewest members a mosaic may have.
    """

    arrival_grace: timedelta = timedelta(minutes=30)
    min_observations: int = 3
    max_window: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap, and a limit on attempts."""

    max_attempts: int = 5
    base_delay_seconds: float = 30.0
    max_delay_seconds: float = 3600.0
    jitter: float = 0.2
