"""Apply: the solution that serves an observation, applied to a frequency-averaged copy of
its MS (:func:`reconciler.io.casa.apply_calibration`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from reconciler.config import Settings
from reconciler.db import artifacts
from reconciler.eligibility import serving_solution
from reconciler.engine.environment import casa_child_env
from reconciler.engine.registry import ActionHandler
from reconciler.errors import PermanentError, TemporaryError
from reconciler.fingerprint import fingerprints
from reconciler.io.confine import confine
from reconciler.model import ActionKind, ClaimedAction
from reconciler.naming import calibrated_ms_path, parse_target
from reconciler.steps.convert import ms_exists
from reconciler.steps.solve import converted_observation, solution_exists


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The observation's MS and the solution that serves it (tables still on disk); one
    made under the current settings is preferred."""
    _, key = parse_target(claimed.key.target)
    work = settings.paths.work
    obs = converted_observation(conn, key, work)
    tolerance = settings.calibration.dec_strip_tolerance_deg
    fingerprint = fingerprints(settings).calibrate
    candidates = [
        s
        for s in artifacts.solutions_valid_during(conn, obs.start_time, obs.end_time)
        if solution_exists(s.tables)
    ]

    def serving(solutions: list[Any]) -> Any:
        return serving_solution(
            solutions,
            dec_deg=obs.dec_deg,
            start=obs.start_time,
            end=obs.end_time,
            tolerance_deg=tolerance,
        )

    chosen = serving([s for s in candidates if s.fingerprint == fingerprint]) or serving(candidates)
    if chosen is None:
        raise TemporaryError(f"no valid calibration solution for observation {key} yet")
    what = f"calibration_solutions.tables of solution {chosen.id}"
    tables = [str(confine(table, work, what=what)) for table in json.loads(chosen.tables)]
    out_ms = calibrated_ms_path(work, key, fingerprint)
    return {
        "key": key,
        "ms": obs.path,
        "tables": tables,
        "solution_id": chosen.id,
        "out_ms": str(confine(out_ms, work, what=f"the copy of {key}")),
        "max_smearing_loss": settings.imaging.max_smearing_loss,
        "fingerprint": fingerprint,
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """CASA child: average the MS in frequency into a new one and apply the tables to it
    (renamed into place)."""
    from reconciler.io.casa import CasaError, apply_calibration

    out_ms = Path(payload["out_ms"])
    if ms_exists(str(out_ms)):
        return {"path": str(out_ms)}
    out_ms.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = apply_calibration(
            payload["ms"],
            payload["tables"],
            out_ms,
            max_smearing_loss=payload["max_smearing_loss"],
            attempt=payload["attempt_id"],
        )
    except CasaError as exc:
        raise PermanentError(str(exc)) from exc
    return {"path": path}


def record(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Record which solution was applied, and where the calibrated MS is."""
    artifacts.record_calibrated(
        conn,
        payload["key"],
        path=result["path"],
        solution_id=payload["solution_id"],
        fingerprint=payload["fingerprint"],
    )


HANDLER = ActionHandler(
    kind=ActionKind.APPLY,
    run="reconciler.steps.apply:run",
    prepare=prepare,
    record=record,
    product_exists=ms_exists,
    child_env=casa_child_env,
)
