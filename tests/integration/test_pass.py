"""The reconcile pass end to end on a real database, with test actions in child processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select, text

from reconciler.config import Settings
from reconciler.db.engine import reading, writing
from reconciler.db.models import Action, Event, MosaicGroup
from reconciler.desired.explicit import request_window
from reconciler.engine.registry import load_registry
from reconciler.service import Reconciler
from tests.world import OBSERVATION, T0, add_observations, add_solution

LATER = T0 + timedelta(days=1)


def reconciler_at(engine: Engine, settings: Settings, now: datetime) -> Reconciler:
    return Reconciler(
        engine, settings, load_registry(settings), clock=lambda: now, jitter=lambda: 0.5
    )


def request(engine: Engine, settings: Settings, start: datetime, count: int) -> int:
    end = start + count * OBSERVATION
    return request_window(engine, start, end, max_window=settings.decide_policy.max_window).group_id


def runs(settings: Settings) -> list[dict]:
    path = settings.paths.work / "runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def phases(engine: Engine) -> dict[int, str]:
    with reading(engine) as conn:
        return dict(conn.execute(select(MosaicGroup.id, MosaicGroup.phase)).all())


def test_a_window_is_published_and_a_second_pass_changes_nothing(engine, settings):
    keys = add_observations(engine, 5)
    add_solution(engine, keys[0])
    group = request(engine, settings, T0, 5)

    report = reconciler_at(engine, settings, LATER).run_pass()

    assert not report.failed
    labels = [r["label"] for r in runs(settings)]
    assert sorted(labels) == sorted(
        [f"{k} obs:{key}" for key in keys for k in ("convert", "apply", "image")]
        + [f"{kind} group:{group}" for kind in ("mosaic", "catalogue", "assess", "publish")]
    )
    assert phases(engine) == {group: "published"}
    with reading(engine) as conn:
        status = conn.execute(text("SELECT * FROM mosaic_status")).one()._mapping
        events_before = conn.execute(select(func.count()).select_from(Event)).scalar()
    assert (status["members"], status["converted"], status["calibrated"], status["imaged"]) == (
        5,
        5,
        5,
        5,
    )
    assert status["published_path"].endswith(f"group_{group}_g1.txt")

    again = reconciler_at(engine, settings, LATER).run_pass()

    assert again.actions == [] and again.enqueued == 0
    with reading(engine) as conn:
        assert conn.execute(select(func.count()).select_from(Event)).scalar() == events_before


def test_earliest_window_is_worked_first(engine, settings):
    keys = add_observations(engine, 9)
    add_solution(engine, keys[0])
    late = request(engine, settings, T0 + 6 * OBSERVATION, 3)
    early = request(engine, settings, T0, 3)

    reconciler_at(engine, settings, LATER).run_pass()

    order = [r["label"] for r in runs(settings)]
    assert order.index(f"publish group:{early}") < order.index(f"convert obs:{keys[6]}")
    assert phases(engine) == {early: "published", late: "published"}


def test_overlapping_windows_share_member_work(engine, settings):
    keys = add_observations(engine, 6)
    add_solution(engine, keys[0])
    request(engine, settings, T0, 4)
    request(engine, settings, T0 + 2 * OBSERVATION, 4)

    reconciler_at(engine, settings, LATER).run_pass()

    converts = [r["label"] for r in runs(settings) if r["label"].startswith("convert")]
    assert sorted(converts) == sorted(f"convert obs:{k}" for k in keys)


def test_a_window_without_data_waits_and_says_so(engine, settings):
    future = datetime(2030, 1, 1, tzinfo=UTC)
    group = request(engine, settings, future, 3)

    reconciler_at(engine, settings, future - timedelta(hours=1)).run_pass()

    with reading(engine) as conn:
        row = conn.execute(select(MosaicGroup).where(MosaicGroup.id == group)).one()
    assert row.phase == "waiting"
    assert "waiting for data up to 2030-01-01 00:15:27" in row.status_reason
    assert "no data yet" in row.status_reason


def test_transient_failures_back_off_then_succeed(engine, settings):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    (settings.paths.work / "behaviour.json").write_text(
        json.dumps({f"convert obs:{keys[1]}": {"fail": "temporary", "fail_times": 2}})
    )
    settings = _with(settings, retry={"base_delay_seconds": 60.0})
    group = request(engine, settings, T0, 3)

    first = reconciler_at(engine, settings, LATER).run_pass()
    assert [a.outcome for a in first.actions if a.label == f"convert obs:{keys[1]}"] == ["retry"]
    with reading(engine) as conn:
        action = conn.execute(
            select(Action).where(Action.target == f"obs:{keys[1]}", Action.kind == "convert")
        ).one()
    assert action.state == "pending" and action.attempts == 1
    assert action.not_before == LATER + timedelta(seconds=60)
    assert "passing problem" in action.last_error

    reconciler_at(engine, settings, LATER + timedelta(seconds=61)).run_pass()
    with reading(engine) as conn:
        action = conn.execute(select(Action).where(Action.id == action.id)).one()
    assert action.not_before == LATER + timedelta(seconds=61 + 120), "backoff doubles"

    reconciler_at(engine, settings, LATER + timedelta(seconds=200)).run_pass()
    assert phases(engine) == {group: "published"}


def test_a_permanent_failure_fails_the_group_without_blocking_later_windows(engine, settings):
    keys = add_observations(engine, 6)
    add_solution(engine, keys[0])
    (settings.paths.work / "behaviour.json").write_text(
        json.dumps({f"image obs:{keys[0]}": {"fail": "permanent", "fail_times": 99}})
    )
    early = request(engine, settings, T0, 3)
    late = request(engine, settings, T0 + 3 * OBSERVATION, 3)

    report = reconciler_at(engine, settings, LATER).run_pass()

    assert report.failed
    assert phases(engine) == {early: "failed", late: "published"}
    with reading(engine) as conn:
        status = conn.execute(
            text("SELECT reason, last_error FROM mosaic_status WHERE group_id = :g"), {"g": early}
        ).one()
    assert "broken for good" in status.reason and "broken for good" in status.last_error


def test_retry_command_gives_failed_actions_new_attempts(engine, settings):
    from reconciler.desired.commands import retry

    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    behaviour = settings.paths.work / "behaviour.json"
    behaviour.write_text(json.dumps({"mosaic": {"fail": "permanent", "fail_times": 1}}))
    group = request(engine, settings, T0, 3)
    service = reconciler_at(engine, settings, LATER)
    service.run_pass()
    assert phases(engine) == {group: "failed"}

    max_window = settings.decide_policy.max_window
    assert retry(engine, service.snapshot([group]), group, max_window=max_window) == 1
    # attempts restart at zero, so fail_times=1 fails once more: give it a clean behaviour
    behaviour.write_text("{}")
    service.run_pass()

    assert phases(engine) == {group: "published"}


def test_an_error_while_preparing_fails_the_action_with_its_reason(engine, settings):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    (settings.paths.work / "behaviour.json").write_text(
        json.dumps({"mosaic": {"prepare": "permanent"}})
    )
    group = request(engine, settings, T0, 3)

    report = reconciler_at(engine, settings, LATER).run_pass()

    assert [a.outcome for a in report.actions if a.label.startswith("mosaic")] == ["failed"]
    with reading(engine) as conn:
        row = conn.execute(select(MosaicGroup).where(MosaicGroup.id == group)).one()
    assert row.phase == "failed"
    assert f"mosaic group:{group} cannot be prepared" in row.status_reason


def test_a_new_version_of_an_unchanged_window_is_published_under_its_own_name(engine, settings):
    # The test mosaic step makes the same bytes for every generation, as the real one does
    # when no member changed; the real publish step must still give generation 2 a name.
    from reconciler.desired.late import new_generation
    from reconciler.engine.registry import ActionRegistry
    from reconciler.model import ActionKind
    from reconciler.steps import publish
    from tests import engine_actions

    registry = ActionRegistry(
        [h for h in engine_actions.registry() if h.kind is not ActionKind.PUBLISH]
        + [publish.HANDLER]
    )
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    group = request(engine, settings, T0, 3)
    service = Reconciler(engine, settings, registry, clock=lambda: LATER, jitter=lambda: 0.5)
    service.run_pass()
    with reading(engine) as conn:
        first = conn.execute(select(MosaicGroup.published_path)).scalar_one()

    assert new_generation(engine, group) == 2
    report = service.run_pass()

    assert not report.failed and not report.errors
    with reading(engine) as conn:
        row = conn.execute(select(MosaicGroup).where(MosaicGroup.id == group)).one()
    assert (row.phase, row.generation) == ("published", 2)
    assert row.published_path == first.replace(".fits", "_v2.fits")
    assert Path(first).read_bytes() == Path(row.published_path).read_bytes()


def test_attempts_are_capped(engine, settings):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    (settings.paths.work / "behaviour.json").write_text(
        json.dumps({"mosaic": {"fail": "crash", "fail_times": 99}})
    )
    settings = _with(settings, retry={"max_attempts": 3})
    group = request(engine, settings, T0, 3)

    for step in range(4):
        reconciler_at(engine, settings, LATER + timedelta(minutes=step)).run_pass()

    with reading(engine) as conn:
        action = conn.execute(select(Action).where(Action.kind == "mosaic")).one()
    assert action.state == "failed" and action.attempts == 3
    assert "gave up after 3 attempts" in action.last_error
    assert "exited with status 3" in action.last_error
    assert phases(engine) == {group: "failed"}


def test_a_vanished_product_is_made_again(engine, settings):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    group = request(engine, settings, T0, 3)
    service = reconciler_at(engine, settings, LATER)
    service.run_pass()
    assert phases(engine) == {group: "published"}
    # Someone deletes an image before a new generation is asked for: the pass re-images it.
    name = f"obs:{keys[1]}".replace(":", "_")
    (settings.paths.work / "products" / "image" / f"{name}_g0.txt").unlink()
    with writing(engine) as conn:
        conn.execute(
            MosaicGroup.__table__.update()
            .where(MosaicGroup.id == group)
            .values(generation=2, phase="new")
        )

    service.run_pass()

    labels = [r["label"] for r in runs(settings)]
    assert labels.count(f"image obs:{keys[1]}") == 2
    assert labels.count(f"image obs:{keys[0]}") == 1
    assert phases(engine) == {group: "published"}


def test_pause_resume_and_cancel(engine, settings):
    from reconciler.desired.commands import cancel, set_paused

    keys = add_observations(engine, 6)
    add_solution(engine, keys[0])
    paused = request(engine, settings, T0, 3)
    cancelled = request(engine, settings, T0 + 3 * OBSERVATION, 3)
    service = reconciler_at(engine, settings, LATER)
    service.reconcile()  # queue the first actions of both groups
    assert set_paused(engine, paused, True) >= 1
    assert cancel(engine, cancelled) >= 1

    service.run_pass()
    assert runs(settings) == []
    assert phases(engine) == {paused: "paused", cancelled: "cancelled"}

    set_paused(engine, paused, False)
    service.run_pass()
    assert phases(engine) == {paused: "published", cancelled: "cancelled"}


def test_pass_caps_limit_the_actions_of_one_pass(engine, settings):
    keys = add_observations(engine, 6)
    add_solution(engine, keys[0])
    settings = _with(settings, passes={"max_actions": 4})
    request(engine, settings, T0, 6)

    report = reconciler_at(engine, settings, LATER).run_pass()

    assert len(report.actions) == 4
    assert [a.label for a in report.actions] == [f"convert obs:{k}" for k in keys[:4]]


def test_solving_on_the_calibrator_transit(engine, settings):
    from tests.world import add_calibrator

    keys = add_observations(engine, 4)
    add_calibrator(engine)
    transit = T0 + OBSERVATION / 2  # inside the first observation
    group = request(engine, settings, T0 + OBSERVATION, 3)
    service = Reconciler(
        engine,
        settings,
        load_registry(settings),
        clock=lambda: LATER,
        transits=lambda ra, dec, start, end: [transit],
    )

    service.run_pass()

    labels = [r["label"] for r in runs(settings)]
    assert labels.count(f"solve obs:{keys[0]}") == 1
    assert f"image obs:{keys[0]}" not in labels, "the calibrator observation is not imaged"
    assert phases(engine) == {group: "published"}


def test_no_calibrator_is_reported(engine, settings):
    add_observations(engine, 3)
    group = request(engine, settings, T0, 3)

    reconciler_at(engine, settings, LATER).run_pass()

    with reading(engine) as conn:
        row = conn.execute(select(MosaicGroup).where(MosaicGroup.id == group)).one()
    assert row.phase == "blocked"
    assert "no bandpass calibrator registered for dec 55.57" in row.status_reason


def _with(settings: Settings, **sections: dict) -> Settings:
    from dataclasses import replace

    return replace(
        settings,
        **{name: replace(getattr(settings, name), **changes) for name, changes in sections.items()},
    )


def test_a_database_error_in_one_worker_does_not_stall_the_pass(engine, settings):
    import threading

    from sqlalchemy.exc import OperationalError

    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    group = request(engine, settings, T0, 3)
    settings = _with(settings, passes={"workers": 2, "max_seconds": 900.0})
    service = reconciler_at(engine, settings, LATER)
    claim = service.claim_next
    calls = []

    def claim_once_failing():
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT ...", {}, Exception("server closed the connection"))
        return claim()

    service.claim_next = claim_once_failing
    reports = []
    worker = threading.Thread(target=lambda: reports.append(service.run_pass()))
    worker.start()
    # Far below pass.max_seconds: a pass whose worker died used to spin until then.
    worker.join(timeout=120)

    assert not worker.is_alive(), "the pass ended instead of waiting for its budget to run out"
    assert reports[0].errors == [
        "reconcile or claim failed: OperationalError: server closed the connection"
    ]
    service.run_pass()
    assert phases(engine) == {group: "published"}


def test_a_dead_workers_claim_is_reclaimed_while_a_long_action_runs(engine, settings):
    from reconciler.db import queries
    from reconciler.model import ActionKind

    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    request(engine, settings, T0, 3)
    settings = _with(
        settings, lease={"seconds": 2.0, "heartbeat_seconds": 0.3}, passes={"max_actions": 1}
    )
    (settings.paths.work / "behaviour.json").write_text(json.dumps({"*": {"sleep": 4.0}}))
    live = Reconciler(engine, settings, load_registry(settings), jitter=lambda: 0.5)
    live.reconcile()
    with writing(engine) as conn:
        (dead,) = queries.claim(
            conn,
            owner="other-host:4242:dead",
            kinds=[ActionKind.CONVERT],
            now=datetime.now(UTC),
            lease_seconds=1.0,
        )

    live.run_pass()  # one action of four seconds; the dead lease runs out after one

    (long_action,) = runs(settings)
    with reading(engine) as conn:
        reclaimed_at = conn.execute(
            select(Event.at).where(Event.kind == "lease_expired", Event.action_id == dead.id)
        ).scalar_one()
    assert reclaimed_at < datetime.fromtimestamp(long_action["end"], UTC), (
        "reclaimed by a heartbeat of the running action, not at the next pass"
    )
