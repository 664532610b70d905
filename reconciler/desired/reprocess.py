"""Reprocessing: new versions of the published mosaics of a span, made under the current
settings, making again only the stages whose settings (or code revision) changed.

A request selects the published groups whose window lies in the span (on one dec strip, if
asked), records itself in ``reprocessings`` and starts a new generation of every group not
already made, or being made, under the current settings. The passes do the rest: for those
groups observe counts the members' products made under other settings as missing
(:mod:`reconciler.observe`), so decide asks for them again and reuses the others; the new
mosaic is published under a versioned name, and publishing marks the earlier version
superseded. Everything the request writes is one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Row, and_, func, insert, select, update

from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.engine import writing
from reconciler.db.models import MosaicGroup, RegistryEntry, Reprocessing
from reconciler.desired.late import start_generation
from reconciler.errors import RequestError
from reconciler.fingerprint import fingerprints
from reconciler.model import Phase


@dataclass(frozen=True)
class Reprocessed:
    """What a reprocessing request did: the groups given a new generation, and why each
    other group of the span was left alone."""

    id: int
    fingerprint: str
    started: tuple[int, ...] = ()
    skipped: dict[int, str] = field(default_factory=dict)


def reprocess(
    engine: Engine,
    settings: Settings,
    *,
    start: datetime,
    end: datetime,
    dec_deg: float | None = None,
    reason: str | None = None,
    actor: str = "cli",
) -> Reprocessed:
    """Make new versions, under ``settings``, of the published mosaics whose window lies in
    ``[start, end]`` (and whose dec strip is within ``calibration.dec_strip_tolerance_deg``
    of ``dec_deg``, if given).

    A group is skipped, with the reason returned, when it is not published, when a
    reprocessing is making its current generation, or when its published version was made
    under the current settings: asking twice makes one new version.

    Raises
    ------
    RequestError
        If the span is empty.
    """
    if end <= start:
        raise RequestError(f"span end {end.isoformat()} is not after its start {start.isoformat()}")
    now = datetime.now(UTC)
    wanted = fingerprints(settings).catalogue
    with writing(engine) as conn:
        rows = conn.execute(_groups_in(start, end, dec_deg, settings)).all()
        reprocessing_id = conn.execute(
            insert(Reprocessing)
            .values(
                requested_at=now,
                actor=actor,
                reason=reason,
                span_start=start,
                span_end=end,
                dec_deg=dec_deg,
                fingerprint=wanted,
                groups=0,
            )
            .returning(Reprocessing.id)
        ).scalar_one()
        started, skipped = [], {}
        for row in rows:
            why = _why_not(row, wanted)
            note = f"reprocessing {reprocessing_id}" + (f": {reason}" if reason else "")
            if why is None and start_generation(
                conn,
                row.id,
                row.generation,
                reason=f"new version (generation {row.generation + 1}) asked by {note}",
                at=now,
                actor=actor,
                reprocessing_id=reprocessing_id,
            ):
                started.append(row.id)
            else:
                skipped[row.id] = why or "changed meanwhile: ask again"
        conn.execute(
            update(Reprocessing)
            .where(Reprocessing.id == reprocessing_id)
            .values(groups=len(started))
        )
        queries.record_event(
            conn,
            "reprocess",
            f"reprocessing {reprocessing_id} of {start.isoformat()} to {end.isoformat()}"
            f"{'' if dec_deg is None else f' at dec {dec_deg:g}'}: {len(started)} new "
            f"version(s), {len(skipped)} group(s) skipped; settings {wanted}"
            f"{f'; {reason}' if reason else ''}",
            at=now,
            actor=actor,
        )
    return Reprocessed(reprocessing_id, wanted, tuple(started), skipped)


def _groups_in(start: datetime, end: datetime, dec_deg: float | None, settings: Settings) -> Any:
    """The groups whose window lies in the span (on the dec strip), with the fingerprint of
    their current generation's published mosaic, if any."""
    published = and_(
        RegistryEntry.kind == "mosaic",
        RegistryEntry.group_id == MosaicGroup.id,
        RegistryEntry.generation == MosaicGroup.generation,
        RegistryEntry.status == "published",
    )
    stmt = (
        select(
            MosaicGroup.id,
            MosaicGroup.phase,
            MosaicGroup.generation,
            MosaicGroup.reprocessing_id,
            RegistryEntry.fingerprint,
        )
        .outerjoin(RegistryEntry, published)
        .where(MosaicGroup.window_start >= start, MosaicGroup.window_end <= end)
        .order_by(MosaicGroup.window_start, MosaicGroup.id)
    )
    if dec_deg is not None:
        tolerance = settings.calibration.dec_strip_tolerance_deg
        stmt = stmt.where(func.abs(MosaicGroup.dec_deg - dec_deg) <= tolerance)
    return stmt


def _why_not(row: Row[Any], wanted: str) -> str | None:
    """Why a group gets no new version, or None when it gets one."""
    if row.phase != str(Phase.PUBLISHED):
        if row.reprocessing_id is not None:
            return (
                f"reprocessing {row.reprocessing_id} is making generation {row.generation} "
                f"({row.phase})"
            )
        return f"{row.phase}, not published: nothing to make a new version of"
    if row.fingerprint == wanted:
        return f"generation {row.generation} was made under the current settings"
    return None
