"""Catalogue: the source finder on a staged mosaic; its component table and rms map are
staged beside it (published with it) and the components recorded in ``sources``. The
components are then associated with the known sky sources on the mosaic, and each known
source no component detects is measured by forced photometry at its position: one
measurement per sky source per mosaic (``reconciler.db.lightcurves``).

A step of its own between mosaic and publish: a finder that fails or crashes leaves the
staged mosaic as it was, and a retry runs only the search again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from reconciler.association import SkyBox
from reconciler.config import Settings
from reconciler.db import artifacts, lightcurves
from reconciler.engine.environment import plain_child_env
from reconciler.engine.registry import ActionHandler
from reconciler.errors import PermanentError
from reconciler.io.confine import confine
from reconciler.io.photometry import beam_major_arcsec, forced_photometry, mosaic_sky_box
from reconciler.model import ActionKind, ClaimedAction
from reconciler.naming import catalogue_paths, parse_target, rms_map_of


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The staged mosaic of this group generation, where its catalogue goes, and the sky
    sources known on it (within the association radius of its grid)."""
    _, group_text = parse_target(claimed.key.target)
    group_id, generation = int(group_text), claimed.key.generation
    staged = artifacts.staged_mosaic(conn, group_id, generation)
    if staged is None:
        raise PermanentError(f"group {group_id} generation {generation} has no staged mosaic")
    mosaic = confine(
        staged, settings.paths.work, what=f"data_registry.stage_path of group {group_id}"
    )
    if not mosaic.is_file():
        raise PermanentError(f"staged mosaic {mosaic} is missing")
    try:
        box = mosaic_sky_box(mosaic, settings.catalogue.association_radius_beams)
    except (OSError, KeyError) as exc:
        raise PermanentError(f"{mosaic}: no sky grid and restoring beam: {exc}") from exc
    known = lightcurves.sky_sources_in(conn, box)
    sources, rms = catalogue_paths(mosaic)
    return {
        "group_id": group_id,
        "generation": generation,
        "mosaic": str(mosaic),
        "catalogue_path": str(sources),
        "rms_path": str(rms),
        "thresh_pix": settings.catalogue.thresh_pix,
        "thresh_isl": settings.catalogue.thresh_isl,
        "association_radius_beams": settings.catalogue.association_radius_beams,
        "sky_box": [box.ra_low, box.ra_high, box.dec_low, box.dec_high],
        "known_sources": [[i, p.ra_deg, p.dec_deg] for i, p in known.items()],
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Child process: search the mosaic (no-op when its catalogue and rms map are there),
    then measure the known sky sources on it by forced photometry."""
    from reconciler.io.sourcefind import SourceFindError, find_sources

    mosaic = Path(payload["mosaic"])
    if not mosaic.is_file():
        raise PermanentError(f"staged mosaic {mosaic} is missing")
    try:
        found = find_sources(
            mosaic,
            Path(payload["catalogue_path"]),
            Path(payload["rms_path"]),
            # The action's scratch directory: the finder's log goes there.
            workdir=Path.cwd(),
            attempt=payload["attempt_id"],
            thresh_pix=payload["thresh_pix"],
            thresh_isl=payload["thresh_isl"],
        )
    except SourceFindError as exc:
        raise PermanentError(str(exc)) from exc
    known = payload["known_sources"]
    measured = forced_photometry(
        mosaic, found.rms_path, [(ra_deg, dec_deg) for _, ra_deg, dec_deg in known]
    )
    return {
        "path": str(found.catalogue_path),
        "rms_path": str(found.rms_path),
        "finder": found.finder,
        "finder_version": found.finder_version,
        "median_rms_jy": found.median_rms_jy if math.isfinite(found.median_rms_jy) else None,
        "components": [c.as_dict() for c in found.components],
        "beam_major_arcsec": beam_major_arcsec(mosaic),
        "forced": [
            [sky_source_id, flux.flux_jy, flux.flux_err_jy]
            for (sky_source_id, _, _), flux in zip(known, measured, strict=True)
            if flux is not None
        ],
    }


def record(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Record the catalogue, its components and the measurements of the sky sources on it
    (replacing what an earlier attempt recorded)."""
    catalogue_id, source_ids = artifacts.record_catalogue(
        conn,
        payload["group_id"],
        payload["generation"],
        path=result["path"],
        rms_path=result["rms_path"],
        finder=result["finder"],
        finder_version=result["finder_version"],
        median_rms_jy=result["median_rms_jy"],
        components=result["components"],
    )
    lightcurves.record_measurements(
        conn,
        catalogue_id,
        payload["group_id"],
        box=SkyBox(*payload["sky_box"]),
        components=result["components"],
        source_ids=source_ids,
        forced={int(i): (flux, error) for i, flux, error in result["forced"]},
        radius_arcsec=payload["association_radius_beams"] * result["beam_major_arcsec"],
    )


def _catalogue_exists(path: str) -> bool:
    """The component table and the rms map beside it are there."""
    return Path(path).is_file() and rms_map_of(Path(path)).is_file()


HANDLER = ActionHandler(
    kind=ActionKind.CATALOGUE,
    run="reconciler.steps.catalogue:run",
    prepare=prepare,
    record=record,
    product_exists=_catalogue_exists,
    child_env=plain_child_env,
)
