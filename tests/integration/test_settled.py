"""A settled world is not observed again until something changes: the change counter moves
with every write to what a pass observes (and not with lease renewals), the clock reaches
a moment the last look named, or the resync comes for what only the files show."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update

from reconciler.config import Settings
from reconciler.db.changes import RACY_SECONDS, world_changes
from reconciler.db.engine import reading, writing
from reconciler.db.models import Action, Event, Image, MosaicGroup, Observation
from reconciler.desired.explicit import request_window
from reconciler.engine.registry import load_registry
from reconciler.service import Reconciler
from tests.conftest import make_settings
from tests.world import OBSERVATION, T0, add_observations, add_solution


class Looks:
    """Counts the full looks (observe) of the passes it wraps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import reconciler.service

        self.count = 0
        real = reconciler.service.observe_in

        def counted(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(reconciler.service, "observe_in", counted)

    def of(self, service: Reconciler) -> int:
        """How many full looks one pass made."""
        before = self.count
        service.run_pass()
        return self.count - before


def counter(engine: Engine) -> int:
    with reading(engine) as conn:
        return world_changes(conn)


def settle(engine: Engine, service: Reconciler) -> None:
    """Pass until a look settles the world: the last pass writes its statuses, the next
    looks once more, and on PostgreSQL one more looks after the counter stood still for
    ``RACY_SECONDS``."""
    service.run_pass()
    service.run_pass()
    time.sleep(RACY_SECONDS[engine.dialect.name])
    service.run_pass()


def phase(engine: Engine, group: int) -> tuple[str, str]:
    with reading(engine) as conn:
        row = conn.execute(select(MosaicGroup).where(MosaicGroup.id == group)).one()
    return row.phase, row.status_reason


@pytest.fixture
def waiting(engine: Engine, settings: Settings) -> tuple[int, list[datetime]]:
    """Three observations imaged, in a window of five still waiting for its data; the
    clock is a list the test moves."""
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    group = request_window(
        engine, T0, T0 + 5 * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id
    return group, [T0 + 4 * OBSERVATION]


def service_at(engine: Engine, settings: Settings, clock: list[datetime]) -> Reconciler:
    return Reconciler(engine, settings, load_registry(settings), clock=lambda: clock[0])


def test_a_settled_world_is_looked_at_again_only_when_something_changes(
    engine, settings, waiting, monkeypatch
):
    group, clock = waiting
    service = service_at(engine, settings, clock)
    looks = Looks(monkeypatch)
    settle(engine, service)
    assert phase(engine, group)[0] == "waiting"

    assert looks.of(service) == 0, "nothing changed: the pass does not observe"
    assert looks.of(service) == 0

    # A change by plain SQL, as a user would make it, is seen by the next pass.
    with writing(engine) as conn:
        conn.execute(text("UPDATE mosaic_groups SET paused = true WHERE id = :g"), {"g": group})
    assert looks.of(service) == 1
    assert phase(engine, group)[0] == "paused"

    with writing(engine) as conn:
        conn.execute(text("UPDATE mosaic_groups SET paused = false WHERE id = :g"), {"g": group})
    settle(engine, service)
    assert phase(engine, group)[0] == "waiting"
    assert looks.of(service) == 0

    # The clock reaches the window's arrival deadline: the pass looks, and the group goes on
    # with the observations it has.
    clock[0] = T0 + 5 * OBSERVATION
    assert looks.of(service) >= 1
    assert phase(engine, group)[0] == "published"


def test_a_new_observation_from_discovery_ends_a_settled_world(
    engine, settings, waiting, monkeypatch
):
    group, clock = waiting
    service = service_at(engine, settings, clock)
    looks = Looks(monkeypatch)
    settle(engine, service)
    assert "data so far end" in phase(engine, group)[1]

    add_observations(engine, 2, start=T0 + 3 * OBSERVATION)
    clock[0] = T0 + 6 * OBSERVATION
    assert looks.of(service) >= 1
    assert phase(engine, group)[0] == "published"


def test_the_end_of_a_backoff_ends_a_settled_world(engine, tmp_path, db_url, monkeypatch):
    settings = make_settings(tmp_path, db_url, retry={"base_delay_seconds": 600.0})
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    (settings.paths.work / "behaviour.json").write_text(
        f'{{"convert obs:{keys[1]}": {{"fail": "temporary", "fail_times": 1}}}}'
    )
    group = request_window(
        engine, T0, T0 + 3 * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id
    clock = [T0 + timedelta(days=1)]
    service = service_at(engine, settings, clock)
    looks = Looks(monkeypatch)
    settle(engine, service)
    assert "retrying after" in phase(engine, group)[1]
    assert looks.of(service) == 0

    clock[0] += timedelta(seconds=601)
    assert looks.of(service) >= 1
    assert phase(engine, group)[0] == "published"


def test_a_product_removed_by_hand_is_found_by_the_resync(
    engine, tmp_path, db_url, waiting, monkeypatch
):
    settings = make_settings(tmp_path, db_url, passes={"resync_minutes": 0.05})
    _, clock = waiting
    service = service_at(engine, settings, clock)
    looks = Looks(monkeypatch)
    settle(engine, service)
    with reading(engine) as conn:
        tile = Path(conn.execute(select(Image.path).limit(1)).scalar_one())
    tile.unlink()  # no database row changes: only a look at the files can tell
    assert looks.of(service) == 0
    assert not tile.exists()

    time.sleep(3.1)
    assert looks.of(service) >= 1
    assert tile.exists(), "the resync found the tile gone, and the pass made it again"


def test_resync_minutes_zero_looks_on_every_pass(engine, tmp_path, db_url, waiting, monkeypatch):
    settings = make_settings(tmp_path, db_url, passes={"resync_minutes": 0.0})
    _, clock = waiting
    service = service_at(engine, settings, clock)
    looks = Looks(monkeypatch)
    settle(engine, service)
    assert looks.of(service) == 1


def test_writes_to_what_a_pass_observes_count_and_lease_renewals_do_not(engine, settings, waiting):
    service_at(engine, settings, waiting[1]).run_pass()  # members, tiles and their rows
    with writing(engine) as conn:
        conn.execute(
            Action.__table__.insert(),
            [{"kind": "convert", "target": "obs:x", "generation": 0, "priority": T0}],
        )
    start = counter(engine)
    renewals = {"heartbeat_at": T0, "lease_expires_at": T0, "lease_owner": "w", "started_at": T0}
    unseen = [
        update(Action).values(**renewals),
        update(Observation).values(updated_at=T0, judge_again_at=T0, n_subbands=15),
        Event.__table__.insert().values(kind="note", message="a note"),
    ]
    for statement in unseen:
        with writing(engine) as conn:
            conn.execute(statement)
    assert counter(engine) == start, "lease renewals and bookkeeping count no change"

    seen = [
        update(Action).values(state="running"),
        update(Observation).values(ready=False),
        update(MosaicGroup).values(paused=True),
        text("DELETE FROM mosaic_group_members"),
        text("UPDATE images SET removed_at = '2025-03-02 00:00:00'"),
    ]
    for statement in seen:
        before = counter(engine)
        with writing(engine) as conn:
            conn.execute(statement)
            if engine.dialect.name == "postgresql":
                # Counted as the transaction commits, not before.
                assert counter(engine) == before
        assert counter(engine) > before, f"{statement} counts"

    before = counter(engine)
    with pytest.raises(RuntimeError), writing(engine) as conn:
        conn.execute(update(MosaicGroup).values(paused=False))
        raise RuntimeError("rolled back")
    assert counter(engine) == before, "a rolled-back change is no change"
