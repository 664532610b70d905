"""Builders for database states the engine tests start from (metadata only)."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert

from reconciler.db.engine import writing
from reconciler.db.models import BandpassCalibrator, CalibrationSolution, Observation
from reconciler.naming import observation_key

T0 = datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)
OBSERVATION = timedelta(seconds=24 * 12.885)
DEC = 55.57
#: Where builders put the few files they need; the test session points it at pytest's
#: temporary directory (see tests/conftest.py), which pytest cleans up.
SCRATCH: str | None = None


def add_observations(
    engine: Engine,
    count: int,
    *,
    start: datetime = T0,
    dec_deg: float = DEC,
    ready: bool = True,
) -> list[str]:
    """Insert ``count`` back-to-back observations; returns their keys."""
    rows = []
    for i in range(count):
        begin = start + i * OBSERVATION
        rows.append(
            {
                "key": observation_key(begin),
                "start_time": begin,
                "end_time": begin + OBSERVATION,
                "dec_deg": dec_deg,
                "n_subbands": 16,
                "ready": ready,
            }
        )
    with writing(engine) as conn:
        conn.execute(insert(Observation), rows)
    return [r["key"] for r in rows]


def add_calibrator(engine: Engine, *, name: str = "0834+555", dec_deg: float = DEC) -> int:
    """Register a bandpass calibrator; returns its id."""
    with writing(engine) as conn:
        return conn.execute(
            insert(BandpassCalibrator)
            .values(name=name, ra_deg=128.7288, dec_deg=dec_deg, flux_jy=8.8, dec_tolerance_deg=1.5)
            .returning(BandpassCalibrator.id)
        ).scalar_one()


def add_solution(
    engine: Engine,
    observation_key_: str,
    *,
    dec_deg: float = DEC,
    calibrator: str = "0834+555",
    fingerprint: str | None = None,
) -> None:
    """Register a solution valid ±24 h around T0 for the dec strip, solved on ``calibrator``
    under settings ``fingerprint`` (None: unknown).

    Its "tables" are a real (empty) file, since observe only trusts solutions whose tables
    still exist.
    """
    handle, tables = tempfile.mkstemp(prefix="solution-", suffix=".tables", dir=SCRATCH)
    os.close(handle)
    calibrator_id = add_calibrator(engine, name=calibrator, dec_deg=dec_deg)
    with writing(engine) as conn:
        obs_id = (
            conn.execute(Observation.__table__.select().where(Observation.key == observation_key_))
            .one()
            .id
        )
        conn.execute(
            insert(CalibrationSolution).values(
                calibrator_id=calibrator_id,
                observation_id=obs_id,
                dec_deg=dec_deg,
                transit_time=T0,
                valid_from=T0 - timedelta(hours=24),
                valid_until=T0 + timedelta(hours=24),
                tables=tables,
                fingerprint=fingerprint,
            )
        )
