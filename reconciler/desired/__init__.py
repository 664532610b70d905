"""Desired state: what mosaics are wanted, in every mode of wanting (DESIGN §4).

* :mod:`~reconciler.desired.explicit`: a window asked for by a person (CLI, Python or SQL);
* :mod:`~reconciler.desired.centred` and :mod:`~reconciler.desired.calibrator_rows`: a
  window centred on a calibrator transit, asked for directly or by a row naming only the
  calibrator;
* :mod:`~reconciler.desired.tiling`: the default tiling, the earliest incomplete window;
* :mod:`~reconciler.desired.late`: data that arrive after a window was published, and new
  versions of a published window;
* :mod:`~reconciler.desired.commands`: pause, resume, cancel and retry a group.

These modules write desired state only; the window logic itself is pure
(:mod:`reconciler.windows`). The pass calls :func:`want` once, right after discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from reconciler.config import Settings
from reconciler.db.engine import reading
from reconciler.desired.calibrator_rows import (
    ResolveReport,
    resolve_rows,
    unresolved_calibrator_rows,
)
from reconciler.desired.late import late_data_notes, write_late_notes
from reconciler.desired.tiling import TilingReport, create_tiling_groups, next_tiling_windows
from reconciler.sky import TransitFinder


@dataclass(frozen=True)
class WantReport:
    """What the pass's wanting step did."""

    resolve: ResolveReport
    tiling: TilingReport | None
    late: tuple[int, ...]


def want(
    engine: Engine,
    settings: Settings,
    *,
    transits: TransitFinder,
    now: datetime,
    actor: str = "service",
) -> WantReport:
    """The pass's desired-state step: resolve calibrator-only rows, tile, note late data.

    All three read in one snapshot; each writes (in its own transaction) only when it has
    something to write, so an idle pass costs one read transaction here.
    """
    with reading(engine) as conn:
        unresolved = unresolved_calibrator_rows(conn)
        tiling = next_tiling_windows(conn, settings, now=now) if settings.tiling.enabled else None
        notes = late_data_notes(conn, settings, now=now)
    resolve = resolve_rows(engine, settings, unresolved, transits=transits, now=now, actor=actor)
    created = None
    if tiling is not None:
        created = create_tiling_groups(engine, settings, *tiling, now=now, actor=actor)
    late = write_late_notes(engine, notes, now=now, actor=actor)
    return WantReport(resolve, created, tuple(late))
