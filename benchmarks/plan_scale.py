"""Scale benchmark: does a reconcile pass stay fast as history piles up, and how fast does
the action queue drain?

What is built
-------------
For each backend (a SQLite file in a temporary directory, a fresh PostgreSQL database) and
each scale (a week, a month, a year of operation), a migrated database is filled with
metadata only (no files), in bulk (``executemany`` on SQLite, ``COPY`` on PostgreSQL), then
ANALYZEd. A year is 105,000 observations (every possible 5-minute observation recorded: the
conservative case; ~109 a day would give 40,000) in back-to-back runs with gaps and a change
of dec strip every 25 days; windows of 10 observations with stride 8
(:func:`reconciler.windows.tile_windows`) make ~13,000 mosaic groups, all published (with
their measurement sets, calibrated MSs, images, done actions, registry rows and source
catalogues) except the 50 most recent. Those stand at every stage: publishing, cataloguing,
mosaicking, imaging, calibrating, converting, or raw data still arriving, and every action
they want is running under another worker's unexpired lease, backing off, or failed, so
nothing is claimable. Three
calibration solutions a day cover every observation (no transit search), and ~1,000,000
events (a year) record the history. Smaller scales are proportional.

Unless ``--no-files``, the history's raw files exist too: a real incoming tree of empty
placeholder files, 16 an observation (12 while its data still arrive; ~1.68 M files in 366
per-day directories for a year), made once per scale and shared by both backends, with
their ``raw_files`` rows (:mod:`incoming_tree`). Files and directories carry mtimes of the
history's own clock, so only the last day is recent and nothing is being written.

What is measured
----------------
The reconciler has no-op handlers without product checks (no file stats) and a fixed clock
five minutes after the data.

* idle pass: ``Reconciler.run_pass()`` when nothing is claimable. Every pass is checked to
  be idle: no action run, nothing enqueued, and no INSERT/UPDATE/DELETE sent (group
  statuses are not rewritten). A full look settled the world before (with the change
  counter still for ``changes.RACY_SECONDS``, as between passes a minute apart), so an idle
  pass does not observe it again (:mod:`reconciler.settled`).
* idle parts, each called alone, and the full look (``reconcile(full=True)``: observe and
  decide every open window, as a pass does after any change, when a deadline comes, and
  at least every ``pass.resync_minutes``).
* discovery, on the tree: the first pass (the resync, which stats every file and compares
  it with its row; timed once), the quiet pass (part of the idle pass above, and alone
  among the idle parts), a sweep pass (every directory's mtime, as every
  ``discovery.sweep_minutes``) and a pass that finds one new observation's 16 files in the
  newest day directory (placeholders, recorded as unreadable; removed afterwards).
* claim-one pass (a full look, since the probe's reset is a change): ``reclaim_expired()``,
  ``reconcile()``, ``claim_next()`` and
  ``queries.complete``, which writes the ``action_done`` event too (no child process).
  One backing-off convert action is put back to pending, outside the timed region, before
  every repeat; each repeat must claim exactly it and write nothing else.
* throughput (PostgreSQL only, on the largest scale's database): ``--throughput-actions``
  pending no-op actions are drained by 1 and 4 worker processes, each with its own engine,
  looping ``queries.claim`` (limit 1 or 10) and ``queries.complete`` per action, each in its
  own ``writing_one()`` transaction. Afterwards every action must be done, and the
  per-worker logs must show no action claimed twice. (``benchmarks/queue_throughput.py``
  compares the service's own claims with procrastinate and a bare loop.)

Figures are medians and 90th percentiles over ``--repeats`` passes after ``--warmups``.

Run from the repository root::

    .venv/bin/python benchmarks/plan_scale.py [--backends sqlite,postgresql]
        [--scales week,month,year] [--repeats 40] [--throughput-actions 20000] [--no-files]

``RECONCILER_BENCH_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names the
PostgreSQL database used to create and drop the benchmark's own databases. Figures are
printed as they come; the last line of output is one JSON object holding all of them.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import logging
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import incoming_tree  # benchmarks/incoming_tree.py, beside this script
import psycopg
from machine import machine_facts  # benchmarks/machine.py, beside this script
from sqlalchemy import Connection, Engine, event, func, select, update

from reconciler.config import PathSettings, Settings
from reconciler.db import queries
from reconciler.db.changes import RACY_SECONDS
from reconciler.db.engine import make_engine, reading, writing, writing_one
from reconciler.db.migrate import upgrade
from reconciler.db.models import Action
from reconciler.engine.registry import ActionHandler, ActionRegistry
from reconciler.io.watch import ChangeHints
from reconciler.model import ActionKind, ActionState, ClaimedAction
from reconciler.naming import (
    calibrated_ms_path,
    caltable_prefix,
    catalogue_paths,
    group_target,
    image_prefix,
    measurement_set_path,
    observation_key,
    observation_target,
    staging_dir,
    window_label,
)
from reconciler.service import Reconciler
from reconciler.windows import ObservationSpan, tile_windows


def _names(spaced: str) -> tuple[str, ...]:
    """Column (or phase) names from one space-separated string."""
    return tuple(spaced.split())


PG_ADMIN_URL = os.environ.get("RECONCILER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")
SCALE_DAYS = {"week": 7.0, "month": 365.25 / 12, "year": 365.25}

OBSERVATIONS_PER_YEAR = 105_000
EVENTS_PER_YEAR = 1_000_000
OBSERVATION = timedelta(seconds=24 * 12.885)
T0 = datetime(2025, 1, 1)
STRIP_LENGTH = timedelta(days=25)
MAX_GAP = timedelta(minutes=10)
DEC_TOLERANCE_DEG = 1.0
SOLUTION_EVERY = timedelta(hours=8)
SOLUTION_VALIDITY = timedelta(hours=24)
WORK = Path("/data/dsa110/work")
PRODUCTS = Path("/data/dsa110/products")
OTHER_WORKER = "dsa-storage:4711:a1b2c3"
DONE_ACTOR = "dsa-storage:1234:d4e5f6"

#: name, RA, Dec (deg), flux (Jy): one bandpass calibrator per dec strip the array visits.
CALIBRATORS = (
    ("0834+555", 128.7288, 55.5728, 8.8),
    ("3C48", 24.4221, 33.1598, 16.0),
    ("3C147", 85.6506, 49.8520, 22.5),
    ("3C138", 80.2912, 16.6395, 8.5),
    ("3C286", 202.7845, 30.5092, 14.9),
)

#: The most recent groups, oldest first, are left at these stages (50 in all).
INCOMPLETE_STAGES = (
    ("publish", 3),
    ("catalogue", 2),
    ("mosaic", 5),
    ("image", 10),
    ("apply", 10),
    ("convert", 14),
    ("waiting", 6),
)
#: How far a stage has taken its members: 0 raw data arriving, 1 ready (convert wanted),
#: 2 converted (apply wanted), 3 calibrated (image wanted), 4 imaged.
MEMBER_LEVEL = {
    "published": 4,
    "publish": 4,
    "catalogue": 4,
    "mosaic": 4,
    "image": 3,
    "apply": 2,
    "convert": 1,
    "waiting": 0,
}
OBSERVATION_KINDS = (ActionKind.CONVERT, ActionKind.APPLY, ActionKind.IMAGE)
#: The group action wanted at each of the last stages.
OPEN_GROUP_KIND = {
    "publish": ActionKind.PUBLISH,
    "catalogue": ActionKind.CATALOGUE,
    "mosaic": ActionKind.MOSAIC,
}
PHASE_PATH = (
    "new",
    "waiting",
    "converting",
    "calibrating",
    "imaging",
    "mosaicking",
    "cataloguing",
    "publishing",
    "published",
)

ACTION_COLUMNS = (
    "id",
    "kind",
    "target",
    "generation",
    "group_id",
    "priority",
    "state",
    "attempts",
    "version",
    "not_before",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "heartbeat_at",
    "last_error",
    "error_kind",
    "created_at",
    "started_at",
    "finished_at",
)
EVENT_COLUMNS = ("at", "kind", "group_id", "action_id", "actor", "message")
#: Tables filled with explicit ids, whose PostgreSQL sequences must be moved past them.
EXPLICIT_ID_TABLES = (
    "bandpass_calibrators",
    "observations",
    "calibration_solutions",
    "mosaic_groups",
    "actions",
)
WRITE_VERBS = ("INSERT", "UPDATE", "DELETE")

Row = tuple[Any, ...]


# --- the history ------------------------------------------------------------------------


@dataclass(frozen=True)
class Obs:
    """One observation; times are naive UTC, as stored."""

    id: int
    key: str
    start: datetime
    end: datetime
    dec_deg: float


@dataclass(frozen=True)
class Group:
    """One mosaic group: its window, members (indices into the observations) and stage."""

    id: int
    start: datetime
    end: datetime
    dec_deg: float
    members: tuple[int, ...]
    stage: str


@dataclass(frozen=True)
class Table:
    """Rows to load into one table, columns in ``columns`` order."""

    name: str
    columns: tuple[str, ...]
    rows: Sequence[Row]


@dataclass(frozen=True)
class History:
    """A filled database's content and what the measurements need to know about it."""

    scale: str
    tables: tuple[Table, ...]
    now: datetime
    probe_action_id: int
    span_days: float
    incomplete_groups: int

    counts: dict[str, int]

    def without_rows(self) -> History:
        """The same history with its rows dropped (once loaded, they are only in the way)."""
        return replace(self, tables=())


def aware(moment: datetime) -> datetime:
    """A naive UTC time as a timezone-aware one."""
    return moment.replace(tzinfo=UTC)


def build_history(scale: str, seed: int = 110, incoming: Path | None = None) -> History:
    """The metadata of ``scale`` of operation, deterministic for a seed; with ``incoming``,
    the ``raw_files`` rows of a tree of placeholder files there too (see
    :mod:`incoming_tree`)."""
    rng = random.Random(seed)
    n_obs = round(OBSERVATIONS_PER_YEAR * SCALE_DAYS[scale] / SCALE_DAYS["year"])
    observations = _observations(n_obs, rng)
    groups = _groups(observations)
    now = observations[-1].end + timedelta(minutes=5)
    calibrators, solutions, solution_of = _calibration(observations)
    level, first_group = _member_levels(len(observations), groups)
    actions, done, probe = _actions(observations, groups, level, first_group, now, rng)
    target = round(EVENTS_PER_YEAR * n_obs / OBSERVATIONS_PER_YEAR)
    tables = (
        Table(
            "bandpass_calibrators",
            ("id", "name", "ra_deg", "dec_deg", "flux_jy", "dec_tolerance_deg", "active"),
            calibrators,
        ),
        Table(
            "observations",
            _names(
                "id key start_time end_time dec_deg n_subbands ready first_seen_at updated_at "
                "judge_again_at"
            ),
            _observation_rows(observations, level),
        ),
        *_raw_file_tables(observations, level, incoming),
        Table(
            "calibration_solutions",
            _names(
                "id calibrator_id observation_id dec_deg transit_time "
                "valid_from valid_until tables snr flagged_fraction created_at"
            ),
            solutions,
        ),
        *_artifact_tables(observations, level, solution_of, _retained_from(groups)),
        *_group_tables(groups, now),
        Table("actions", ACTION_COLUMNS, actions),
        Table("events", EVENT_COLUMNS, _events(done, groups, observations, target)),
    )
    return History(
        scale=scale,
        tables=tables,
        now=aware(now),
        probe_action_id=probe,
        span_days=(observations[-1].end - observations[0].start) / timedelta(days=1),
        incomplete_groups=sum(1 for g in groups if g.stage != "published"),
        counts={t.name: len(t.rows) for t in tables},
    )


def _raw_file_tables(
    observations: list[Obs], level: list[int], incoming: Path | None
) -> tuple[Table, ...]:
    """Sixteen files an observation (twelve while its data still arrive), if a tree is
    wanted."""
    if incoming is None:
        return ()
    observed = (
        incoming_tree.Observed(o.id, o.start, o.end, o.dec_deg, 16 if level[i] else 12)
        for i, o in enumerate(observations)
    )
    rows = list(incoming_tree.file_rows(incoming, observed))
    return (Table("raw_files", incoming_tree.COLUMNS, rows),)


def _observations(count: int, rng: random.Random) -> list[Obs]:
    """Back-to-back runs of 100-600 observations, short gaps, an outage now and then, and
    a new dec strip (at a run boundary) every :data:`STRIP_LENGTH`."""
    found: list[Obs] = []
    start = strip_start = T0
    strip = 0
    while len(found) < count:
        for _ in range(min(rng.randint(100, 600), count - len(found))):
            key = observation_key(aware(start))
            dec = CALIBRATORS[strip][2]
            found.append(Obs(len(found) + 1, key, start, start + OBSERVATION, dec))
            start += OBSERVATION
        if rng.random() < 0.1:
            start += timedelta(hours=rng.uniform(2, 8))
        else:
            start += OBSERVATION * rng.randint(1, 3)
        if start - strip_start >= STRIP_LENGTH:
            strip = (strip + 1) % len(CALIBRATORS)
            strip_start = start
    return found


def _groups(observations: list[Obs]) -> list[Group]:
    """The default tiling of the observations; the last 50 windows are left incomplete."""
    spans = [ObservationSpan(o.key, aware(o.start), aware(o.end), o.dec_deg) for o in observations]
    tiling = tile_windows(spans, max_gap=MAX_GAP, dec_tolerance_deg=DEC_TOLERANCE_DEG)
    windows = sorted(tiling.windows, key=lambda w: w.start)
    incomplete = [stage for stage, n in INCOMPLETE_STAGES for _ in range(n)]
    stages = ["published"] * (len(windows) - len(incomplete)) + incomplete
    index = {o.key: i for i, o in enumerate(observations)}
    return [
        Group(
            id=i + 1,
            start=w.start.replace(tzinfo=None),
            end=w.end.replace(tzinfo=None),
            dec_deg=w.dec_deg,
            members=tuple(index[k] for k in w.members),
            stage=stage,
        )
        for i, (w, stage) in enumerate(zip(windows, stages, strict=True))
    ]


def _member_levels(n_obs: int, groups: list[Group]) -> tuple[list[int], list[Group | None]]:
    """Each observation's level (the most advanced of its groups) and its earliest group."""
    level = [4] * n_obs
    first_group: list[Group | None] = [None] * n_obs
    for group in groups:
        for m in group.members:
            if first_group[m] is None:
                first_group[m] = group
                level[m] = MEMBER_LEVEL[group.stage]
    return level, first_group


def _calibration(observations: list[Obs]) -> tuple[list[Row], list[Row], list[int]]:
    """Calibrators, solutions every 8 h of each dec strip (valid ±24 h), and for each
    observation the id of a solution that covers it."""
    calibrators = [
        (i + 1, name, ra, dec, flux, 1.5, True)
        for i, (name, ra, dec, flux) in enumerate(CALIBRATORS)
    ]
    calibrator_of = {dec: i + 1 for i, (_, _, dec, _) in enumerate(CALIBRATORS)}
    starts = [o.start for o in observations]
    solutions: list[Row] = []
    solution_of = [0] * len(observations)
    for first, last in _strip_segments(observations):
        moment = observations[first].start + timedelta(hours=1)
        used: set[int] = set()
        while True:
            at = min(bisect.bisect_left(starts, moment, first, last + 1), last)
            obs = observations[at]
            if at not in used:
                used.add(at)
                solutions.append(
                    (
                        len(solutions) + 1,
                        calibrator_of[obs.dec_deg],
                        obs.id,
                        obs.dec_deg,
                        moment,
                        moment - SOLUTION_VALIDITY,
                        moment + SOLUTION_VALIDITY,
                        str(caltable_prefix(WORK, obs.key)),
                        round(80 + 40 * (at % 7) / 7, 1),
                        0.05,
                        obs.end + timedelta(minutes=20),
                    )
                )
            moment += SOLUTION_EVERY
            if moment > observations[last].end:
                break
        for i in range(first, last + 1):
            solution_of[i] = solutions[-len(used)][0]
    return calibrators, solutions, solution_of


def _strip_segments(observations: list[Obs]) -> Iterator[tuple[int, int]]:
    """(first, last) indices of each stretch of observations at one dec."""
    first = 0
    for i in range(1, len(observations) + 1):
        if i == len(observations) or observations[i].dec_deg != observations[first].dec_deg:
            yield first, i - 1
            first = i


def _observation_rows(observations: list[Obs], level: list[int]) -> list[Row]:
    return [
        (
            o.id,
            o.key,
            o.start,
            o.end,
            o.dec_deg,
            16 if level[i] else 12,
            level[i] > 0,
            o.start + timedelta(minutes=1),
            o.end + timedelta(minutes=1),
            # Data still arriving: judged again when the default grace period ends.
            None if level[i] else o.start + timedelta(minutes=11),
        )
        for i, o in enumerate(observations)
    ]


def _artifact_tables(
    observations: list[Obs], level: list[int], solution_of: list[int], removed_before: datetime
) -> tuple[Table, Table, Table]:
    """Measurement sets (level 2+), calibrated MSs (3+) and images (4); those of
    observations ending before ``removed_before`` were removed by retention a day after
    they were made, as a service running all along would have."""
    ms: list[Row] = []
    calibrated: list[Row] = []
    images: list[Row] = []
    for i, o in enumerate(observations):
        mid = o.start + (o.end - o.start) / 2
        removed = o.end + timedelta(hours=25) if o.end < removed_before else None
        if level[i] >= 2:
            ra = (mid - T0).total_seconds() / 86164.0905 * 360.0 % 360.0
            ms.append(
                (
                    o.id,
                    str(measurement_set_path(WORK, o.key)),
                    o.start,
                    mid,
                    o.end,
                    ra,
                    o.dec_deg,
                    24 * 4656,
                    768,
                    o.end + timedelta(minutes=12),
                    removed,
                )
            )
        if level[i] >= 3:
            path = str(calibrated_ms_path(WORK, o.key))
            calibrated.append((o.id, solution_of[i], path, o.end + timedelta(minutes=22), removed))
        if level[i] >= 4:
            prefix = str(image_prefix(WORK, o.key))
            images.append(
                (
                    o.id,
                    f"{prefix}.image.fits",
                    f"{prefix}.pb.fits",
                    24.1,
                    13.9,
                    -3.5,
                    0.0011,
                    o.end + timedelta(minutes=35),
                    removed,
                )
            )
    return (
        Table(
            "measurement_sets",
            _names(
                "observation_id path start_time mid_time end_time "
                "ra_deg dec_deg n_rows n_channels created_at removed_at"
            ),
            ms,
        ),
        Table(
            "calibrated_ms",
            ("observation_id", "solution_id", "path", "created_at", "removed_at"),
            calibrated,
        ),
        Table(
            "images",
            _names(
                "observation_id path pb_path beam_major_arcsec "
                "beam_minor_arcsec beam_pa_deg rms_jy created_at removed_at"
            ),
            images,
        ),
    )


def _retained_from(groups: list[Group]) -> datetime:
    """Two days before the earliest window not published: intermediates older than this
    were removed by retention."""
    return min(g.start for g in groups if g.stage != "published") - timedelta(days=2)


def _published_path(group: Group) -> str:
    label = window_label(aware(group.start), aware(group.end))
    return str(PRODUCTS / "mosaics" / f"mosaic_{label}_g1.fits")


def _group_tables(groups: list[Group], now: datetime) -> tuple[Table, Table, Table, Table]:
    """Groups (published ones with their status), members, the mosaic registry and the
    source catalogues."""
    rows: list[Row] = []
    members: list[Row] = []
    registry: list[Row] = []
    catalogues: list[Row] = []
    for g in groups:
        published = g.stage == "published"
        path = _published_path(g) if published else None
        done_at = g.end + timedelta(minutes=55)
        rows.append(
            (
                g.id,
                g.start,
                g.end,
                "tiling",
                g.dec_deg,
                g.end + timedelta(minutes=1),
                "published" if published else "new",
                f"published {path}" if published else None,
                path,
                done_at if published else None,
            )
        )
        members.extend((g.id, m + 1, pos, "member") for pos, m in enumerate(g.members))
        if published or g.stage == "publish":
            staged = staging_dir(WORK, g.id, 1) / "mosaic.fits"
            sources, rms = catalogue_paths(staged)
            catalogues.append((g.id, 1, str(sources), str(rms), "PyBDSF", "1.14.1", 0, 1e-3, g.end))
        if published or g.stage in ("publish", "catalogue"):
            registry.append(
                (
                    "mosaic",
                    g.id,
                    1,
                    str(staging_dir(WORK, g.id, 1) / "mosaic.fits"),
                    path,
                    "0" * 64 if published else None,
                    "published" if published else "staging",
                    g.end + timedelta(minutes=50),
                    done_at if published else None,
                    # Verified lately (none due in the measured passes); staged copy gone.
                    now if published else None,
                    done_at if published else None,
                )
            )
    return (
        Table(
            "mosaic_groups",
            _names(
                "id window_start window_end origin dec_deg "
                "created_at phase status_reason published_path status_updated_at"
            ),
            rows,
        ),
        Table("mosaic_group_members", ("group_id", "observation_id", "position", "role"), members),
        Table(
            "data_registry",
            _names(
                "kind group_id generation stage_path "
                "published_path checksum status created_at published_at "
                "verified_at stage_removed_at"
            ),
            registry,
        ),
        Table(
            "catalogues",
            _names(
                "group_id generation path rms_path finder finder_version n_components "
                "median_rms_jy created_at"
            ),
            catalogues,
        ),
    )


@dataclass(frozen=True)
class DoneAction:
    """A finished action, for the event history."""

    id: int
    label: str
    group_id: int
    attempts: int
    finished: datetime


def _action_row(**values: Any) -> Row:
    """An ``actions`` row from named values; columns not given are NULL."""
    return tuple(values.get(column) for column in ACTION_COLUMNS)


class _ActionRows:
    """Builds ``actions`` rows: finished history, and in-flight actions nobody can claim."""

    def __init__(self, now: datetime, rng: random.Random) -> None:
        self.now = now
        self.rng = rng
        self.rows: list[Row] = []
        self.done: list[DoneAction] = []
        self.open = 0
        self.probe: int | None = None

    def add_done(
        self, kind: ActionKind, target: str, generation: int, group: Group, finished: datetime
    ) -> None:
        action_id = len(self.rows) + 1
        attempts = 2 if self.rng.random() < 0.05 else 1
        self.rows.append(
            _action_row(
                id=action_id,
                kind=str(kind),
                target=target,
                generation=generation,
                group_id=group.id,
                priority=group.start,
                state="done",
                attempts=attempts,
                version=1 + 2 * attempts,
                heartbeat_at=finished - timedelta(seconds=10),
                created_at=group.end,
                started_at=finished - timedelta(minutes=4),
                finished_at=finished,
            )
        )
        self.done.append(DoneAction(action_id, f"{kind} {target}", group.id, attempts, finished))

    def add_open(self, kind: ActionKind, target: str, generation: int, group: Group) -> None:
        """Running under another worker's unexpired lease, backing off, or (one) failed."""
        now = self.now
        action_id = len(self.rows) + 1
        common = {
            "id": action_id,
            "kind": str(kind),
            "target": target,
            "generation": generation,
            "group_id": group.id,
            "priority": group.start,
            "created_at": now - timedelta(hours=3),
        }
        error = f"{kind} {target}: TemporaryError: casacore table lock held by another process"
        if self.open == 7:
            state = {
                "state": "failed",
                "attempts": 5,
                "version": 11,
                "last_error": error,
                "error_kind": "permanent",
                "started_at": now - timedelta(hours=2),
                "finished_at": now - timedelta(hours=1),
            }
        elif self.open % 3 == 1:
            state = {
                "state": "pending",
                "attempts": 2,
                "version": 5,
                "not_before": now + timedelta(minutes=20 + self.open),
                "last_error": error,
                "error_kind": "temporary",
                "started_at": now - timedelta(minutes=30),
                "finished_at": now - timedelta(minutes=1),
            }
            if self.probe is None and kind is ActionKind.CONVERT:
                self.probe = action_id
        else:
            state = {
                "state": "running",
                "attempts": 1,
                "version": 2,
                "lease_owner": OTHER_WORKER,
                "lease_token": str(uuid.UUID(int=action_id)),
                "lease_expires_at": now + timedelta(hours=1),
                "heartbeat_at": now - timedelta(seconds=10),
                "started_at": now - timedelta(minutes=5),
            }
        self.rows.append(_action_row(**common, **state))
        self.open += 1


def _actions(
    observations: list[Obs],
    groups: list[Group],
    level: list[int],
    first_group: list[Group | None],
    now: datetime,
    rng: random.Random,
) -> tuple[list[Row], list[DoneAction], int]:
    """Done convert/apply/image per observation below its level and the wanted one at its
    level; done mosaic/publish per published group, in-flight ones for the stages."""
    built = _ActionRows(now, rng)
    delays = (timedelta(minutes=12), timedelta(minutes=22), timedelta(minutes=35))
    for i, o in enumerate(observations):
        group = first_group[i]
        if group is None:
            continue
        target = observation_target(o.key)
        for kind, delay in zip(OBSERVATION_KINDS[: max(level[i] - 1, 0)], delays, strict=False):
            built.add_done(kind, target, 0, group, o.end + delay)
        if 1 <= level[i] <= 3:
            built.add_open(OBSERVATION_KINDS[level[i] - 1], target, 0, group)
    for g in groups:
        target = group_target(g.id)
        if g.stage in ("published", "publish", "catalogue"):
            built.add_done(ActionKind.MOSAIC, target, 1, g, g.end + timedelta(minutes=50))
        if g.stage in ("published", "publish"):
            built.add_done(ActionKind.CATALOGUE, target, 1, g, g.end + timedelta(minutes=52))
        if g.stage == "published":
            built.add_done(ActionKind.PUBLISH, target, 1, g, g.end + timedelta(minutes=55))
        elif g.stage in OPEN_GROUP_KIND:
            built.add_open(OPEN_GROUP_KIND[g.stage], target, 1, g)
    assert built.probe is not None, "no backing-off convert action to claim"
    return built.rows, built.done, built.probe


def _events(
    done: list[DoneAction], groups: list[Group], observations: list[Obs], target: int
) -> list[Row]:
    """The event history: retries and completions of the done actions, phase changes of the
    published groups, and subband-arrival events up to ``target`` rows, in time order."""
    events: list[Row] = []
    for d in done:
        if d.attempts > 1:
            message = f"{d.label}: TemporaryError: disk busy; retry in 60 s"
            at = d.finished - timedelta(minutes=15)
            events.append((at, "action_retry", d.group_id, d.id, DONE_ACTOR, message))
        message = f"{d.label} done in 231.4 s"
        events.append((d.finished, "action_done", d.group_id, d.id, DONE_ACTOR, message))
    for g in groups:
        if g.stage != "published":
            continue
        for step, (old, new) in enumerate(pairwise(PHASE_PATH)):
            at = g.end + timedelta(minutes=8 * step)
            events.append((at, "phase", g.id, None, DONE_ACTOR, f"{old} → {new}"))
    missing = max(target - len(events), 0)
    for n in range(missing):
        o = observations[n % len(observations)]
        present = 16 - n // len(observations) % 16
        message = f"{observation_target(o.key)}: {present}/16 subbands present"
        at = o.end + timedelta(seconds=n // len(observations))
        events.append((at, "observation", None, None, "ingest", message))
    events.sort(key=lambda e: e[0])
    return events


# --- databases ----------------------------------------------------------------------------


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}".replace("postgresql://", "postgresql+psycopg://", 1)


@contextmanager
def database(backend: str, scale: str, workdir: Path) -> Iterator[str]:
    """URL of a new, empty database of ``backend``, removed on exit."""
    if backend == "sqlite":
        path = workdir / f"plan_scale_{scale}.sqlite"
        try:
            yield f"sqlite:///{path}"
        finally:
            for leftover in workdir.glob(f"{path.name}*"):
                leftover.unlink()
        return
    name = f"reconciler_bench_{scale}_{os.getpid()}"
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load(engine: Engine, tables: Iterable[Table]) -> None:
    """Bulk-load ``tables`` in order, in one transaction, then ANALYZE."""
    if engine.dialect.name == "postgresql":
        _load_postgresql(engine, tables)
    else:
        _load_sqlite(engine, tables)
    with writing(engine) as conn:
        conn.exec_driver_sql("ANALYZE")


def _sqlite_value(value: object) -> object:
    # The spelling SQLAlchemy's DateTime uses on SQLite, so stored times compare as text.
    if isinstance(value, datetime):
        return value.isoformat(" ", "microseconds")
    return value


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def _load_sqlite(engine: Engine, tables: Iterable[Table]) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        for table in tables:
            marks = ", ".join("?" * len(table.columns))
            sql = f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})"
            rows = (tuple(_sqlite_value(v) for v in row) for row in table.rows)
            for batch in _batches(rows, 50_000):
                cursor.executemany(sql, batch)
        cursor.execute("COMMIT")
    finally:
        raw.close()


def _load_postgresql(engine: Engine, tables: Iterable[Table]) -> None:
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cursor:
            for table in tables:
                columns = ", ".join(table.columns)
                with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                    for row in table.rows:
                        copy.write_row(row)
            for name in EXPLICIT_ID_TABLES:
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), max(id)) FROM {name}"
                )
        raw.commit()
    finally:
        raw.close()


# --- the reconciler under test ------------------------------------------------------------


def do_nothing(payload: dict[str, Any]) -> dict[str, Any]:
    """The child side of a no-op action (never started: the benchmark runs no child)."""
    return {}


def _prepare_nothing(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict:
    return {}


def noop_registry() -> ActionRegistry:
    """Handlers for every kind that do nothing and check no product (no file stats)."""
    return ActionRegistry(
        ActionHandler(
            kind=kind,
            run=f"{__name__}:do_nothing",
            prepare=_prepare_nothing,
        )
        for kind in ActionKind
    )


def _no_transits(ra_deg: float, dec_deg: float, start: datetime, end: datetime) -> list[datetime]:
    raise AssertionError("the benchmark's calibration is solved: no transit search expected")


def make_reconciler(
    engine: Engine, url: str, workdir: Path, now: datetime, incoming: Path | None = None
) -> Reconciler:
    """A one-worker reconciler on ``engine`` with no-op actions and the clock stopped;
    it discovers ``incoming`` (default: a directory that does not exist)."""
    base = Settings()
    settings = replace(
        base,
        database=replace(base.database, url=url),
        paths=PathSettings(
            incoming=incoming or workdir / "incoming",
            work=workdir / "work",
            products=workdir / "products",
        ),
        passes=replace(base.passes, workers=1),
    )
    return Reconciler(
        engine,
        settings,
        noop_registry(),
        owner="plan-scale-bench",
        clock=lambda: now,
        transits=_no_transits,
    )


@dataclass(frozen=True)
class Sent:
    """One statement sent to the database: its text, duration and rows affected."""

    statement: str
    params: Any
    seconds: float
    rowcount: int

    @property
    def is_write(self) -> bool:
        """True for INSERT, UPDATE and DELETE."""
        words = self.statement.split()
        verb = words[0].upper() if words else ""
        # A data-modifying WITH (the completion and its event on PostgreSQL) writes too.
        return verb in WRITE_VERBS or (
            verb == "WITH" and any(w.upper() in WRITE_VERBS for w in words)
        )


class StatementLog:
    """Every statement an engine sends, since the last :meth:`clear`."""

    def __init__(self, engine: Engine) -> None:
        self.sent: list[Sent] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["plan_scale_started"] = time.perf_counter()

    def _after(self, conn: Connection, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seconds = time.perf_counter() - conn.info.pop("plan_scale_started")
        self.sent.append(Sent(statement, params, seconds, cursor.rowcount))

    def clear(self) -> None:
        """Forget what was recorded."""
        self.sent.clear()

    @property
    def writes(self) -> list[Sent]:
        """The INSERT, UPDATE and DELETE statements recorded."""
        return [s for s in self.sent if s.is_write]


@dataclass(frozen=True)
class Samples:
    """Wall times of repeated runs, in seconds, and where the time went."""

    seconds: tuple[float, ...]
    statements: int
    slowest: tuple[tuple[str, float], ...]

    def summary(self) -> dict[str, Any]:
        """Median, 90th percentile and extremes in milliseconds, for the JSON line."""
        ms = sorted(1000 * s for s in self.seconds)
        return {
            "median_ms": round(statistics.median(ms), 3),
            "p90_ms": round(ms[round(0.9 * (len(ms) - 1))], 3),
            "min_ms": round(ms[0], 3),
            "max_ms": round(ms[-1], 3),
            "repeats": len(ms),
            "statements_per_pass": self.statements,
            "slowest_statements": [{"sql": sql, "ms_per_pass": ms} for sql, ms in self.slowest],
        }


def _short_sql(statement: str) -> str:
    return " ".join(statement.split())[:90]


def _samples(seconds: list[float], per_repeat: list[list[Sent]]) -> Samples:
    """Samples with the five statements that took longest, as mean ms per pass."""
    total: dict[str, float] = defaultdict(float)
    for sent in per_repeat:
        for s in sent:
            total[_short_sql(s.statement)] += s.seconds
    slowest = sorted(total.items(), key=lambda item: -item[1])[:5]
    per_pass = tuple((sql, round(1000 * t / len(per_repeat), 3)) for sql, t in slowest)
    return Samples(tuple(seconds), max(len(sent) for sent in per_repeat), per_pass)


def measure_idle(
    reconciler: Reconciler, log: StatementLog, *, repeats: int, warmups: int
) -> Samples:
    """Time ``run_pass()`` on a world with nothing to do; fail if a pass changes anything.

    The only write statement allowed is the claim attempt, and it must touch no row.
    """
    seconds: list[float] = []
    per_repeat: list[list[Sent]] = []
    for i in range(warmups + repeats):
        log.clear()
        started = time.perf_counter()
        report = reconciler.run_pass()
        took = time.perf_counter() - started
        writes = log.writes
        if (
            report.actions
            or report.enqueued
            or report.reclaimed
            or len(writes) > 1
            or any(w.rowcount > 0 for w in writes)
        ):
            raise RuntimeError(
                f"the idle pass was not idle: {len(report.actions)} action(s), "
                f"{report.enqueued} enqueued, {report.reclaimed} reclaimed, "
                f"writes {[(_short_sql(w.statement), w.rowcount) for w in writes]}"
            )
        if i >= warmups:
            seconds.append(took)
            per_repeat.append(list(log.sent))
    return _samples(seconds, per_repeat)


#: The part that is not in an idle pass: observing and deciding every open window, as a
#: pass does after any change and at least every ``pass.resync_minutes``.
FULL_LOOK = "full_look"
#: Parts timed apart from an idle pass's: the full look, and retention's look (forced
#: here; a pass makes it every ``retention.LOOK_EVERY``).
NOT_EVERY_PASS = (FULL_LOOK, "retention")


def measure_parts(reconciler: Reconciler, *, repeats: int) -> dict[str, float]:
    """Median ms of the parts of an idle pass called one by one, and of a full look (not
    part of an idle pass: the world is settled); what ``run_pass`` spends beyond the sum of
    the others is its own work."""
    parts: dict[str, Callable[[], object]] = {
        "reclaim": reconciler.reclaim_expired,
        "reconcile": reconciler.reconcile,
        FULL_LOOK: lambda: reconciler.reconcile(full=True),
        "claim": reconciler.claim_next,
        "discover": reconciler.discover,
        "retention": lambda: reconciler.retain(force=True),
    }
    took: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, call in parts.items():
            started = time.perf_counter()
            call()
            took[name].append(time.perf_counter() - started)
    return {name: round(1000 * statistics.median(t), 3) for name, t in took.items()}


def _reset_probe(engine: Engine, action_id: int) -> None:
    """Put the probe action back to pending, runnable now, as if it had never run."""
    with writing(engine) as conn:
        conn.execute(
            update(Action)
            .where(Action.id == action_id)
            .values(
                state=str(ActionState.PENDING),
                attempts=0,
                not_before=None,
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
                heartbeat_at=None,
                started_at=None,
                finished_at=None,
                last_error=None,
                error_kind=None,
            )
        )


def claim_one(reconciler: Reconciler) -> tuple[int, int, ClaimedAction | None, bool]:
    """A pass that performs one action, minus the child: settle leases, reconcile, claim,
    record completion. Returns (reclaimed, enqueued, claimed, completed)."""
    reclaimed = reconciler.reclaim_expired()
    queued = reconciler.reconcile()
    claimed = reconciler.claim_next()
    completed = False
    if claimed is not None:
        now = reconciler.clock()
        with writing_one(reconciler.engine) as conn:
            completed = queries.complete(
                conn,
                claimed,
                now=now,
                message=f"{claimed.key.kind} {claimed.key.target} done in 0.0 s",
                actor=reconciler.owner,
            )
    return reclaimed, queued, claimed, completed


def measure_claim(
    reconciler: Reconciler, probe: int, log: StatementLog, *, repeats: int, warmups: int
) -> Samples:
    """Time :func:`claim_one` with exactly one claimable action (reset between repeats)."""
    seconds: list[float] = []
    per_repeat: list[list[Sent]] = []
    for i in range(warmups + repeats):
        _reset_probe(reconciler.engine, probe)
        log.clear()
        started = time.perf_counter()
        reclaimed, queued, claimed, completed = claim_one(reconciler)
        took = time.perf_counter() - started
        if claimed is None or claimed.id != probe or not completed or reclaimed or queued:
            raise RuntimeError(
                f"expected to claim and complete action {probe} only; got {claimed}, "
                f"completed={completed}, {reclaimed} reclaimed, {queued} enqueued"
            )
        if i >= warmups:
            # Steady state: the claim, the completion and its event (one statement on
            # PostgreSQL); no status rewrite.
            writes = [_short_sql(w.statement) for w in log.writes]
            if len(writes) != (2 if reconciler.engine.dialect.name == "postgresql" else 3):
                raise RuntimeError(f"claim pass sent {len(writes)} writes: {writes}")
            seconds.append(took)
            per_repeat.append(list(log.sent))
    return _samples(seconds, per_repeat)


# --- discovery over a real tree --------------------------------------------------------


def ensure_tree(incoming: Path, history: History) -> dict[str, Any]:
    """The placeholder tree of the history's ``raw_files`` rows, made unless this scale's
    tree is already there (made for the other backend)."""
    table = next(t for t in history.tables if t.name == "raw_files")
    directories = len({row[1] for row in table.rows})
    if incoming.exists():
        return {"files": len(table.rows), "directories": directories, "made_in_seconds": None}
    started = time.perf_counter()
    files = incoming_tree.make_tree(incoming, table.rows)
    took = time.perf_counter() - started
    return {"files": files, "directories": directories, "made_in_seconds": round(took, 1)}


def settle_discovery(reconciler: Reconciler) -> float:
    """Run the first discovery pass on the tree, the resync that compares every file with
    its row, and return its seconds; a second pass settles the verdicts of observations
    whose data still arrive, and a third must find nothing."""
    started = time.perf_counter()
    first = reconciler.discover()
    took = time.perf_counter() - started
    if not first.resynced or first.new_files or first.changed_files or first.vanished_files:
        raise RuntimeError(
            f"the resync of a tree matching its rows changed files: {len(first.new_files)} "
            f"new, {len(first.changed_files)} changed, {len(first.vanished_files)} vanished"
        )
    reconciler.discover()
    third = reconciler.discover()
    if not third.found_nothing or third.directories_listed:
        raise RuntimeError(f"discovery did not settle: {third}")
    return took


class _Overflowed:
    """Stands for the file-event watcher, saying events were lost: every pass sweeps."""

    def drain(self) -> ChangeHints:
        return ChangeHints(overflowed=True)

    def put_back(self, hints: ChangeHints) -> None:
        pass


def measure_sweep(reconciler: Reconciler, *, repeats: int) -> Samples:
    """Time discovery passes that stat every directory (as every ``sweep_minutes``)."""
    reconciler.watcher = _Overflowed()  # type: ignore[assignment]
    seconds: list[float] = []
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            report = reconciler.discover()
            seconds.append(time.perf_counter() - started)
            if not report.swept or not report.found_nothing:
                raise RuntimeError(f"the sweep was not a quiet sweep: {report}")
    finally:
        reconciler.watcher = None
    return Samples(tuple(seconds), 0, ())


def measure_new_files(reconciler: Reconciler, after: datetime, *, repeats: int) -> Samples:
    """Time discovery passes that each find one new observation's 16 files (placeholders,
    so each is recorded as unreadable) in the newest day directory."""
    incoming = reconciler.settings.paths.incoming
    starts = [after.replace(tzinfo=None) + i * OBSERVATION for i in range(repeats)]
    days = {incoming, *(incoming_tree.day_directory(incoming, start) for start in starts)}
    before = {d: d.stat().st_mtime for d in days if d.exists()}
    seconds: list[float] = []
    added: list[Path] = []
    # Each placeholder is logged as skipped, as a real unreadable file would be.
    quiet = logging.getLogger("reconciler")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for start in starts:
            arrived = incoming_tree.add_observation(incoming, start, start + OBSERVATION, 16)
            added += arrived
            began = time.perf_counter()
            report = reconciler.discover()
            seconds.append(time.perf_counter() - began)
            if sorted(report.new_files) != sorted(arrived):
                raise RuntimeError(f"expected the {len(arrived)} new files, found {report}")
    finally:
        # The tree is shared with the other backend's run: put it back as it was.
        for path in added:
            path.unlink()
        for directory in sorted(days - set(before), reverse=True):
            directory.rmdir()
        for directory, mtime in before.items():
            os.utime(directory, (mtime, mtime))
        quiet.setLevel(level)
    return Samples(tuple(seconds), 0, ())


# --- throughput ---------------------------------------------------------------------------


BENCH_TARGET_PREFIX = "obs:bench-"


def drain_queue(
    url: str,
    owner: str,
    limit: int,
    now: datetime,
    log_path: str,
    barrier: Any,
    results: Any,
) -> None:
    """Worker process: claim (``limit`` at a time) and complete until nothing is left.

    Writes every claimed id to ``log_path`` and puts a summary on ``results``.
    """
    engine = make_engine(url)
    kinds = tuple(ActionKind)
    with engine.connect():
        pass
    claimed = completed = 0
    barrier.wait()
    with open(log_path, "w") as log:
        while True:
            with writing(engine) as conn:
                batch = queries.claim(
                    conn, owner=owner, kinds=kinds, now=now, lease_seconds=600, limit=limit
                )
            if not batch:
                break
            for action in batch:
                log.write(f"{action.id}\n")
                with writing_one(engine) as conn:
                    completed += queries.complete(
                        conn, action, now=now, message="done in 0.0 s", actor=owner
                    )
            claimed += len(batch)
    results.put({"owner": owner, "claimed": claimed, "completed": completed, "end": time.time()})
    engine.dispose()


def _fill_queue(engine: Engine, n: int, now: datetime) -> None:
    """Replace the benchmark's actions with ``n`` fresh pending ones; VACUUM ANALYZE."""
    kinds = [str(k) for k in OBSERVATION_KINDS]
    start = now.replace(tzinfo=None) - timedelta(days=1)
    rows = [
        (kinds[i % 3], f"{BENCH_TARGET_PREFIX}{i:06d}", 0, start + timedelta(seconds=i), now)
        for i in range(n)
    ]
    with writing(engine) as conn:
        conn.execute(Action.__table__.delete().where(Action.target.startswith(BENCH_TARGET_PREFIX)))
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cursor:
            columns = "kind, target, generation, priority, created_at"
            with cursor.copy(f"COPY actions ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        raw.commit()
    finally:
        raw.close()
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE actions"
        )


def _drain_with(url: str, workers: int, limit: int, now: datetime, workdir: Path) -> dict:
    context = mp.get_context("spawn")
    barrier = context.Barrier(workers + 1)
    results = context.Queue()
    logs = [workdir / f"worker{limit}_{workers}_{i}.log" for i in range(workers)]
    processes = [
        context.Process(
            target=drain_queue,
            args=(url, f"bench-worker-{i}", limit, now, str(log), barrier, results),
        )
        for i, log in enumerate(logs)
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=120)
    started = time.time()
    summaries = [results.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join()
    ids = [int(line) for log in logs for line in log.read_text().split()]
    for log in logs:
        log.unlink()
    return {
        "seconds": max(s["end"] for s in summaries) - started,
        "claimed": sum(s["claimed"] for s in summaries),
        "completed": sum(s["completed"] for s in summaries),
        "per_worker": [s["claimed"] for s in summaries],
        "ids": ids,
    }


def _verify_drained(engine: Engine, run: dict, n: int) -> None:
    """Every action done, claimed once by one worker, completed once."""
    with reading(engine) as conn:
        states = dict(
            conn.execute(
                select(Action.state, func.count())
                .where(Action.target.startswith(BENCH_TARGET_PREFIX))
                .group_by(Action.state)
            ).all()
        )
    ids = run["ids"]
    problems = []
    if states != {str(ActionState.DONE): n}:
        problems.append(f"states {states}")
    if len(ids) != n or len(set(ids)) != n:
        problems.append(f"{len(ids)} claims of {len(set(ids))} distinct ids")
    if run["completed"] != n:
        problems.append(f"{run['completed']} completions")
    if problems:
        raise RuntimeError(f"queue not drained exactly once: {'; '.join(problems)}")


def measure_throughput(
    engine: Engine, url: str, n: int, now: datetime, workdir: Path
) -> list[dict[str, Any]]:
    """Claim-and-complete rates of 1 and 4 worker processes, claiming 1 and 10 at a time."""
    runs = []
    for limit in (1, 10):
        for workers in (1, 4):
            _fill_queue(engine, n, now)
            run = _drain_with(url, workers, limit, now, workdir)
            _verify_drained(engine, run, n)
            rate = n / run["seconds"]
            print(
                f"  {workers} worker(s), claim limit {limit:2d}: {rate:7.0f} actions/s "
                f"({run['seconds']:.1f} s; per worker {run['per_worker']}); verified",
                flush=True,
            )
            runs.append(
                {
                    "workers": workers,
                    "claim_limit": limit,
                    "actions": n,
                    "seconds": round(run["seconds"], 3),
                    "actions_per_second": round(rate, 1),
                    "per_worker": run["per_worker"],
                    "verified_exactly_once": True,
                }
            )
    with writing(engine) as conn:
        conn.execute(Action.__table__.delete().where(Action.target.startswith(BENCH_TARGET_PREFIX)))
    return runs


# --- driver -------------------------------------------------------------------------------


def _describe(history: History, fill_seconds: float) -> str:
    return (
        f"{history.counts['observations']:,} observations over {history.span_days:.0f} days, "
        f"{history.counts['mosaic_groups']:,} groups ({history.incomplete_groups} incomplete), "
        f"{history.counts['actions']:,} actions, {history.counts['events']:,} events; "
        f"filled and analysed in {fill_seconds:.1f} s"
    )


def _print_samples(label: str, samples: Samples) -> None:
    s = samples.summary()
    where = (
        f"  ({s['statements_per_pass']} statements; slowest: {samples.slowest[0][0][:50]!r} "
        f"{samples.slowest[0][1]:.2f} ms)"
        if samples.slowest
        else ""
    )
    print(
        f"  {label:<11} median {s['median_ms']:7.2f} ms  p90 {s['p90_ms']:7.2f} ms{where}",
        flush=True,
    )


def bench_database(
    backend: str, scale: str, args: argparse.Namespace, workdir: Path, throughput: bool
) -> dict[str, Any]:
    """Fill one database, measure the passes (and the queue, if asked); drop it."""
    started = time.perf_counter()
    incoming = workdir / f"incoming-{scale}" if args.files else None
    history = build_history(scale, incoming=incoming)
    built = time.perf_counter() - started
    tree = ensure_tree(incoming, history) if incoming else None
    with database(backend, scale, workdir) as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            began = time.perf_counter()
            load(engine, history.tables)
            fill = time.perf_counter() - began
            history = history.without_rows()
            gc.collect()
            print(f"{backend} {scale}: {_describe(history, fill)}", flush=True)
            reconciler = make_reconciler(engine, url, workdir, history.now, incoming)
            if tree is not None:
                tree["resync_seconds"] = round(settle_discovery(reconciler), 2)
                print(
                    f"  tree        {tree['files']:,} files in {tree['directories']} day "
                    f"directories; the resync (every file) took {tree['resync_seconds']} s",
                    flush=True,
                )
            # Retention catches up with the filled history (as a service running all along
            # would have), so an idle pass finds nothing to remove.
            while reconciler.retain(force=True):
                pass
            # The first look writes the statuses of the filled world; as between a service's
            # passes, a minute apart, the change counter then stands still long enough for a
            # look to settle the world (PostgreSQL's counter is racy).
            for _ in range(2):
                settled = reconciler.reconcile()
                if settled:
                    raise RuntimeError(f"settling the filled world enqueued {settled} action(s)")
            time.sleep(RACY_SECONDS[engine.dialect.name])
            log = StatementLog(engine)
            idle = measure_idle(reconciler, log, repeats=args.repeats, warmups=args.warmups)
            _print_samples("idle pass", idle)
            parts = measure_parts(reconciler, repeats=args.repeats)
            in_pass = sum(ms for name, ms in parts.items() if name not in NOT_EVERY_PASS)
            print(
                "  idle parts  "
                + ", ".join(f"{name} {ms:.2f} ms" for name, ms in parts.items())
                + f"; rest of run_pass {idle.summary()['median_ms'] - in_pass:.2f} ms",
                flush=True,
            )
            claim = measure_claim(
                reconciler,
                history.probe_action_id,
                log,
                repeats=args.repeats,
                warmups=args.warmups,
            )
            _print_samples("claim pass", claim)
            if tree is not None:
                sweep = measure_sweep(reconciler, repeats=args.repeats)
                _print_samples("sweep pass", sweep)
                fresh = measure_new_files(reconciler, history.now, repeats=args.repeats)
                _print_samples("new files", fresh)
                tree |= {"sweep_pass": sweep.summary(), "new_files_pass": fresh.summary()}
            result: dict[str, Any] = {
                "observations": history.counts["observations"],
                "span_days": round(history.span_days, 1),
                "groups": history.counts["mosaic_groups"],
                "incomplete_groups": history.incomplete_groups,
                "actions": history.counts["actions"],
                "events": history.counts["events"],
                "build_seconds": round(built, 2),
                "fill_seconds": round(fill, 2),
                "idle_pass": idle.summary(),
                "idle_parts_median_ms": parts,
                "claim_pass": claim.summary(),
                "incoming_tree": tree,
            }
            if throughput:
                print(
                    f"throughput on {backend} {scale} history + "
                    f"{args.throughput_actions:,} no-op actions:",
                    flush=True,
                )
                result["throughput"] = measure_throughput(
                    engine, url, args.throughput_actions, history.now, workdir
                )
            return result
        finally:
            engine.dispose()


def _ratios(results: dict[str, dict[str, dict[str, Any]]], scales: list[str]) -> dict[str, Any]:
    if "week" not in scales or len(scales) < 2:
        return {}
    largest = scales[-1]
    ratios: dict[str, Any] = {}
    for backend, by_scale in results.items():
        ratios[backend] = {
            f"{kind}_{largest}_over_week": round(
                by_scale[largest][kind]["median_ms"] / by_scale["week"][kind]["median_ms"], 3
            )
            for kind in ("idle_pass", "claim_pass")
        }
        trees = [by_scale[scale]["incoming_tree"] for scale in ("week", largest)]
        if all(trees):
            for kind in ("new_files_pass", "sweep_pass"):
                ratios[backend][f"{kind}_{largest}_over_week"] = round(
                    trees[1][kind]["median_ms"] / trees[0][kind]["median_ms"], 3
                )
    return ratios


def _targets(
    results: dict[str, dict[str, dict[str, Any]]],
    ratios: dict[str, Any],
    throughput: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for backend, by_scale in results.items():
        if "year" in by_scale:
            for kind in ("idle_pass", "claim_pass"):
                targets[f"{backend}_year_{kind}_under_20ms"] = (
                    by_scale["year"][kind]["median_ms"] < 20
                )
        if backend in ratios:
            # The sweep stats every directory by design: it is reported, not held to 1.5.
            targets[f"{backend}_ratio_under_1.5"] = all(
                r < 1.5 for kind, r in ratios[backend].items() if not kind.startswith("sweep")
            )
        if "year" in by_scale and by_scale["year"]["incoming_tree"]:
            discover = by_scale["year"]["idle_parts_median_ms"]["discover"]
            targets[f"{backend}_year_quiet_discovery_under_50ms"] = discover < 50
    for run in throughput or ():
        if run["workers"] == 4:
            name = f"four_workers_claim_limit_{run['claim_limit']}"
            targets[f"{name}_at_least_500_per_s"] = run["actions_per_second"] >= 500
            targets[f"{name}_at_least_1000_per_s"] = run["actions_per_second"] >= 1000
    return targets


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--scales", default=",".join(SCALE_DAYS))
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--warmups", type=int, default=5)
    parser.add_argument(
        "--no-files",
        dest="files",
        action="store_false",
        help="no incoming tree: discovery finds no incoming directory (faster to build)",
    )
    parser.add_argument(
        "--throughput-actions",
        type=int,
        default=20_000,
        help="pending no-op actions drained per throughput run (0: skip the throughput part)",
    )
    return parser


def _split(value: str, known: Iterable[str], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in known]
    if unknown or not chosen:
        raise SystemExit(f"unknown {what}: {', '.join(unknown) or value!r}")
    return [k for k in known if k in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print figures as they come and one JSON line last."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmups < 1:
        parser.error("--repeats and --warmups must be at least 1")
    backends = _split(args.backends, BACKENDS, "backend")
    scales = _split(args.scales, SCALE_DAYS, "scale")
    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    throughput = None
    with tempfile.TemporaryDirectory(prefix="plan_scale_") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            for scale in scales:
                wants_queue = (
                    backend == "postgresql" and scale == scales[-1] and args.throughput_actions > 0
                )
                result = bench_database(backend, scale, args, workdir, wants_queue)
                throughput = result.pop("throughput", throughput)
                results.setdefault(backend, {})[scale] = result
    ratios = _ratios(results, scales)
    for backend, values in ratios.items():
        print(f"{backend}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    targets = _targets(results, ratios, throughput)
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")
    total = time.perf_counter() - started
    machine = machine_facts()
    print(f"total {total:.0f} s; reference loop {machine['reference_loop_ms']} ms", flush=True)
    summary = {
        "benchmark": "plan_scale",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "repeats": args.repeats,
        "warmups": args.warmups,
        "passes": results,
        "ratios": ratios,
        "throughput": {
            "database": f"postgresql {scales[-1]} history",
            "runs": throughput,
        }
        if throughput
        else None,
        "targets": targets,
        "seconds": round(total, 1),
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
