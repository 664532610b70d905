"""The bandpass-calibrator table: read it as catalogue values, seed it, change it."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, select, update

from reconciler.catalogue import Calibrator
from reconciler.db.engine import dialect_insert
from reconciler.db.models import BandpassCalibrator
from reconciler.errors import NotFoundError


def all_calibrators(conn: Connection, *, active_only: bool = False) -> list[Calibrator]:
    """The registered calibrators, by name."""
    stmt = select(BandpassCalibrator).order_by(BandpassCalibrator.name)
    if active_only:
        stmt = stmt.where(BandpassCalibrator.active.is_(True))
    return [
        Calibrator(
            name=row.name,
            ra_deg=row.ra_deg,
            dec_deg=row.dec_deg,
            flux_jy=row.flux_jy,
            dec_tolerance_deg=row.dec_tolerance_deg,
            active=row.active,
        )
        for row in conn.execute(stmt)
    ]


def calibrator_id(conn: Connection, name: str) -> int:
    """The id of the calibrator called ``name``."""
    found = conn.execute(
        select(BandpassCalibrator.id).where(BandpassCalibrator.name == name)
    ).scalar()
    if found is None:
        raise NotFoundError(f"no calibrator named {name!r}")
    return found


def upsert_calibrators(
    conn: Connection, calibrators: Iterable[Calibrator], *, overwrite: bool
) -> int:
    """Register calibrators; with ``overwrite`` an existing name takes the new figures.

    Seeding from the catalogue file does not overwrite, so a figure changed by an operator
    (``calibrators add``) or a deactivation survives ``reconciler init``. Returns the number
    of rows inserted or changed.
    """
    rows = [
        {
            "name": c.name,
            "ra_deg": c.ra_deg,
            "dec_deg": c.dec_deg,
            "flux_jy": c.flux_jy,
            "dec_tolerance_deg": c.dec_tolerance_deg,
            "active": c.active,
        }
        for c in calibrators
    ]
    if not rows:
        return 0
    insert = dialect_insert(conn, BandpassCalibrator)
    stmt = insert.values(rows)
    if overwrite:
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={k: stmt.excluded[k] for k in rows[0] if k != "name"},
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["name"])
    return len(conn.execute(stmt.returning(BandpassCalibrator.id)).all())


def set_active(conn: Connection, name: str, active: bool) -> None:
    """Activate or deactivate a calibrator by name."""
    result = conn.execute(
        update(BandpassCalibrator).where(BandpassCalibrator.name == name).values(active=active)
    )
    if result.rowcount != 1:
        raise NotFoundError(f"no calibrator named {name!r}")
