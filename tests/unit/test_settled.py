"""When a worker may skip observing: the settled world's rules, on a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.settled import SettledWorld

NOW = datetime(2025, 3, 1, tzinfo=UTC)


class Monotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def world(resync: float = 600.0) -> tuple[SettledWorld, Monotonic]:
    clock = Monotonic()
    return SettledWorld(resync, clock), clock


def look(settled: SettledWorld, counter: int, **overrides) -> bool:
    """One reconcile: True when it skipped the look."""
    started = settled.monotonic()
    if settled.holds(counter, NOW, read_at=started):
        return True
    values = {"racy_seconds": 0.0, "wrote": False, "turns_at": None} | overrides
    settled.looked(counter, started=started, **values)
    return False


def test_a_look_that_wrote_nothing_settles_until_the_counter_moves():
    settled, _ = world()
    assert not look(settled, 7)
    assert look(settled, 7) and look(settled, 7)
    assert not look(settled, 8)
    assert look(settled, 8)


def test_a_look_that_wrote_does_not_settle():
    settled, _ = world()
    assert not look(settled, 7, wrote=True)
    assert not look(settled, 7)
    assert look(settled, 7)


def test_on_a_racy_counter_only_a_look_started_long_enough_after_it_moved_settles():
    settled, clock = world()
    assert not look(settled, 7, racy_seconds=2.0)
    clock.t += 1.0
    assert not look(settled, 7, racy_seconds=2.0)
    clock.t += 1.5
    assert not look(settled, 7, racy_seconds=2.0)
    assert look(settled, 7)


def test_the_clock_turning_and_the_resync_end_a_settled_world():
    settled, clock = world(resync=600.0)
    turns = NOW + timedelta(minutes=5)
    assert not look(settled, 7, turns_at=turns)
    assert settled.holds(7, NOW + timedelta(minutes=4), read_at=clock.t)
    assert not settled.holds(7, turns, read_at=clock.t)

    settled.looked(7, started=clock.t, racy_seconds=0.0, wrote=False, turns_at=None)
    clock.t += 599.0
    assert look(settled, 7)
    clock.t += 1.0
    assert not look(settled, 7), "the resync is due"
    assert look(settled, 7)


def test_resync_zero_never_settles():
    settled, _ = world(resync=0.0)
    assert not look(settled, 7)
    assert not look(settled, 7)
