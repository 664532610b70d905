"""Discovery looks only at what can have changed, on real SQLite and PostgreSQL databases
and a real directory tree (per-day directories, as the correlator writes them).

The tree's files and directories are given mtimes ten days before the pass's clock, so
nothing in it is recent or still being written: what a pass looks at is then only what the
rules say it must.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

import reconciler.discover as discover_module
from reconciler.db.engine import reading
from reconciler.db.models import IncomingDirectory, Observation
from reconciler.discover import DiscoveryReport, discover
from reconciler.engine.registry import load_registry
from reconciler.io.simulator import INTEGRATION_S, simulate_observations
from reconciler.io.watch import ChangeHints, IncomingWatcher
from reconciler.model import ScanPolicy
from reconciler.observations import DiscoveryPolicy
from reconciler.service import Reconciler
from tests.conftest import make_settings

T0 = datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)
OBSERVATION = timedelta(seconds=24 * INTEGRATION_S)
NOW = T0 + timedelta(days=2)
FOUR = DiscoveryPolicy(grace=timedelta(minutes=10), min_subbands=4, expected_subbands=4)
SCAN = ScanPolicy()
#: Ten days before the clock: settled, and long out of the recent window.
OLD = (NOW - timedelta(days=10)).timestamp()


def simulate(out: Path, start: datetime, subbands: tuple[int, ...] = (0, 1, 2, 3)) -> list[Path]:
    """Tiny raw files (3 antennas) of one observation."""
    truth = simulate_observations(
        out, start, 5, 55.57, subbands=subbands, n_antennas=3, channels_per_subband=2
    )
    return list(truth.files)


def age(*paths: Path) -> None:
    """Give ``paths`` the old mtime (directories last, after their entries)."""
    for path in paths:
        os.utime(path, (OLD, OLD))


def old_tree(tmp_path: Path) -> tuple[Path, dict[str, list[Path]]]:
    """``incoming/<day>/`` for two days, one observation each, all of it ten days old."""
    incoming = tmp_path / "incoming"
    days: dict[str, list[Path]] = {}
    for day in (0, 1):
        start = T0 + timedelta(days=day)
        directory = incoming / start.strftime("%Y-%m-%d")
        source = simulate(tmp_path / "source" / directory.name, start)
        directory.mkdir(parents=True)
        days[directory.name] = [Path(shutil.copy2(f, directory / f.name)) for f in source]
        age(*days[directory.name], directory)
    age(incoming)
    return incoming, days


def observations(engine: Engine) -> dict[str, dict]:
    with reading(engine) as conn:
        rows = conn.execute(select(Observation)).mappings()
        return {row["key"]: dict(row) for row in rows}


@pytest.fixture
def looked_at(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every directory discovery lists and every raw-looking entry it stats, by pass."""
    seen: dict[str, list[str]] = {"listed": [], "stat": []}
    real_list, real_stat = discover_module._list, discover_module._stat

    def listing(directory: str):
        seen["listed"].append(directory)
        return real_list(directory)

    def stat(path: str):
        seen["stat"].append(path)
        return real_stat(path)

    monkeypatch.setattr(discover_module, "_list", listing)
    monkeypatch.setattr(discover_module, "_stat", stat)
    return seen


def run(engine: Engine, incoming: Path, after: timedelta, **kwargs) -> DiscoveryReport:
    return discover(engine, incoming, now=NOW + after, policy=FOUR, scan=SCAN, **kwargs)


def test_the_first_pass_walks_everything_and_a_quiet_pass_then_looks_at_the_root_only(
    engine, tmp_path, looked_at
):
    incoming, days = old_tree(tmp_path)

    first = run(engine, incoming, timedelta(0))
    assert first.resynced and len(first.new_files) == 8
    assert sorted(looked_at["listed"]) == sorted(
        map(str, [incoming, *map(incoming.joinpath, days)])
    )
    assert len(observations(engine)) == 2
    looked_at["listed"].clear()
    looked_at["stat"].clear()

    quiet = run(engine, incoming, timedelta(minutes=1))

    assert quiet.found_nothing and not quiet.swept and not quiet.resynced
    assert quiet.directories_checked == 1, "the root; the day directories are not recent"
    assert looked_at == {"listed": [], "stat": []}


def test_a_new_day_directory_is_found_by_the_next_pass(engine, tmp_path):
    incoming, _ = old_tree(tmp_path)
    run(engine, incoming, timedelta(0))

    start = T0 + timedelta(days=2)
    arrived = simulate(incoming / start.strftime("%Y-%m-%d"), start)
    report = run(engine, incoming, timedelta(minutes=1))

    assert not report.swept
    assert sorted(report.new_files) == sorted(arrived)
    assert len(report.observations_created) == 1


def test_a_late_file_in_an_old_directory_waits_for_the_sweep_unless_the_kernel_says(
    engine, tmp_path
):
    incoming, days = old_tree(tmp_path)
    run(engine, incoming, timedelta(0))
    late = [
        simulate(tmp_path / "late", T0 + timedelta(days=day) + 2 * OBSERVATION, (0,))[0]
        for day in (0, 1)
    ]
    first_day, second_day = (incoming / name for name in sorted(days))
    unannounced = Path(shutil.copy2(late[0], first_day / late[0].name))
    announced = Path(shutil.copy2(late[1], second_day / late[1].name))
    age(unannounced, announced)

    assert run(engine, incoming, timedelta(minutes=1)).found_nothing
    events = ChangeHints(directories=frozenset({str(second_day)}))
    assert run(engine, incoming, timedelta(minutes=2), hints=events).new_files == (announced,)
    swept = run(engine, incoming, timedelta(minutes=3) + SCAN.sweep)
    assert swept.swept and swept.new_files == (unannounced,)


def test_a_file_rewritten_in_place_is_found_by_its_event_or_by_the_resync(engine, tmp_path):
    incoming, days = old_tree(tmp_path)
    run(engine, incoming, timedelta(0))
    rewritten = days[sorted(days)[0]][0]
    rewritten.write_bytes(rewritten.read_bytes()[:3000])  # truncated in place
    age(rewritten, rewritten.parent)
    os.utime(rewritten, (OLD + 60, OLD + 60))

    assert run(engine, incoming, timedelta(minutes=1)).found_nothing
    assert run(engine, incoming, timedelta(minutes=1) + SCAN.sweep).found_nothing
    hinted = run(
        engine, incoming, timedelta(hours=1), hints=ChangeHints(files=frozenset({str(rewritten)}))
    )
    assert hinted.changed_files == (rewritten,) and rewritten in hinted.errors

    # Touched again, still without an event: the daily resync finds it.
    os.utime(rewritten, (OLD, OLD))
    resynced = run(engine, incoming, timedelta(days=1, hours=1))
    assert resynced.resynced and resynced.changed_files == (rewritten,)


def test_a_file_still_being_written_is_looked_at_every_pass(engine, tmp_path):
    incoming, _ = old_tree(tmp_path)
    run(engine, incoming, timedelta(0))
    start = T0 + timedelta(days=2)
    source = simulate(tmp_path / "source" / "new", start, (0,))[0]
    growing = incoming / start.strftime("%Y-%m-%d") / source.name
    growing.parent.mkdir()
    whole = source.read_bytes()
    growing.write_bytes(whole[:3000])  # the correlator is still writing it

    first = run(engine, incoming, timedelta(minutes=1))
    assert first.new_files == (growing,) and growing in first.errors
    with growing.open("ab") as rest:  # in place: the directory's mtime does not move
        rest.write(whole[3000:])
    done = run(engine, incoming, timedelta(minutes=2))
    assert done.changed_files == (growing,) and not done.errors


def test_a_removed_day_directory_makes_its_observation_not_ready(engine, tmp_path):
    incoming, days = old_tree(tmp_path)
    run(engine, incoming, timedelta(0))
    removed = incoming / sorted(days)[0]
    shutil.rmtree(removed)

    report = run(engine, incoming, timedelta(minutes=1))

    assert sorted(report.vanished_files) == sorted(days[removed.name])
    assert [obs["ready"] for obs in observations(engine).values()].count(False) == 1
    with reading(engine) as conn:
        recorded = set(conn.execute(select(IncomingDirectory.path)).scalars())
    assert str(removed) not in recorded


def test_a_new_directory_seen_by_one_service_is_not_listed_again_by_another(engine, tmp_path):
    """The marks are shared: a second service (or host) on the same database and tree sees
    the directory already listed and every file already recorded."""
    incoming, _ = old_tree(tmp_path)
    run(engine, incoming, timedelta(0))
    start = T0 + timedelta(days=2)
    directory = incoming / start.strftime("%Y-%m-%d")
    simulate(directory, start)
    time.sleep(2.1)  # past the racy margin, so the listing is trusted

    first = run(engine, incoming, timedelta(minutes=1))
    second = run(engine, incoming, timedelta(minutes=1, seconds=1))

    assert first.directories_listed == 2 and len(first.new_files) == 4
    assert second.found_nothing and second.directories_listed == 0


def test_the_watcher_names_the_directories_and_files_touched(tmp_path):
    incoming = tmp_path / "incoming"
    day = incoming / "2025-03-01"
    day.mkdir(parents=True)
    watcher = IncomingWatcher(incoming)
    try:
        assert watcher.drain().overflowed, "what happened before the watch is unknown"
        assert watcher.running
        raw = day / "2025-03-01T00:00:00_sb00.hdf5"
        raw.write_bytes(b"x")
        (day / "notes.txt").write_text("not a raw file")
        new_day = incoming / "2025-03-02"
        new_day.mkdir()

        hints = _drain_until(
            watcher, lambda h: str(raw) in h.files and str(new_day) in h.directories
        )

        assert str(raw) in hints.files and str(day) in hints.directories
        assert str(day / "notes.txt") not in hints.files
        assert str(incoming) in hints.directories, "the new directory's parent"
        assert not hints.overflowed
        assert watcher.drain() == ChangeHints()
    finally:
        watcher.stop()
    assert not watcher.running


def _drain_until(watcher: IncomingWatcher, enough, timeout_s: float = 10.0) -> ChangeHints:
    """Events arrive on the observer's thread: gather them until ``enough`` holds."""
    gathered = ChangeHints()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        gathered |= watcher.drain()
        if enough(gathered):
            return gathered
        time.sleep(0.05)
    raise AssertionError(f"events did not arrive within {timeout_s} s: {gathered}")


def test_a_watching_service_finds_a_late_file_in_an_old_directory_at_its_next_pass(
    engine, db_url, tmp_path
):
    incoming, days = old_tree(tmp_path)
    settings = make_settings(
        tmp_path, db_url, discovery={"min_subbands": 4, "expected_subbands": 4}
    )
    service = Reconciler(engine, settings, load_registry(settings), clock=lambda: NOW)
    service.watch_incoming()
    try:
        assert service.discover().resynced
        late = simulate(tmp_path / "late", T0 + 2 * OBSERVATION, (0,))[0]
        arrived = Path(shutil.copy2(late, incoming / sorted(days)[0] / late.name))
        age(arrived)

        deadline = time.monotonic() + 10
        report = service.discover()
        while not report.new_files and time.monotonic() < deadline:
            time.sleep(0.05)
            report = service.discover()
    finally:
        service.stop_watching()

    assert report.new_files == (arrived,)
    assert not report.swept, "found by its event, not by a sweep"
