"""Which raw files make an observation, and whether it is ready: pure, no I/O, no clock.

Files are grouped by the data's own start time (DESIGN §1: file names of one observation
differ by a few seconds, the data do not), so a grouping depends only on the set of files,
never on the order in which they arrived. An observation is judged from its files alone:
files that cannot be combined with the rest (other channel layout, other dec, duplicate
subband) are excluded by name, and a grace period decides how long missing subbands are
waited for. The caller supplies the time and which files are gone from disk.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import fmean

from reconciler.naming import observation_key


@dataclass(frozen=True)
class DiscoveryPolicy:
    """How raw files become observations and when an observation is ready.

    ``grace`` is how long after its first file was seen an observation missing subbands
    waits for them; after that it is ready with at least ``min_subbands`` of
    ``expected_subbands``, or incomplete. Files whose data start times lie within
    ``group_tolerance`` of each other (transitively) form one observation; subbands of one
    observation must point within ``dec_tolerance_deg`` of each other.
    """

    grace: timedelta
    min_subbands: int = 16
    expected_subbands: int = 16
    group_tolerance: timedelta = timedelta(seconds=60)
    dec_tolerance_deg: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.min_subbands <= self.expected_subbands:
            raise ValueError("need 1 <= min_subbands <= expected_subbands")
        if self.grace < timedelta(0) or self.group_tolerance < timedelta(0):
            raise ValueError("grace and group_tolerance must not be negative")


@dataclass(frozen=True)
class RawMember:
    """A readable raw file as grouping sees it (the columns of one ``raw_files`` row)."""

    id: int
    path: str
    subband: int
    data_start: datetime
    data_end: datetime
    dec_deg: float
    n_channels: int
    seen_at: datetime
    observation_id: int | None


@dataclass(frozen=True)
class Assessment:
    """The verdict on one observation, judged from its files; ``used`` are file ids."""

    key: str
    start: datetime
    end: datetime
    dec_deg: float
    n_subbands: int
    ready: bool
    problem: str | None
    first_seen: datetime
    used: frozenset[int]
    #: When the verdict changes by itself (the end of the grace period it waits on).
    judge_again_at: datetime | None = None


def cluster_by_start(members: Iterable[RawMember], tolerance: timedelta) -> list[list[RawMember]]:
    """Split files into observations: single linkage on data start within ``tolerance``.

    The result depends only on the set of files: clusters come out in time order, each
    sorted by (data start, path).
    """
    ordered = sorted(members, key=lambda m: (m.data_start, m.path))
    clusters: list[list[RawMember]] = []
    for member in ordered:
        if clusters and member.data_start - clusters[-1][-1].data_start <= tolerance:
            clusters[-1].append(member)
        else:
            clusters.append([member])
    return clusters


def assess(
    members: Sequence[RawMember],
    *,
    missing: Collection[str],
    now: datetime,
    policy: DiscoveryPolicy,
    unreadable: Sequence[str] = (),
) -> Assessment:
    """Judge one observation from the files of one cluster; pure, no I/O.

    Parameters
    ----------
    members
        The readable files of one cluster (at least one).
    missing
        Paths that are no longer on disk.
    unreadable
        Errors (naming their files) of files whose names place them in this observation
        but which could not be read: the problem says so, so "missing" never hides
        "broken".
    now, policy
        Time of the pass and the completeness rules.

    Returns
    -------
    Assessment
        Key and start from the earliest data start, end from the latest data end;
        ``n_subbands`` counts distinct subbands consistent with the rest and on disk;
        ``problem`` names every excluded file and says why the observation is not (fully)
        ready, or is None when there is nothing to say; ``judge_again_at`` is the deadline
        while it waits for missing subbands (only then does time alone change the verdict).
    """
    used, problems = _consistent(members, policy)
    problems[:0] = list(unreadable)
    # With every file excluded the observation still needs an extent to be listed under.
    extent = used or list(members)
    start = min(m.data_start for m in members)
    first_seen = min(m.seen_at for m in members)
    gone = sorted(_name(m) for m in used if m.path in missing)
    present = {m.subband for m in used if m.path not in missing}
    absent = ", ".join(f"sb{s:02d}" for s in range(policy.expected_subbands) if s not in present)
    count = f"{len(present)}/{policy.expected_subbands} subbands"
    deadline = first_seen + policy.grace
    waiting = False
    if gone:
        ready = False
        problems.append(f"raw file{'s' if len(gone) > 1 else ''} vanished: {', '.join(gone)}")
    elif len(present) >= policy.expected_subbands:
        ready = True
    elif now < deadline:
        ready = False
        waiting = True
        problems.append(f"{count} (missing {absent}); waiting until {_clock(deadline, now)}")
    elif len(present) >= policy.min_subbands:
        ready = True
        problems.append(f"{count} (missing {absent}); ready without them after the grace period")
    else:
        ready = False
        problems.append(f"incomplete: {count}, needs {policy.min_subbands} (missing {absent})")
    return Assessment(
        key=observation_key(start),
        start=start,
        end=max(m.data_end for m in extent),
        dec_deg=fmean(m.dec_deg for m in extent),
        n_subbands=len(present),
        ready=ready,
        problem="; ".join(problems) or None,
        first_seen=first_seen,
        used=frozenset(m.id for m in used),
        judge_again_at=deadline if waiting else None,
    )


def _consistent(
    members: Sequence[RawMember], policy: DiscoveryPolicy
) -> tuple[list[RawMember], list[str]]:
    """Drop files that cannot be combined with the rest, saying why for each one.

    The majority decides what "the rest" is, ties broken by subband then path, so the odd
    file out is the same whatever order the files arrived in.
    """
    problems: list[str] = []
    in_range: list[RawMember] = []
    for member in sorted(members, key=lambda m: (m.subband, m.path)):
        if member.subband < policy.expected_subbands:
            in_range.append(member)
        else:
            last = policy.expected_subbands - 1
            problems.append(f"excluded {_name(member)}: subband outside sb00..sb{last:02d}")
    if not in_range:
        return [], problems
    layouts = Counter(m.n_channels for m in in_range)
    channels = max(in_range, key=lambda m: (layouts[m.n_channels], -m.subband)).n_channels
    reference = max(
        (m for m in in_range if m.n_channels == channels),
        key=lambda m: (
            sum(abs(o.dec_deg - m.dec_deg) <= policy.dec_tolerance_deg for o in in_range),
            -m.subband,
        ),
    )
    used: dict[int, RawMember] = {}
    for member in in_range:
        if member.n_channels != channels:
            problems.append(
                f"excluded {_name(member)}: {member.n_channels} channels, the others {channels}"
            )
        elif abs(member.dec_deg - reference.dec_deg) > policy.dec_tolerance_deg:
            problems.append(
                f"excluded {_name(member)}: dec {member.dec_deg:.3f}°, the others "
                f"{reference.dec_deg:.3f}° (tolerance {policy.dec_tolerance_deg}°)"
            )
        elif member.subband in used:
            problems.append(f"excluded {_name(member)}: duplicate of {_name(used[member.subband])}")
        else:
            used[member.subband] = member
    return list(used.values()), problems


def _name(member: RawMember) -> str:
    return os.path.basename(member.path)


def _clock(when: datetime, now: datetime) -> str:
    """A deadline as HH:MM:SS UTC, with the date when it is not on the day of ``now``."""
    when, now = when.astimezone(UTC), now.astimezone(UTC)
    return f"{when:%H:%M:%S}" if when.date() == now.date() else f"{when:%Y-%m-%d %H:%M:%S}"
