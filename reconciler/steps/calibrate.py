"""Solve calibration on a calibrator transit, and apply the nearest valid solution."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from reconciler.catalogue import choose_calibrator
from reconciler.config import Settings
from reconciler.db import artifacts
from reconciler.db.calibrators import all_calibrators, calibrator_id
from reconciler.db.models import CalibrationSolution, MeasurementSet, Observation
from reconciler.errors import PermanentError, TemporaryError
from reconciler.model import ActionKind, ClaimedAction
from reconciler.naming import calibrated_ms_path, caltable_prefix, parse_target
from reconciler.steps.convert import ms_exists
from reconciler.steps.environment import casa_child_env
from reconciler.steps.registry import ActionHandler

#: A solution with more of its solutions flagged than this is not worth applying.
MAX_FLAGGED_FRACTION = 0.5


def _observation(conn: Connection, key: str) -> Any:
    row = conn.execute(
        select(
            Observation.id,
            Observation.start_time,
            Observation.end_time,
            Observation.dec_deg,
            MeasurementSet.path,
        )
        .outerjoin(MeasurementSet, MeasurementSet.observation_id == Observation.id)
        .where(Observation.key == key)
    ).first()
    if row is None:
        raise PermanentError(f"observation {key} is not in the database")
    if row.path is None:
        raise TemporaryError(f"observation {key} has no MS yet")
    return row


def prepare_solve(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The calibrator, its transit inside this observation, and where the tables go."""
    from reconciler.sky import meridian_transits

    _, key = parse_target(claimed.key.target)
    obs = _observation(conn, key)
    calibrator = choose_calibrator(all_calibrators(conn, active_only=True), obs.dec_deg)
    if calibrator is None:
        raise PermanentError(f"no bandpass calibrator registered for dec {obs.dec_deg:.2f}")
    transits = meridian_transits(
        calibrator.ra_deg, calibrator.dec_deg, obs.start_time, obs.end_time
    )
    if not transits:
        raise PermanentError(f"observation {key} holds no transit of {calibrator.name}")
    validity = timedelta(hours=settings.calibration.validity_hours)
    return {
        "key": key,
        "ms": obs.path,
        "calibrator": calibrator.name,
        "ra_deg": calibrator.ra_deg,
        "dec_deg": calibrator.dec_deg,
        "flux_jy": calibrator.flux_jy,
        "pointing_dec_deg": obs.dec_deg,
        "out_prefix": str(caltable_prefix(settings.paths.work, key)),
        "transit": transits[0].isoformat(),
        "valid_from": (transits[0] - validity).isoformat(),
        "valid_until": (transits[0] + validity).isoformat(),
    }


def run_solve(payload: dict[str, Any]) -> dict[str, Any]:
    """CASA child: solve, unless the tables and their quality record already exist."""
    from dataclasses import asdict

    from reconciler.io.casa import CasaError, solve_calibration

    done = Path(f"{payload['out_prefix']}.quality.json")
    if done.is_file():
        quality = json.loads(done.read_text())
        if all(Path(t).is_dir() for t in quality["tables"]):
            return quality
    Path(payload["out_prefix"]).parent.mkdir(parents=True, exist_ok=True)
    try:
        result = solve_calibration(
            payload["ms"],
            calibrator_ra_deg=payload["ra_deg"],
            calibrator_dec_deg=payload["dec_deg"],
            flux_jy=payload["flux_jy"],
            spectral_index=0.0,
            refant=_reference_antenna(payload["ms"]),
            out_prefix=payload["out_prefix"],
            pointing_dec_deg=payload["pointing_dec_deg"],
        )
    except CasaError as exc:
        raise PermanentError(str(exc)) from exc
    if result.flagged_fraction > MAX_FLAGGED_FRACTION:
        raise PermanentError(
            f"{payload['ms']}: {result.flagged_fraction:.0%} of the solutions are flagged"
        )
    quality = asdict(result)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(quality))
    os.replace(tmp, done)
    return quality


def _reference_antenna(ms: str) -> str:
    """The first antenna with unflagged data: a stable, deterministic choice."""
    import casatools

    table = casatools.table()
    table.open(f"{ms}/ANTENNA")
    try:
        names = list(table.getcol("NAME"))
    finally:
        table.close()
    if not names:
        raise PermanentError(f"{ms}: the ANTENNA table is empty")
    return str(names[0])


def record_solve(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Register the solution; other solutions' rows are never touched."""
    artifacts.record_solution(
        conn,
        calibrator_id=calibrator_id(conn, payload["calibrator"]),
        key=payload["key"],
        dec_deg=payload["pointing_dec_deg"],
        transit=datetime.fromisoformat(payload["transit"]),
        valid_from=datetime.fromisoformat(payload["valid_from"]),
        valid_until=datetime.fromisoformat(payload["valid_until"]),
        tables=json.dumps(list(result["tables"])),
        snr=result["snr_median"],
        flagged_fraction=result["flagged_fraction"],
    )


def prepare_apply(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The observation's MS and the nearest valid solution of its dec strip."""
    _, key = parse_target(claimed.key.target)
    obs = _observation(conn, key)
    tolerance = settings.calibration.dec_strip_tolerance_deg
    middle = obs.start_time + (obs.end_time - obs.start_time) / 2
    candidates = conn.execute(
        select(
            CalibrationSolution.id, CalibrationSolution.tables, CalibrationSolution.transit_time
        ).where(
            func.abs(CalibrationSolution.dec_deg - obs.dec_deg) <= tolerance,
            CalibrationSolution.valid_from <= obs.start_time,
            CalibrationSolution.valid_until >= obs.end_time,
        )
    ).all()
    if not candidates:
        raise TemporaryError(f"no valid calibration solution for observation {key} yet")
    nearest = min(candidates, key=lambda s: (abs(s.transit_time - middle), s.id))
    return {
        "key": key,
        "ms": obs.path,
        "tables": json.loads(nearest.tables),
        "solution_id": nearest.id,
        "out_ms": str(calibrated_ms_path(settings.paths.work, key)),
    }


def run_apply(payload: dict[str, Any]) -> dict[str, Any]:
    """CASA child: copy the MS and apply the tables to the copy (renamed into place)."""
    from reconciler.io.casa import CasaError, apply_calibration

    out_ms = Path(payload["out_ms"])
    if ms_exists(str(out_ms)):
        return {"path": str(out_ms)}
    out_ms.parent.mkdir(parents=True, exist_ok=True)
    try:
        return {"path": apply_calibration(payload["ms"], payload["tables"], out_ms)}
    except CasaError as exc:
        raise PermanentError(str(exc)) from exc


def record_apply(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Record which solution was applied, and where the calibrated MS is."""
    artifacts.record_calibrated(
        conn, payload["key"], path=result["path"], solution_id=payload["solution_id"]
    )


def solution_exists(path: str) -> bool:
    """A solution's tables are all still there."""
    return all(Path(t).is_dir() for t in json.loads(path))


SOLVE = ActionHandler(
    kind=ActionKind.SOLVE,
    run="reconciler.steps.calibrate:run_solve",
    prepare=prepare_solve,
    record=record_solve,
    product_exists=solution_exists,
    child_env=casa_child_env,
)

APPLY = ActionHandler(
    kind=ActionKind.APPLY,
    run="reconciler.steps.calibrate:run_apply",
    prepare=prepare_apply,
    record=record_apply,
    product_exists=ms_exists,
    child_env=casa_child_env,
)
