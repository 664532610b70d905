"""Real `reconciler run` processes against one database: exclusivity, SIGKILL, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, select

from reconciler.db.engine import reading
from reconciler.db.models import Action, Event, MosaicGroup
from reconciler.desired.explicit import request_window
from tests.conftest import write_config
from tests.world import OBSERVATION, T0, add_observations, add_solution

REPO = Path(__file__).resolve().parents[2]


def service_config(tmp_path: Path, db_url: str, *, lease: float = 3.0) -> Path:
    return write_config(
        tmp_path,
        db_url,
        f"""
[schedule]
interval_seconds = 0.5
[lease]
seconds = {lease}
heartbeat_seconds = 0.5
[retry]
base_delay_seconds = 0.0
jitter = 0.0
[windows]
arrival_grace_minutes = 0.0
""",
    )


def start_worker(config: Path, *args: str) -> subprocess.Popen[bytes]:
    """A `reconciler run` process; its temporary files go to ``tmp/`` beside the config."""
    scratch = scratch_root(config)
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "--config", str(config), "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=config.parent,
    )


def scratch_root(config: Path) -> Path:
    return config.parent / "tmp"


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def published(engine: Engine, group: int) -> bool:
    with reading(engine) as conn:
        phase = conn.execute(select(MosaicGroup.phase).where(MosaicGroup.id == group)).scalar()
    return phase == "published"


def runs(tmp_path: Path) -> list[dict]:
    path = tmp_path / "work" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def setup_window(engine: Engine, count: int) -> tuple[list[str], int]:
    keys = add_observations(engine, count)
    add_solution(engine, keys[0])
    end = T0 + count * OBSERVATION
    group = request_window(engine, T0, end, max_window=OBSERVATION * 300).group_id
    return keys, group


def test_several_workers_never_run_the_same_action_twice(engine, db_url, tmp_path, workers):
    keys, group = setup_window(engine, 8)
    config = service_config(tmp_path, db_url)
    (tmp_path / "work" / "behaviour.json").write_text(json.dumps({"*": {"sleep": 0.3}}))

    workers.extend(start_worker(config) for _ in range(3))
    wait_for(lambda: published(engine, group), timeout=240, what="the mosaic to be published")
    for process in workers:
        process.send_signal(signal.SIGTERM)
    codes = [process.wait(timeout=30) for process in workers]

    assert codes == [0, 0, 0]
    done = runs(tmp_path)
    counts = Counter(r["label"] for r in done)
    # convert, apply and image per observation; mosaic, catalogue, assess and publish per group
    assert len(counts) == 3 * len(keys) + 4
    assert set(counts.values()) == {1}, f"actions run more than once: {counts}"
    assert len({r["pid"] for r in done}) >= 2, "the work was spread over the workers"
    with reading(engine) as conn:
        states = Counter(conn.execute(select(Action.state)).scalars())
    assert states == {"done": 3 * len(keys) + 4}


def test_a_killed_worker_loses_its_claim_and_the_work_completes_once(
    engine, db_url, tmp_path, workers
):
    keys, group = setup_window(engine, 3)
    config = service_config(tmp_path, db_url, lease=2.0)
    slow = f"convert obs:{keys[0]}"
    (tmp_path / "work" / "behaviour.json").write_text(json.dumps({slow: {"sleep": 4.0}}))

    first = start_worker(config)
    workers.append(first)

    def running_in_first() -> bool:
        with reading(engine) as conn:
            row = conn.execute(
                select(Action.state, Action.lease_owner).where(
                    Action.kind == "convert", Action.target == f"obs:{keys[0]}"
                )
            ).first()
        return row is not None and row.state == "running" and f":{first.pid}:" in row.lease_owner

    wait_for(running_in_first, timeout=60, what="the first worker to start the slow action")
    first.send_signal(signal.SIGKILL)
    first.wait()
    left_behind = list(scratch_root(config).glob(f"reconciler-action-{first.pid}@*"))
    assert left_behind, "the killed worker's child scratch directory is still there"
    workers.append(start_worker(config))
    wait_for(lambda: published(engine, group), timeout=180, what="the mosaic to be published")
    assert not any(path.exists() for path in left_behind), "the next service removed it"

    done = Counter(r["label"] for r in runs(tmp_path))
    assert done[slow] == 1, "the killed worker's child died with it; the action ran once"
    assert set(done.values()) == {1}
    with reading(engine) as conn:
        action = conn.execute(
            select(Action).where(Action.kind == "convert", Action.target == f"obs:{keys[0]}")
        ).one()
        expired = conn.execute(select(Event.message).where(Event.kind == "lease_expired")).all()
    assert action.state == "done" and action.attempts == 2
    assert len(expired) == 1 and f":{first.pid}:" in expired[0].message


def test_sigterm_releases_the_current_claim_and_exits_cleanly(engine, db_url, tmp_path, workers):
    setup_window(engine, 3)
    config = service_config(tmp_path, db_url)
    (tmp_path / "work" / "behaviour.json").write_text(json.dumps({"convert": {"sleep": 60}}))
    worker = start_worker(config)
    workers.append(worker)

    def claimed() -> bool:
        with reading(engine) as conn:
            states = conn.execute(select(Action.state).where(Action.kind == "convert")).scalars()
            return "running" in set(states)

    wait_for(claimed, timeout=60, what="an action to be claimed")
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=30)

    assert code == 0
    assert time.monotonic() - began < 15
    with reading(engine) as conn:
        actions = conn.execute(select(Action).where(Action.kind == "convert")).all()
        released = conn.execute(select(Event).where(Event.kind == "action_released")).all()
    assert {a.state for a in actions} == {"pending"}
    assert {a.attempts for a in actions} == {0}
    assert len(released) == 1
    assert runs(tmp_path) == []


def test_run_once_exit_status_says_whether_anything_failed(engine, db_url, tmp_path):
    setup_window(engine, 3)
    config = service_config(tmp_path, db_url)
    (tmp_path / "work" / "behaviour.json").write_text(
        json.dumps({"mosaic": {"fail": "permanent", "fail_times": 9}})
    )

    failing = start_worker(config, "--once")
    output = failing.communicate(timeout=120)[0].decode()
    assert failing.returncode == 1, output
    assert "1 failed" in output

    clean = start_worker(config, "--once")
    output = clean.communicate(timeout=120)[0].decode()
    assert clean.returncode == 0, output


def test_the_service_refuses_a_database_not_at_head(empty_db_url, tmp_path):
    config = service_config(tmp_path, empty_db_url)

    process = start_worker(config)
    output = process.communicate(timeout=60)[0].decode()

    assert process.returncode == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "empty database" in lines[0] and "reconciler init" in lines[0]
