"""Assess: the quality of a staged mosaic, judged before it is published.

Measures the noise against the radiometer equation, the astrometry and flux scale against
the reference catalogue, the dynamic range, the blank fraction and the restoring beam
(:mod:`reconciler.io.quality`), judges them against the ``[qa]`` limits
(:mod:`reconciler.quality`), draws the QA figure beside the mosaic (published with it) and
records the verdict. A ``failed`` verdict holds the group back (phase ``held``) until
someone accepts it; the measurement never changes the mosaic, so it can run again at will.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from reconciler.config import QualitySettings, Settings
from reconciler.db import artifacts
from reconciler.engine.environment import plain_child_env
from reconciler.engine.registry import ActionHandler
from reconciler.errors import PermanentError
from reconciler.io.confine import confine
from reconciler.model import ActionKind, ClaimedAction
from reconciler.naming import parse_target, quality_figure_of


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The staged mosaic of this group generation, its members' calibrated data and the
    limits to judge by."""
    _, group_text = parse_target(claimed.key.target)
    group_id, generation = int(group_text), claimed.key.generation
    staged = artifacts.staged_mosaic(conn, group_id, generation)
    if staged is None:
        raise PermanentError(f"group {group_id} generation {generation} has no staged mosaic")
    work = settings.paths.work
    mosaic = confine(staged, work, what=f"data_registry.stage_path of group {group_id}")
    members = artifacts.calibrated_members(conn, group_id)
    calibrated = [
        str(confine(path, work, what=f"calibrated_ms.path of {key}"))
        for key, path in members
        if path is not None
    ]
    missing = [key for key, path in members if path is None]
    limits = {
        field.name: str(value) if isinstance(value, Path) else value
        for field in dataclasses.fields(settings.qa)
        for value in [getattr(settings.qa, field.name)]
    }
    return {
        "group_id": group_id,
        "generation": generation,
        "mosaic": str(mosaic),
        "figure_path": str(quality_figure_of(mosaic)),
        "calibrated": calibrated,
        "uncalibrated": missing,
        "limits": limits,
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Child process: measure, judge, and draw the figure."""
    from reconciler.io.quality import QualityError, draw_figure, measure, read_reference, tile_data
    from reconciler.quality import assess

    limits = QualitySettings(
        **{
            **payload["limits"],
            "reference_catalogue": Path(payload["limits"]["reference_catalogue"]),
        }
    )
    mosaic = Path(payload["mosaic"])
    tiles, unreadable = [], []
    for path in payload["calibrated"]:
        try:
            tiles.append(tile_data(Path(path)))
        except QualityError as exc:
            unreadable.append(str(exc))
    gone = [f"{key}: no calibrated data" for key in payload["uncalibrated"]]
    problems = unreadable + gone
    problem = None
    if problems:
        problem = f"{len(problems)} tile(s) without readable calibrated data, first {problems[0]}"
    try:
        reference = read_reference(limits.reference_catalogue)
        figures = measure(
            mosaic,
            tiles,
            reference,
            sefd_jy=limits.sefd_jy,
            efficiency=limits.efficiency,
            spectral_index=limits.reference_spectral_index,
            match_radius_beams=limits.match_radius_beams,
            tile_problem=problem if not tiles else None,
        )
        assessment = assess(figures, limits)
        title = f"group {payload['group_id']} generation {payload['generation']}, {mosaic.name}"
        draw_figure(figures, assessment, title, Path(payload["figure_path"]), payload["attempt_id"])
    except QualityError as exc:
        raise PermanentError(str(exc)) from exc
    return {
        "quality": str(assessment.quality),
        "summary": assessment.summary,
        "figures": _finite(figures.as_dict()),
        "figure_path": payload["figure_path"],
    }


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float made None, so it is plain JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def record(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Record the verdict, its reasons and the figures."""
    artifacts.record_quality(
        conn,
        payload["group_id"],
        payload["generation"],
        quality=result["quality"],
        summary=result["summary"],
        figures=result["figures"],
        figure_path=result["figure_path"],
    )


HANDLER = ActionHandler(
    kind=ActionKind.ASSESS,
    run="reconciler.steps.assess:run",
    prepare=prepare,
    record=record,
    product_exists=lambda path: Path(path).is_file(),
    child_env=plain_child_env,
)
