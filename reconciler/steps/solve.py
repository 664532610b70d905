"""Solve: bandpass and gain tables from the calibrator transit one observation holds."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from reconciler.config import Settings
from reconciler.db import artifacts
from reconciler.db.calibrators import all_calibrators, calibrator_id
from reconciler.db.models import MeasurementSet, Observation
from reconciler.eligibility import HeldTransit, held_transit
from reconciler.engine.environment import casa_child_env
from reconciler.engine.registry import ActionHandler
from reconciler.errors import PermanentError, TemporaryError
from reconciler.fingerprint import fingerprints
from reconciler.io.confine import confine
from reconciler.model import ActionKind, ClaimedAction, Site
from reconciler.naming import attempt_path, caltable_prefix, parse_target
from reconciler.sky import transit_finder

#: A solution with more of its solutions flagged than this is not worth applying.
MAX_FLAGGED_FRACTION = 0.5


def converted_observation(conn: Connection, key: str, work: Path) -> Any:
    """Observation ``key`` with its time span, pointing and MS path (under ``work``).

    Raises
    ------
    PermanentError
        When the observation is not in the database.
    TemporaryError
        When it has no MS yet.
    OutsideRootError
        When its MS path lies outside ``work``.
    """
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
    confine(row.path, work, what=f"measurement_sets.path of {key}")
    return row


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The calibrator transit this observation holds (at the configured site), and where
    the tables go."""
    _, key = parse_target(claimed.key.target)
    work = settings.paths.work
    obs = converted_observation(conn, key, work)
    calibrators = all_calibrators(conn, active_only=True)
    held = held_transit(
        calibrators,
        transit_finder(settings.site),
        dec_deg=obs.dec_deg,
        start=obs.start_time,
        end=obs.end_time,
    )
    if not isinstance(held, HeldTransit):
        raise PermanentError(f"observation {key}: {held}")
    calibrator, transit = held.calibrator, held.moment
    validity = timedelta(hours=settings.calibration.validity_hours)
    fingerprint = fingerprints(settings).calibrate
    tables = caltable_prefix(work, key, fingerprint)
    return {
        "key": key,
        "ms": obs.path,
        "calibrator": calibrator.name,
        "ra_deg": calibrator.ra_deg,
        "dec_deg": calibrator.dec_deg,
        "flux_jy": calibrator.flux_jy,
        "pointing_dec_deg": obs.dec_deg,
        "out_prefix": str(confine(tables, work, what=f"the tables of {key}")),
        "transit": transit.isoformat(),
        "valid_from": (transit - validity).isoformat(),
        "valid_until": (transit + validity).isoformat(),
        "site": asdict(settings.site),
        "max_smearing_loss": settings.imaging.max_smearing_loss,
        "fingerprint": fingerprint,
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """CASA child: solve, unless the tables and their quality record already exist."""
    from reconciler.io.casa import CasaError, reference_antenna, solve_calibration

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
            refant=reference_antenna(payload["ms"]),
            out_prefix=payload["out_prefix"],
            pointing_dec_deg=payload["pointing_dec_deg"],
            site=Site(**payload["site"]),
            max_smearing_loss=payload["max_smearing_loss"],
            attempt=payload["attempt_id"],
        )
    except CasaError as exc:
        raise PermanentError(str(exc)) from exc
    if result.flagged_fraction > MAX_FLAGGED_FRACTION:
        raise PermanentError(
            f"{payload['ms']}: {result.flagged_fraction:.0%} of the solutions are flagged"
        )
    quality = asdict(result)
    tmp = attempt_path(done, payload["attempt_id"])
    tmp.write_text(json.dumps(quality))
    os.replace(tmp, done)
    return quality


def record(
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
        fingerprint=payload["fingerprint"],
    )


def solution_exists(tables: str) -> bool:
    """The product check of a solution: its tables (a JSON list of paths) are all there."""
    return all(Path(t).is_dir() for t in json.loads(tables))


HANDLER = ActionHandler(
    kind=ActionKind.SOLVE,
    run="reconciler.steps.solve:run",
    prepare=prepare,
    record=record,
    product_exists=solution_exists,
    child_env=casa_child_env,
)
