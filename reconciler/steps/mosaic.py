"""Mosaic: the member tiles of one group generation become a staged PB²-weighted mosaic."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from reconciler.config import Settings
from reconciler.db import artifacts
from reconciler.db.models import Image, MosaicGroupMember, Observation
from reconciler.engine.environment import plain_child_env
from reconciler.engine.registry import ActionHandler
from reconciler.errors import PermanentError, TemporaryError
from reconciler.io.confine import confine
from reconciler.model import ActionKind, ClaimedAction
from reconciler.naming import parse_target, staging_dir


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The members' tiles in time order and the staging path of this generation."""
    _, group_text = parse_target(claimed.key.target)
    group_id, generation = int(group_text), claimed.key.generation
    rows = conn.execute(
        select(
            Observation.key,
            Observation.start_time,
            Observation.end_time,
            Image.path,
            Image.pb_path,
        )
        .join(MosaicGroupMember, MosaicGroupMember.observation_id == Observation.id)
        .outerjoin(Image, Image.observation_id == Observation.id)
        .where(MosaicGroupMember.group_id == group_id, MosaicGroupMember.role == "member")
        .order_by(Observation.start_time)
    ).all()
    if not rows:
        raise TemporaryError(f"group {group_id} has no members recorded yet")
    missing = [r.key for r in rows if r.path is None or r.pb_path is None]
    if missing:
        raise TemporaryError(f"group {group_id}: not imaged yet: {', '.join(missing)}")
    work = settings.paths.work
    tiles = [
        [
            str(confine(path, work, what=f"images.{column} of {r.key}"))
            for column, path in (("path", r.path), ("pb_path", r.pb_path))
        ]
        for r in rows
    ]
    stage = staging_dir(work, group_id, generation) / "mosaic.fits"
    stage = confine(stage, work, what=f"the staged mosaic of group {group_id}")
    return {
        "group_id": group_id,
        "generation": generation,
        "tiles": tiles,
        "members": [r.key for r in rows],
        "date_obs": rows[0].start_time.isoformat(),
        "date_end": rows[-1].end_time.isoformat(),
        "out_path": str(stage),
        "pb_cutoff": settings.mosaic.pb_cutoff,
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Child process: build the mosaic, its weight map and quicklook (no-op if present)."""
    from reconciler.io.mosaic import MosaicError, Tile, build_mosaic

    tiles = [Tile(Path(image), Path(pb)) for image, pb in payload["tiles"]]
    try:
        result = build_mosaic(
            tiles,
            payload["out_path"],
            pb_cutoff=payload["pb_cutoff"],
            members=payload["members"],
            date_obs=datetime.fromisoformat(payload["date_obs"]),
            date_end=datetime.fromisoformat(payload["date_end"]),
            attempt=payload["attempt_id"],
        )
    except (MosaicError, ValueError) as exc:
        raise PermanentError(str(exc)) from exc
    return {"path": str(result.path), "peak_jy": result.peak_jy, "rms_jy": result.rms_jy}


def record(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Register the staged mosaic of this generation."""
    artifacts.stage_mosaic(
        conn, payload["group_id"], payload["generation"], stage_path=result["path"]
    )


HANDLER = ActionHandler(
    kind=ActionKind.MOSAIC,
    run="reconciler.steps.mosaic:run",
    prepare=prepare,
    record=record,
    product_exists=lambda path: Path(path).is_file(),
    child_env=plain_child_env,
)
