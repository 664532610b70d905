"""Nothing is read or written outside the configured roots, whatever a row or a symlink
says: sentinel files outside are never touched, and nothing foreign is published."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from reconciler.db import artifacts
from reconciler.db.engine import reading, writing
from reconciler.db.models import CalibrationSolution, Image, MosaicGroup, Observation, RawFile
from reconciler.desired.explicit import request_window
from reconciler.desired.late import new_generation
from reconciler.engine.registry import ActionRegistry
from reconciler.errors import PermanentError
from reconciler.io.confine import OutsideRootError, confine, inside
from reconciler.model import ActionKey, ActionKind, ClaimedAction
from reconciler.naming import measurement_set_path, observation_target
from reconciler.service import Reconciler
from reconciler.steps import convert, image, mosaic
from tests import engine_actions
from tests.world import OBSERVATION, T0, add_observations, add_solution

LATER = T0 + timedelta(days=1)


def sentinel(tmp_path: Path, name: str) -> Path:
    """A file outside every root that nothing may read or change."""
    path = tmp_path / "outside" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"SIMPLE  =                    T / sentinel" * 100)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def claim(kind: ActionKind, target: str, generation: int = 0) -> ClaimedAction:
    return ClaimedAction(
        1, ActionKey(kind, target, generation), None, 1, "test", "token", datetime.now(UTC)
    )


def test_inside_follows_symlinks(tmp_path):
    root = tmp_path / "work"
    (root / "images").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "images" / "2025-03-01").symlink_to(elsewhere)

    assert inside(root / "images" / "x.fits", root)
    assert not inside(root / "images" / "2025-03-01" / "x.fits", root)
    assert not inside(root / ".." / "elsewhere", root)
    with pytest.raises(OutsideRootError, match=r"images\.path of K: .* is outside"):
        confine(elsewhere / "x.fits", root, what="images.path of K")


def test_a_row_pointing_outside_fails_the_action_that_would_read_it(engine, settings, tmp_path):
    (key,) = add_observations(engine, 1)
    outside_raw = sentinel(tmp_path, f"{key}_sb00.hdf5")
    with writing(engine) as conn:
        obs_id = conn.execute(select(Observation.id)).scalar_one()
        conn.execute(
            RawFile.__table__.insert().values(
                path=str(outside_raw), subband=0, size_bytes=1, mtime=0.0, observation_id=obs_id
            )
        )
    before = digest(outside_raw)

    with reading(engine) as conn, pytest.raises(OutsideRootError, match=r"raw_files\.path"):
        convert.prepare(conn, claim(ActionKind.CONVERT, observation_target(key)), settings)
    assert digest(outside_raw) == before


def test_a_work_symlink_pointing_outside_is_never_written_through(engine, settings, tmp_path):
    (key,) = add_observations(engine, 1)
    elsewhere = sentinel(tmp_path, "marker").parent
    (settings.paths.work / "images").mkdir(parents=True)
    (settings.paths.work / "images" / key[:10]).symlink_to(elsewhere)
    with writing(engine) as conn:
        artifacts.record_calibrated(
            conn, key, path=str(settings.paths.work / "cal" / "x.cal.ms"), solution_id=None
        )

    with reading(engine) as conn, pytest.raises(OutsideRootError, match=f"the image of {key}"):
        image.prepare(conn, claim(ActionKind.IMAGE, observation_target(key)), settings)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["marker"]


def test_a_key_that_is_no_time_never_becomes_a_path(tmp_path):
    with pytest.raises(PermanentError, match="not a UTC time"):
        measurement_set_path(tmp_path, "../../etc")


def test_a_foreign_image_is_never_mosaicked_or_published(engine, settings, tmp_path):
    # A published window; then a member's image row is pointed at a file outside the roots
    # and a new version is asked for: the mosaic step refuses, naming the row.
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    group = request_window(
        engine, T0, T0 + 3 * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id
    service = Reconciler(
        engine, settings, engine_actions.registry(), clock=lambda: LATER, jitter=lambda: 0.5
    )
    service.run_pass()
    foreign = sentinel(tmp_path, "bright.fits")
    before = digest(foreign)
    with writing(engine) as conn:
        # The test image step records no primary beam; the real mosaic step needs one.
        conn.execute(update(Image).values(pb_path=Image.path))
        first = conn.execute(select(Observation.id).where(Observation.key == keys[0])).scalar_one()
        conn.execute(
            update(Image)
            .where(Image.observation_id == first)
            .values(path=str(foreign), pb_path=str(foreign))
        )
    products_before = sorted(p.name for p in settings.paths.products.rglob("*"))
    real_mosaic = ActionRegistry(
        [h for h in engine_actions.registry() if h.kind is not ActionKind.MOSAIC] + [mosaic.HANDLER]
    )

    new_generation(engine, group)
    report = Reconciler(
        engine, settings, real_mosaic, clock=lambda: LATER, jitter=lambda: 0.5
    ).run_pass()

    assert [a.outcome for a in report.actions] == ["failed"]
    with reading(engine) as conn:
        row = conn.execute(select(MosaicGroup).where(MosaicGroup.id == group)).one()
    assert row.phase == "failed"
    assert f"images.path of {keys[0]}: {foreign} is outside" in row.status_reason
    assert digest(foreign) == before
    assert sorted(p.name for p in settings.paths.products.rglob("*")) == products_before


def test_solution_tables_outside_the_work_root_are_never_applied(engine, settings, tmp_path):
    from reconciler.steps import apply

    (key,) = add_observations(engine, 1)
    add_solution(engine, key)
    foreign = sentinel(tmp_path, "tables.B").parent
    ms = settings.paths.work / "ms" / key[:10] / f"{key}.ms"
    with writing(engine) as conn:
        conn.execute(
            update(CalibrationSolution).values(tables=json.dumps([str(foreign / "tables.B")]))
        )
        artifacts.record_measurement_set(
            conn, key, path=str(ms), start=T0, mid=T0, end=T0 + OBSERVATION,
            ra_deg=0.0, dec_deg=55.57, n_rows=1, n_channels=1,
        )  # fmt: skip
    (foreign / "tables.B").unlink()
    (foreign / "tables.B").mkdir()  # the solution check wants its tables to be directories

    with reading(engine) as conn, pytest.raises(OutsideRootError, match="calibration_solutions"):
        apply.prepare(conn, claim(ActionKind.APPLY, observation_target(key)), settings)


def test_observe_never_looks_at_solution_tables_outside_the_roots(engine, settings, tmp_path):
    # A solution whose tables lie outside the roots (and do not even exist there) counts as
    # present: observe never stats them, and the apply that would read them fails, naming
    # the row, instead of a solve being queued again and again.
    keys = add_observations(engine, 2)
    add_solution(engine, keys[0])
    foreign = tmp_path / "outside" / "never-made.B"
    with writing(engine) as conn:
        conn.execute(update(CalibrationSolution).values(tables=json.dumps([str(foreign)])))
    request_window(engine, T0, T0 + 2 * OBSERVATION, max_window=settings.decide_policy.max_window)
    registry = engine_actions.registry()
    looked_at: list[str] = []
    solve = registry[ActionKind.SOLVE]
    checked = ActionRegistry(
        [h for h in registry if h.kind is not ActionKind.SOLVE]
        + [
            dataclasses.replace(
                solve, product_exists=lambda tables: looked_at.append(tables) or False
            )
        ]
    )

    snapshot = Reconciler(engine, settings, checked, clock=lambda: LATER).snapshot()

    assert looked_at == []
    (group,) = snapshot.observed
    assert group.calibration.solved
