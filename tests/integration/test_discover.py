"""Discovery of raw files into observations, on real SQLite and PostgreSQL databases.

Raw files come from the simulator into a ``source`` directory and "arrive" in the incoming
directory by copy (mtime preserved), so a test controls which subbands exist and when.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select

import reconciler.discover as discover_module
from reconciler.db.engine import reading, writing
from reconciler.db.models import Observation, RawFile
from reconciler.discover import DiscoveryReport, discover
from reconciler.io.simulator import INTEGRATION_S, simulate_observations
from reconciler.naming import observation_key
from reconciler.observations import DiscoveryPolicy

T0 = datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)
OBSERVATION = timedelta(seconds=24 * INTEGRATION_S)
DEC = 55.57
NOW = datetime(2025, 3, 1, 1, 0, 0, tzinfo=UTC)
GRACE = timedelta(minutes=10)
#: Four subbands make an observation in most tests: enough to miss some, quick to write.
FOUR = DiscoveryPolicy(grace=GRACE, min_subbands=4, expected_subbands=4)


def simulate(
    out: Path,
    subbands: list[int],
    *,
    start: datetime = T0,
    minutes: float = 5,
    channels: int = 2,
    dec: float = DEC,
    jitter_s: float = 5.0,
    seed: int = 0,
) -> list[Path]:
    """Tiny raw files (3 antennas) for consecutive observations; returns their paths."""
    truth = simulate_observations(
        out,
        start,
        minutes,
        dec,
        subbands=subbands,
        n_antennas=3,
        channels_per_subband=channels,
        name_jitter_s=jitter_s,
        seed=seed,
    )
    return list(truth.files)


def arrive(files: list[Path], incoming: Path) -> list[Path]:
    """Copy raw files into ``incoming`` as the correlator would deliver them."""
    incoming.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(path, incoming / path.name)) for path in files]


def by_subband(files: list[Path], *subbands: int) -> list[Path]:
    return [path for path in files if int(path.stem[-2:]) in subbands]


def observations(engine: Engine) -> dict[str, Any]:
    with reading(engine) as conn:
        rows = conn.execute(select(Observation).order_by(Observation.key)).mappings()
        return {row["key"]: dict(row) for row in rows}


def raw_files(engine: Engine) -> dict[str, Any]:
    with reading(engine) as conn:
        return {
            Path(row["path"]).name: dict(row)
            for row in conn.execute(select(RawFile).order_by(RawFile.path)).mappings()
        }


def files_of(engine: Engine, key: str) -> list[str]:
    with reading(engine) as conn:
        stmt = (
            select(RawFile.path)
            .join(Observation, Observation.id == RawFile.observation_id)
            .where(Observation.key == key)
            .order_by(RawFile.path)
        )
        return [Path(path).name for path in conn.execute(stmt).scalars()]


@pytest.fixture
def header_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every header discovery reads, in order (the real reader does the work)."""
    calls: list[Path] = []
    real = discover_module.read_raw_header

    def spy(path: Path | str) -> Any:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(discover_module, "read_raw_header", spy)
    return calls


def test_jittered_subbands_group_into_one_observation(engine, tmp_path, header_reads):
    incoming = tmp_path / "incoming"
    files = simulate(incoming / "2025-03-01", list(range(16)))
    name_times = {path.name[:19] for path in files}
    assert len(name_times) > 1, "the names should disagree, as the correlator's do"

    report = discover(engine, incoming, now=NOW, policy=DiscoveryPolicy(grace=GRACE))

    key = observation_key(T0)
    assert report.observations_created == (key,)
    assert sorted(report.new_files) == sorted(files)
    assert report.errors == {}
    assert len(header_reads) == 16
    obs = observations(engine)
    assert list(obs) == [key]
    assert obs[key]["start_time"] == T0
    assert obs[key]["end_time"] == T0 + OBSERVATION
    assert obs[key]["dec_deg"] == pytest.approx(DEC, abs=1e-9)
    assert (obs[key]["n_subbands"], obs[key]["ready"], obs[key]["problem"]) == (16, True, None)
    rows = raw_files(engine)
    assert sorted(row["subband"] for row in rows.values()) == list(range(16))
    assert {row["observation_id"] for row in rows.values()} == {obs[key]["id"]}
    assert {row["data_start"] for row in rows.values()} == {T0}
    assert any(row["name_time"] != T0 for row in rows.values())


def test_consecutive_observations_stay_apart(engine, tmp_path):
    incoming = tmp_path / "incoming"
    simulate(incoming, [0, 1, 2, 3], minutes=10, jitter_s=8)

    report = discover(engine, incoming, now=NOW, policy=FOUR)

    first, second = observation_key(T0), observation_key(T0 + OBSERVATION)
    assert report.observations_created == (first, second)
    obs = observations(engine)
    assert list(obs) == [first, second]
    assert obs[first]["end_time"] == obs[second]["start_time"] == T0 + OBSERVATION
    for key in (first, second):
        assert (obs[key]["n_subbands"], obs[key]["ready"]) == (4, True)
        assert sorted(name[-9:] for name in files_of(engine, key)) == [
            f"sb{s:02d}.hdf5" for s in range(4)
        ]


def test_a_pass_without_new_files_reads_no_header_and_changes_nothing(
    engine, tmp_path, header_reads
):
    incoming = tmp_path / "incoming"
    simulate(incoming / "a", [0, 1, 2, 3], minutes=10)
    simulate(incoming / "b", [0, 1], start=T0 + 3 * OBSERVATION)  # waiting for sb02, sb03
    discover(engine, incoming, now=NOW, policy=FOUR)
    assert len(header_reads) == 10
    before = (observations(engine), raw_files(engine))

    report = discover(engine, incoming, now=NOW + timedelta(minutes=1), policy=FOUR)

    assert report.found_nothing
    assert len(header_reads) == 10
    assert (observations(engine), raw_files(engine)) == before


def test_a_late_subband_completes_its_observation(engine, tmp_path, header_reads):
    source, incoming = tmp_path / "source", tmp_path / "incoming"
    files = simulate(source, [0, 1, 2, 3])
    key = observation_key(T0)
    arrive(by_subband(files, 0, 1, 2), incoming)

    discover(engine, incoming, now=NOW, policy=FOUR)
    waiting = observations(engine)[key]
    assert (waiting["ready"], waiting["n_subbands"]) == (False, 3)
    assert waiting["problem"] == "3/4 subbands (missing sb03); waiting until 01:10:00"

    (late,) = arrive(by_subband(files, 3), incoming)
    report = discover(engine, incoming, now=NOW + timedelta(minutes=2), policy=FOUR)

    assert report.new_files == (late,)
    assert header_reads[3:] == [late]
    assert (report.observations_created, report.observations_updated) == ((), (key,))
    done = observations(engine)[key]
    assert (done["ready"], done["n_subbands"], done["problem"]) == (True, 4, None)
    assert done["id"] == waiting["id"]
    assert done["first_seen_at"] == NOW, "the grace period counts from the first subband"
    assert len(files_of(engine, key)) == 4


@pytest.mark.parametrize(
    ("present", "min_subbands", "ready", "problem"),
    [
        (3, 3, True, "3/4 subbands (missing sb03); ready without them after the grace period"),
        (2, 3, False, "incomplete: 2/4 subbands, needs 3 (missing sb02, sb03)"),
    ],
)
def test_missing_subbands_wait_out_the_grace_period(
    engine, tmp_path, header_reads, present, min_subbands, ready, problem
):
    incoming = tmp_path / "incoming"
    simulate(incoming, list(range(present)))
    policy = DiscoveryPolicy(grace=GRACE, min_subbands=min_subbands, expected_subbands=4)
    key = observation_key(T0)

    discover(engine, incoming, now=NOW, policy=policy)
    assert observations(engine)[key]["ready"] is False
    assert "waiting until 01:10:00" in observations(engine)[key]["problem"]
    within = discover(engine, incoming, now=NOW + GRACE - timedelta(seconds=1), policy=policy)
    assert within.found_nothing

    # The grace period runs out without any new file: the verdict changes all the same.
    after = discover(engine, incoming, now=NOW + GRACE, policy=policy)

    assert after.observations_updated == (key,)
    obs = observations(engine)[key]
    assert (obs["ready"], obs["problem"], obs["n_subbands"]) == (ready, problem, present)
    assert len(header_reads) == present
    again = discover(engine, incoming, now=NOW + 2 * GRACE, policy=policy)
    assert again.found_nothing


def test_unreadable_files_are_recorded_and_skipped(engine, tmp_path, header_reads):
    source, incoming = tmp_path / "source", tmp_path / "incoming"
    files = simulate(source, [0, 1, 2, 3])
    arrive(by_subband(files, 0, 1, 2), incoming)
    full = by_subband(files, 3)[0]
    truncated = incoming / full.name
    truncated.write_bytes(full.read_bytes()[:5000])
    garbage = incoming / "2025-03-01T00:20:00_sb01.hdf5"
    garbage.write_bytes(b"not an hdf5 file")
    misnamed = incoming / "scan_sb02.hdf5"
    shutil.copy2(by_subband(files, 2)[0], misnamed)
    (incoming / "notes.txt").write_text("not a raw file")
    (incoming / "other.hdf5").write_bytes(b"not a raw file either")

    report = discover(engine, incoming, now=NOW, policy=FOUR)

    assert set(report.errors) == {truncated, garbage, misnamed}
    for path, message in report.errors.items():
        assert path.name in message
    assert "name is not" in report.errors[misnamed]
    rows = raw_files(engine)
    assert "notes.txt" not in rows and "other.hdf5" not in rows
    for path in (truncated, garbage, misnamed):
        assert rows[path.name]["error"] == report.errors[path]
        assert rows[path.name]["observation_id"] is None
    assert (rows[truncated.name]["subband"], rows[garbage.name]["subband"]) == (3, 1)
    key = observation_key(T0)
    assert list(observations(engine)) == [key]
    assert observations(engine)[key]["n_subbands"] == 3

    # The correlator finishes writing sb03: the changed file is read again, and only it.
    shutil.copy2(full, truncated)
    reads_before = len(header_reads)
    finished = discover(engine, incoming, now=NOW + timedelta(minutes=1), policy=FOUR)

    assert finished.changed_files == (truncated,)
    assert header_reads[reads_before:] == [truncated]
    assert finished.errors == {}
    assert raw_files(engine)[truncated.name]["error"] is None
    assert (observations(engine)[key]["ready"], observations(engine)[key]["n_subbands"]) == (
        True,
        4,
    )


@pytest.mark.parametrize(
    ("odd", "expected"),
    [
        ({"channels": 4}, "4 channels, the others 2"),
        ({"dec": DEC + 1.0}, "dec 56.570°, the others 55.570° (tolerance 0.1°)"),
    ],
)
def test_an_inconsistent_subband_is_excluded_by_name(engine, tmp_path, odd, expected):
    incoming = tmp_path / "incoming"
    simulate(incoming / "main", [0, 1, 2])
    (odd_file,) = simulate(incoming / "odd", [3], **odd)
    policy = DiscoveryPolicy(grace=GRACE, min_subbands=3, expected_subbands=4)
    key = observation_key(T0)

    discover(engine, incoming, now=NOW, policy=policy)

    obs = observations(engine)[key]
    assert (obs["n_subbands"], obs["ready"]) == (3, False)
    assert f"excluded {odd_file.name}: {expected}" in obs["problem"]
    assert "missing sb03" in obs["problem"]
    assert obs["dec_deg"] == pytest.approx(DEC, abs=1e-9)
    assert odd_file.name not in files_of(engine, key), "a converter must not be given it"
    assert raw_files(engine)[odd_file.name]["error"] is None

    discover(engine, incoming, now=NOW + GRACE, policy=policy)
    obs = observations(engine)[key]
    assert obs["ready"] is True
    assert f"excluded {odd_file.name}" in obs["problem"]


def _outcome(engine: Engine) -> tuple[list[tuple], dict[str, str | None]]:
    """Observations and file placement, free of ids, paths and arrival times."""
    obs = observations(engine)
    key_of = {row["id"]: key for key, row in obs.items()}
    columns = ("start_time", "end_time", "n_subbands", "ready", "problem")
    summary = [
        (key, round(row["dec_deg"], 9), *(row[column] for column in columns))
        for key, row in obs.items()
    ]
    placement = {name: key_of.get(row["observation_id"]) for name, row in raw_files(engine).items()}
    return summary, placement


def test_arrival_order_does_not_change_the_observations(engine, tmp_path):
    source = tmp_path / "source"
    files = simulate(source / "a", [0, 1, 2], minutes=10)
    # One subband whose data start 10 s early: the observation's key must follow it.
    early = simulate(source / "b", [3], start=T0 - timedelta(seconds=10))
    files += simulate(source / "c", [3], start=T0 + OBSERVATION) + early
    orders = {
        "forward": sorted(files, key=lambda p: p.name),
        "reverse": sorted(files, key=lambda p: p.name, reverse=True),
        "shuffled": random.Random(7).sample(files, len(files)),
    }
    outcomes = {}
    removed: dict[str, list[str]] = {}
    for name, order in orders.items():
        with writing(engine) as conn:
            conn.execute(delete(RawFile))
            conn.execute(delete(Observation))
        incoming = tmp_path / name
        removed[name] = []
        for batch in range(0, len(order), 3):
            arrive(order[batch : batch + 3], incoming)
            report = discover(engine, incoming, now=NOW, policy=FOUR)
            removed[name] += report.observations_removed
        outcomes[name] = _outcome(engine)

    assert outcomes["forward"] == outcomes["reverse"] == outcomes["shuffled"]
    summary, placement = outcomes["forward"]
    assert [row[0] for row in summary] == [
        observation_key(T0 - timedelta(seconds=10)),
        observation_key(T0 + OBSERVATION),
    ]
    assert all(row[4:6] == (4, True) for row in summary), summary
    assert None not in placement.values()
    # The reverse order met the early file last, so its observation changed key on the way.
    assert removed["reverse"] == [observation_key(T0)]


def test_a_vanished_file_makes_its_observation_not_ready(engine, tmp_path, header_reads):
    incoming, away = tmp_path / "incoming", tmp_path / "away"
    files = simulate(incoming, [0, 1, 2, 3])
    key = observation_key(T0)
    discover(engine, incoming, now=NOW, policy=FOUR)
    assert observations(engine)[key]["ready"] is True
    gone = by_subband(files, 2)[0]
    away.mkdir()
    gone.rename(away / gone.name)

    report = discover(engine, incoming, now=NOW + timedelta(minutes=1), policy=FOUR)

    assert report.vanished_files == (gone,)
    assert report.observations_updated == (key,)
    obs = observations(engine)[key]
    assert obs["ready"] is False
    assert obs["problem"] == f"raw file vanished: {gone.name}"
    assert gone.name in raw_files(engine), "the row of a vanished file is kept"
    assert raw_files(engine)[gone.name]["vanished_at"] == NOW + timedelta(minutes=1)
    quiet = discover(engine, incoming, now=NOW + timedelta(minutes=2), policy=FOUR)
    assert quiet.found_nothing, "reported once"

    (away / gone.name).rename(gone)
    back = discover(engine, incoming, now=NOW + timedelta(minutes=3), policy=FOUR)

    assert back.changed_files == (gone,), "read again: it may not be the file that left"
    assert back.observations_updated == (key,)
    assert (observations(engine)[key]["ready"], observations(engine)[key]["problem"]) == (
        True,
        None,
    )
    assert raw_files(engine)[gone.name]["vanished_at"] is None
    assert len(header_reads) == 5


def _fingerprint(root: Path) -> dict[str, tuple[str, int, int]]:
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path)] = (digest, stat.st_size, stat.st_mtime_ns)
    return found


def test_raw_files_are_never_modified(engine, tmp_path):
    incoming = tmp_path / "incoming"
    files = simulate(incoming, [0, 1, 2], minutes=10)
    broken = incoming / "2025-03-01T02:00:00_sb00.hdf5"
    broken.write_bytes(files[0].read_bytes()[:3000])
    os.utime(incoming, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    before = _fingerprint(incoming)
    directory_mtime = incoming.stat().st_mtime_ns

    for minutes in (0, 5, 15):
        discover(engine, incoming, now=NOW + timedelta(minutes=minutes), policy=FOUR)

    assert _fingerprint(incoming) == before
    assert incoming.stat().st_mtime_ns == directory_mtime, "nothing was created alongside"


def test_a_missing_incoming_directory_is_not_read_as_every_file_gone(engine, tmp_path):
    incoming = tmp_path / "incoming"
    simulate(incoming, [0, 1, 2, 3])
    discover(engine, incoming, now=NOW, policy=FOUR)
    before = (observations(engine), raw_files(engine))
    incoming.rename(tmp_path / "unmounted")

    report = discover(engine, incoming, now=NOW + timedelta(minutes=1), policy=FOUR)

    assert report == DiscoveryReport(incoming_missing=True)
    assert (observations(engine), raw_files(engine)) == before


def test_entries_named_like_raw_files_that_are_not_files_are_reported_once(engine, tmp_path):
    incoming = tmp_path / "incoming"
    good = arrive(simulate(tmp_path / "source", [0, 1, 2, 3]), incoming)
    loop = incoming / "2025-03-01T00:10:00_sb00.hdf5"
    loop.symlink_to(loop.name)  # points at itself: ELOOP on every open
    dangling = incoming / "2025-03-01T00:10:00_sb01.hdf5"
    dangling.symlink_to(tmp_path / "nowhere.hdf5")
    directory = incoming / "2025-03-01T00:10:00_sb02.hdf5"
    directory.mkdir()

    first = discover(engine, incoming, now=NOW, policy=FOUR)
    again = discover(engine, incoming, now=NOW + timedelta(minutes=1), policy=FOUR)

    assert {path.name: reason for path, reason in first.errors.items()} == {
        loop.name: "Too many levels of symbolic links",
        dangling.name: "dangling symbolic link",
        directory.name: "a directory, not a file",
    }
    assert again.errors == {}, "reported once, not on every pass"
    rows = raw_files(engine)
    assert rows[dangling.name]["error"] == "dangling symbolic link"
    assert all(rows[path.name]["error"] is None for path in good)
    assert len(first.new_files) == len(good) + 3
