"""Retention gives disk back: the intermediates of settled windows go after the keep time,
nothing a window still needs, nothing outside the work root, and what is needed again is
made again. Logs are rotated and old action logs removed."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from reconciler.config import RetentionSettings
from reconciler.db.engine import reading, writing
from reconciler.db.models import CalibratedMS, Image, MeasurementSet, MosaicGroup, Observation
from reconciler.desired.explicit import request_window
from reconciler.io.logs import rotate
from reconciler.retention import remove_old_action_logs
from reconciler.service import Reconciler
from tests import engine_actions
from tests.world import OBSERVATION, T0, add_observations, add_solution

KEEP = timedelta(hours=24)
INTERMEDIATES = (MeasurementSet, CalibratedMS, Image)


class Clock:
    """The pass clock, after the wall clock: artifacts' ``created_at`` is the database's."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + 2 * KEEP

    def __call__(self) -> datetime:
        return self.now


def intermediates(engine) -> dict[str, tuple[Path, datetime | None]]:
    """Each intermediate as ``"<table> <observation key>"``: its path and ``removed_at``."""
    found = {}
    with reading(engine) as conn:
        for model in INTERMEDIATES:
            rows = conn.execute(
                select(Observation.key, model.path, model.removed_at).join(
                    Observation, Observation.id == model.observation_id
                )
            )
            for key, path, removed_at in rows:
                found[f"{model.__tablename__} {key}"] = (Path(path), removed_at)
    return found


def service_for(engine, settings) -> Reconciler:
    return Reconciler(
        engine, settings, engine_actions.registry(), clock=Clock(), jitter=lambda: 0.5
    )


def published_window(
    engine, settings, first: int, count: int, service: Reconciler, early: timedelta = timedelta(0)
) -> int:
    """Request the window of observations ``first``.. (``early``: opening that much before
    the first) and run passes until it is published; returns the group id."""
    start = T0 + first * OBSERVATION - early
    group = request_window(
        engine, start, start + count * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id
    for _ in range(5):
        service.run_pass()
        with reading(engine) as conn:
            phase = conn.execute(select(MosaicGroup.phase).where(MosaicGroup.id == group)).scalar()
        if phase == "published":
            return group
    raise AssertionError(f"group {group} is {phase}")


def test_intermediates_of_a_published_window_go_after_the_keep_time(engine, settings):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    service = service_for(engine, settings)
    published_window(engine, settings, 0, 3, service)
    made = intermediates(engine)
    assert len(made) == 9 and all(path.exists() for path, _ in made.values())

    service.clock.now += KEEP - timedelta(minutes=1)
    assert service.retain(force=True) == 0, "within the keep time"
    service.clock.now += timedelta(minutes=2)
    assert service.retain(force=True) == 9

    after = intermediates(engine)
    assert all(not path.exists() for path, _ in after.values())
    assert {removed for _, removed in after.values()} == {service.clock.now}
    assert service.retain(force=True) == 0, "each removed once"
    with reading(engine) as conn:
        published = conn.execute(select(MosaicGroup.published_path)).scalar_one()
    assert Path(published).exists(), "the product stays"


def test_what_a_window_still_needs_stays_and_is_made_again_when_needed(engine, settings):
    keys = add_observations(engine, 5)
    add_solution(engine, keys[0])
    service = service_for(engine, settings)
    published_window(engine, settings, 0, 3, service)
    # A second window shares the third observation and waits (paused) past the keep time.
    second = request_window(
        engine,
        T0 + 2 * OBSERVATION,
        T0 + 5 * OBSERVATION,
        max_window=settings.decide_policy.max_window,
    ).group_id
    with writing(engine) as conn:
        conn.execute(update(MosaicGroup).where(MosaicGroup.id == second).values(paused=True))
    service.run_pass()
    service.clock.now += 2 * KEEP

    removed = service.retain(force=True)

    after = intermediates(engine)
    shared = [name for name in after if name.endswith(keys[2])]
    assert removed == 6 and shared
    assert all(after[name][1] is None and after[name][0].exists() for name in shared)

    # Another window over the first observations needs their intermediates: made again.
    with writing(engine) as conn:
        conn.execute(update(MosaicGroup).where(MosaicGroup.id == second).values(paused=False))
    published_window(engine, settings, 0, 3, service, early=timedelta(minutes=1))
    again = intermediates(engine)
    assert all(again[f"{m.__tablename__} {keys[0]}"][1] is None for m in INTERMEDIATES)
    assert all(again[f"{m.__tablename__} {keys[0]}"][0].exists() for m in INTERMEDIATES)


def test_an_intermediate_outside_the_work_root_is_left_alone(engine, settings, tmp_path, caplog):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    service = service_for(engine, settings)
    published_window(engine, settings, 0, 3, service)
    outside = tmp_path / "elsewhere" / "not-ours.ms"
    outside.mkdir(parents=True)
    (outside / "table.dat").write_bytes(b"someone else's")
    with writing(engine) as conn:
        first = conn.execute(select(MeasurementSet.id).order_by(MeasurementSet.id)).first()
        conn.execute(
            update(MeasurementSet).where(MeasurementSet.id == first.id).values(path=str(outside))
        )
    service.clock.now += 2 * KEEP

    service.retain(force=True)

    assert (outside / "table.dat").read_bytes() == b"someone else's"
    assert f"{outside} is outside {settings.paths.work}; left as it is" in caplog.text


def test_retention_switched_off_removes_nothing(engine, settings):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    settings = dataclasses.replace(settings, retention=RetentionSettings(intermediates=False))
    service = service_for(engine, settings)
    published_window(engine, settings, 0, 3, service)
    service.clock.now += 2 * KEEP

    assert service.retain(force=True) == 0
    assert all(path.exists() for path, _ in intermediates(engine).values())


def test_a_log_over_its_limit_is_set_aside_keeping_a_few(tmp_path):
    log = tmp_path / "casa.log"
    for generation in range(4):
        log.write_text(f"generation {generation} " * 10)
        assert rotate(log, max_bytes=50, keep=2)
    log.write_text("small")
    assert not rotate(log, max_bytes=50, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["casa.log", "casa.log.1", "casa.log.2"]
    assert (tmp_path / "casa.log.1").read_text().startswith("generation 3")
    assert (tmp_path / "casa.log.2").read_text().startswith("generation 2")


def test_action_logs_not_written_for_long_are_removed(settings):
    logs = settings.paths.work / "logs" / "actions"
    logs.mkdir(parents=True)
    old, recent = logs / "convert_obs_old.log", logs / "convert_obs_recent.log"
    old.write_text("old")
    recent.write_text("recent")
    long_ago = time.time() - (settings.retention.log_days + 1) * 86400
    os.utime(old, (long_ago, long_ago))

    assert remove_old_action_logs(settings) == 1
    assert not old.exists() and recent.exists()
