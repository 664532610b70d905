"""A database for the web pages' tests, holding mosaic groups in every phase a person
looks for: one published (a real FITS mosaic with a real PNG quicklook, published by the
real publish step), one failed (its convert action failed for good), and — set as the
service would have written them, since reaching them takes the science steps or another
clock — one held by quality assessment, one insufficient, one waiting for its data, one
publishing, one imaging under a worker's live lease and one backing off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, insert, update

from reconciler.config import Settings
from reconciler.db.engine import make_engine, writing
from reconciler.db.models import Action, MosaicGroup, QualityReport
from reconciler.desired.explicit import request_window
from reconciler.engine.registry import ActionRegistry
from reconciler.service import Reconciler
from tests import engine_actions
from tests.conftest import make_settings
from tests.world import DEC, OBSERVATION, T0, add_observations, add_solution

LATER = T0 + timedelta(days=1)


@dataclass(frozen=True)
class WebWorld:
    """The database and settings, and the group id of each phase."""

    url: str
    settings: Settings
    groups: dict[str, int]


def registry() -> ActionRegistry:
    """The test actions, with the previewed sky mosaic and the real publish."""
    return engine_actions.publishing_registry("tests.engine_children:stage_previewed_mosaic")


def build_world(url: str, root: Path) -> WebWorld:
    """Fill the migrated database at ``url`` (files under ``root``) and return the world."""
    settings = make_settings(root, url)
    engine = make_engine(url)
    try:
        groups = _fill(engine, settings)
    finally:
        engine.dispose()
    return WebWorld(url, settings, groups)


def _fill(engine: Engine, settings: Settings) -> dict[str, int]:
    keys = add_observations(engine, 24)
    add_solution(engine, keys[0])
    max_window = settings.decide_policy.max_window

    def window(first: int, count: int) -> int:
        start = T0 + first * OBSERVATION
        return request_window(
            engine, start, start + count * OBSERVATION, max_window=max_window
        ).group_id

    groups = {
        "published": window(0, 3),
        "failed": window(3, 3),
    }
    broken = f"convert obs:{keys[4]}"
    (settings.paths.work / engine_actions.BEHAVIOUR_FILE).write_text(
        json.dumps({broken: {"fail": "permanent", "fail_times": 99}})
    )
    service = Reconciler(engine, settings, registry(), clock=lambda: LATER, jitter=lambda: 0.5)
    for _ in range(4):
        service.run_pass()
    # No pass runs after these: they stand where the service would have left them.
    staged = {
        "held": (
            "held",
            "held: quality assessment failed (rms 12.1 mJy/beam is 8.20 times the expected "
            "1.48); `reconciler publish --accept {g}` publishes it anyway",
        ),
        "insufficient": ("insufficient", "insufficient: 2 of 3 observations, at least 3 needed"),
        "imaging": ("imaging", "imaging: 1 of 3 tiles made"),
        "waiting": ("waiting", "waiting: no data yet for its window"),
        "publishing": ("publishing", "publishing: copying into the products directory"),
        "backing_off": ("imaging", "imaging: retrying after a passing problem"),
    }
    now = datetime.now(UTC)
    for first, (name, (phase, reason)) in zip((9, 12, 15, 24, 6, 18), staged.items(), strict=True):
        groups[name] = window(first, 3)
        with writing(engine) as conn:
            conn.execute(
                update(MosaicGroup)
                .where(MosaicGroup.id == groups[name])
                .values(
                    phase=phase,
                    status_reason=reason.format(g=groups[name]),
                    status_updated_at=now,
                    dec_deg=DEC,
                )
            )
    figure = _held_qa_figure(settings.paths.work / "staging" / "held" / "mosaic.qa.png")
    with writing(engine) as conn:
        conn.execute(
            insert(QualityReport).values(
                group_id=groups["held"],
                generation=1,
                quality="failed",
                summary="rms 12.1 mJy/beam is 8.20 times the expected 1.48",
                figures="{}",
                figure_path=str(figure),
            )
        )
        conn.execute(
            insert(Action).values(
                kind="image",
                target=f"obs:{keys[15]}",
                group_id=groups["imaging"],
                priority=T0 + 15 * OBSERVATION,
                state="running",
                attempts=1,
                lease_owner="worker-a@host-1",
                lease_token="t-imaging",
                lease_expires_at=now + timedelta(hours=1),
                heartbeat_at=now,
                started_at=now,
            )
        )
        conn.execute(
            insert(Action).values(
                kind="image",
                target=f"obs:{keys[18]}",
                group_id=groups["backing_off"],
                priority=T0 + 18 * OBSERVATION,
                state="pending",
                attempts=1,
                not_before=now + timedelta(hours=1),
                last_error="imaging: a passing problem",
                error_kind="temporary",
            )
        )
    return groups


def _held_qa_figure(path: Path) -> Path:
    """A real PNG where the assess step stages a held mosaic's QA figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(4, 3))
    FigureCanvasAgg(figure)
    figure.add_subplot().hist([0.1, 0.2, 0.2, 0.3], bins=3)
    figure.savefig(path, format="png")
    return path
