"""Test-only actions: the engine's tests plug these in instead of the science steps.

Each action writes a small product file under ``<work>/products`` (temporary name, then
rename), appends one line per run to ``<work>/runs.jsonl`` (who ran what, when), and
records its artifact with the same functions the real steps use. How an action behaves is
read from ``<work>/behaviour.json``: ``{"convert obs:KEY": {"fail": "temporary",
"fail_times": 2}, "*": {"sleep": 0.2}}`` (label, then kind, then ``*``); ``{"prepare":
"permanent"}`` makes the parent-side preparation refuse.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from reconciler.config import Settings
from reconciler.db import artifacts
from reconciler.db.models import BandpassCalibrator, CalibrationSolution, Observation
from reconciler.engine.registry import ActionHandler, ActionRegistry
from reconciler.errors import PermanentError
from reconciler.fingerprint import STAGE_OF_KIND, fingerprints, product_fingerprint
from reconciler.io.checksum import sha256
from reconciler.model import ActionKind, ClaimedAction
from reconciler.naming import parse_target
from reconciler.steps import publish

BEHAVIOUR_FILE = "behaviour.json"


def registry() -> ActionRegistry:
    """Handlers for every kind, all backed by :func:`tests.engine_children.perform`."""
    return ActionRegistry(
        ActionHandler(
            kind=kind,
            run="tests.engine_children:perform",
            prepare=prepare,
            record=record,
            product_exists=lambda path: Path(path).exists(),
        )
        for kind in ActionKind
    )


def fits_registry() -> ActionRegistry:
    """The test actions, with a mosaic step that stages real FITS and the real publish."""
    return publishing_registry("tests.engine_children:stage_fits_mosaic")


def publishing_registry(mosaic_run: str) -> ActionRegistry:
    """The test actions, with the mosaic step ``mosaic_run`` (``"module:function"``, run in
    the child) staging a real FITS mosaic, and the real publish."""
    mosaic = ActionHandler(
        kind=ActionKind.MOSAIC,
        run=mosaic_run,
        prepare=prepare,
        record=record,
        product_exists=lambda path: Path(path).exists(),
    )
    kept = [h for h in registry() if h.kind not in (ActionKind.MOSAIC, ActionKind.PUBLISH)]
    return ActionRegistry([*kept, mosaic, publish.HANDLER])


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    work = settings.paths.work
    behaviours = {}
    if (work / BEHAVIOUR_FILE).exists():
        behaviours = json.loads((work / BEHAVIOUR_FILE).read_text())
    label = f"{claimed.key.kind} {claimed.key.target}"
    behaviour = (
        behaviours.get(label) or behaviours.get(str(claimed.key.kind)) or behaviours.get("*", {})
    )
    if behaviour.get("prepare") == "permanent":
        raise PermanentError(f"{label} cannot be prepared")
    fingerprint = None
    if claimed.key.kind in STAGE_OF_KIND:
        fingerprint = fingerprints(settings).of(claimed.key.kind)
    elif claimed.key.kind is ActionKind.PUBLISH:
        tiles = artifacts.tile_fingerprints(conn, int(parse_target(claimed.key.target)[1]))
        fingerprint = product_fingerprint(fingerprints(settings), tiles)
    return {
        "label": label,
        "fingerprint": fingerprint,
        "kind": str(claimed.key.kind),
        "target": claimed.key.target,
        "generation": claimed.key.generation,
        "attempt": claimed.attempts,
        "token": claimed.token,
        "work": str(work),
        "behaviour": behaviour,
    }


def record(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    kind = claimed.key.kind
    _, name = parse_target(claimed.key.target)
    path = result["path"]
    fingerprint = payload["fingerprint"]
    now = datetime.now(UTC)
    if kind in (ActionKind.MOSAIC, ActionKind.CATALOGUE, ActionKind.ASSESS, ActionKind.PUBLISH):
        group_id, generation = int(name), claimed.key.generation
        if kind is ActionKind.ASSESS:
            # A behaviour {"quality": "failed"} makes the verdict a failure.
            quality = payload["behaviour"].get("quality", "passed")
            artifacts.record_quality(
                conn, group_id, generation, quality=quality, summary=f"test verdict {quality}",
                figures={}, figure_path=path,
            )  # fmt: skip
        elif kind is ActionKind.MOSAIC:
            artifacts.stage_mosaic(conn, group_id, generation, stage_path=path)
        elif kind is ActionKind.CATALOGUE:
            artifacts.record_catalogue(
                conn, group_id, generation, path=path, rms_path=path, finder="test",
                finder_version="0", median_rms_jy=None, components=[],
            )  # fmt: skip
        else:
            artifacts.mark_published(
                conn,
                group_id,
                generation,
                published_path=path,
                checksum=sha256(Path(path)),
                fingerprint=fingerprint,
                at=now,
            )
        return
    obs = conn.execute(select(Observation).where(Observation.key == name)).one()
    if kind is ActionKind.CONVERT:
        artifacts.record_measurement_set(
            conn,
            name,
            path=path,
            start=obs.start_time,
            mid=obs.start_time + (obs.end_time - obs.start_time) / 2,
            end=obs.end_time,
            ra_deg=0.0,
            dec_deg=obs.dec_deg,
            n_rows=1,
            n_channels=1,
            fingerprint=fingerprint,
        )
    elif kind is ActionKind.SOLVE:
        calibrator_id = conn.execute(select(BandpassCalibrator.id).limit(1)).scalar_one()
        artifacts.record_solution(
            conn,
            calibrator_id=calibrator_id,
            key=name,
            dec_deg=obs.dec_deg,
            transit=obs.start_time,
            valid_from=obs.start_time - timedelta(hours=24),
            valid_until=obs.start_time + timedelta(hours=24),
            tables=path,
            snr=100.0,
            flagged_fraction=0.0,
            fingerprint=fingerprint,
        )
    elif kind is ActionKind.APPLY:
        solution = conn.execute(select(CalibrationSolution.id).limit(1)).scalar()
        artifacts.record_calibrated(
            conn, name, path=path, solution_id=solution, fingerprint=fingerprint
        )
    elif kind is ActionKind.IMAGE:
        artifacts.record_image(conn, name, path=path, rms_jy=0.001, fingerprint=fingerprint)
