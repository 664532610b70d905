"""Image: one calibrated observation becomes a restored tile, its primary beam, and a
PB-corrected tile, with beam and rms recorded."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from reconciler.config import Settings
from reconciler.db import artifacts
from reconciler.db.models import CalibratedMS, Observation
from reconciler.engine.environment import casa_child_env
from reconciler.engine.registry import ActionHandler
from reconciler.errors import PermanentError, TemporaryError
from reconciler.fingerprint import fingerprints
from reconciler.io.confine import confine
from reconciler.model import ActionKind, ClaimedAction, Site
from reconciler.naming import image_prefix, parse_target


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The calibrated MS, where the dish pointed, and the imaging parameters."""
    _, key = parse_target(claimed.key.target)
    row = conn.execute(
        select(Observation.start_time, Observation.end_time, Observation.dec_deg, CalibratedMS.path)
        .outerjoin(CalibratedMS, CalibratedMS.observation_id == Observation.id)
        .where(Observation.key == key)
    ).first()
    if row is None:
        raise PermanentError(f"observation {key} is not in the database")
    if row.path is None:
        raise TemporaryError(f"observation {key} is not calibrated yet")
    imaging = settings.imaging
    work = settings.paths.work
    fingerprint = fingerprints(settings).image
    prefix = image_prefix(work, key, fingerprint)
    return {
        "key": key,
        "ms": str(confine(row.path, work, what=f"calibrated_ms.path of {key}")),
        "mid": (row.start_time + (row.end_time - row.start_time) / 2).isoformat(),
        "pointing_dec_deg": row.dec_deg,
        "out_prefix": str(confine(prefix, work, what=f"the image of {key}")),
        "backend": imaging.backend,
        "field_of_view_deg": imaging.field_of_view_deg,
        "niter": imaging.niter,
        "threshold_jy": imaging.threshold_jy,
        "timeout_s": settings.actions.timeout_seconds,
        "site": asdict(settings.site),
        "fingerprint": fingerprint,
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Child process: image (tclean runs in its own CASA child) unless the tiles exist."""
    from datetime import datetime

    from reconciler.io.imaging import ImagingError, image_measurement_set, pointing_icrs

    site = Site(**payload["site"])
    pointing = pointing_icrs(
        datetime.fromisoformat(payload["mid"]), payload["pointing_dec_deg"], site=site
    )
    try:
        result = image_measurement_set(
            payload["ms"],
            payload["out_prefix"],
            field_of_view_deg=payload["field_of_view_deg"],
            backend=payload["backend"],
            niter=payload["niter"],
            threshold_jy=payload["threshold_jy"],
            pointing=pointing,
            timeout_s=payload["timeout_s"],
            site=site,
            attempt=payload["attempt_id"],
        )
    except ImagingError as exc:
        raise PermanentError(str(exc)) from exc
    return {
        "image_path": str(result.image_path),
        "pb_path": str(result.pb_path),
        "pbcor_path": str(result.pbcor_path),
        "beam_major_arcsec": result.beam_major_arcsec,
        "beam_minor_arcsec": result.beam_minor_arcsec,
        "beam_pa_deg": result.beam_pa_deg,
        "rms_jy": result.rms_jy,
    }


def record(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Record the tile (the restored image; its beam beside it), beam, rms and imager."""
    artifacts.record_image(
        conn,
        payload["key"],
        path=result["image_path"],
        pb_path=result["pb_path"],
        beam_major_arcsec=result["beam_major_arcsec"],
        beam_minor_arcsec=result["beam_minor_arcsec"],
        beam_pa_deg=result["beam_pa_deg"],
        rms_jy=result["rms_jy"],
        backend=payload["backend"],
        fingerprint=payload["fingerprint"],
    )


HANDLER = ActionHandler(
    kind=ActionKind.IMAGE,
    run="reconciler.steps.image:run",
    prepare=prepare,
    record=record,
    product_exists=lambda path: Path(path).is_file(),
    child_env=casa_child_env,
)
