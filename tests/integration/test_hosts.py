"""Several hosts: services in separate PID namespaces (``unshare``) share one PostgreSQL and
one work/products tree. One is killed; no action runs twice at once, every action is done
once, and no host's sweeper removes another host's live scratch."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from reconciler.db.engine import make_engine, reading
from reconciler.db.models import Action, Event
from tests.conftest import fresh_database_url, unavailable
from tests.integration.test_workers import (
    REPO,
    published,
    runs,
    scratch_root,
    service_config,
    setup_window,
    wait_for,
)

pytestmark = pytest.mark.postgres

UNSHARE = shutil.which("unshare") or "unshare"
#: The events that end an attempt.
ATTEMPT_ENDS = (
    "action_done",
    "action_failed",
    "action_released",
    "action_retry",
    "lease_expired",
    "lease_lost",
)


def on_another_host(config: Path, *, pid_offset: int) -> subprocess.Popen[bytes]:
    """A `reconciler run` in a PID namespace of its own, as on another host. Its pids start
    again at 1: ``pid_offset`` short-lived processes first, so the two namespaces' service
    pids differ and each sees the other's as a pid that does not exist. Killing the
    returned process kills everything in the namespace, as a host's death would."""
    scratch = scratch_root(config)
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    command = (
        f"{'/bin/true; ' * pid_offset}{sys.executable} -m reconciler.cli --config {config} run"
    )
    return subprocess.Popen(
        [UNSHARE, "--pid", "--mount-proc", "--kill-child", "sh", "-c", f"{command}; :"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=config.parent,
    )


def holders(engine) -> set[str]:
    """The services holding a running action now."""
    with reading(engine) as conn:
        owners = conn.execute(select(Action.lease_owner).where(Action.state == "running"))
        return set(owners.scalars())


def last_event(engine) -> int:
    with reading(engine) as conn:
        return conn.execute(select(func.max(Event.id))).scalar() or 0


def attempt_ends(engine, owner: str, *, after: int) -> int:
    """How many attempts of ``owner`` ended since event ``after``."""
    with reading(engine) as conn:
        return conn.execute(
            select(func.count()).where(
                Event.id > after, Event.actor == owner, Event.kind.in_(ATTEMPT_ENDS)
            )
        ).scalar_one()


def test_services_on_two_hosts_share_the_work_and_survive_one_host_dying(
    request, tmp_path, workers
):
    probe = subprocess.run([UNSHARE, "--pid", "--fork", "--mount-proc", "true"], check=False)
    if probe.returncode != 0:
        unavailable("unshare cannot make a PID namespace here")
    url = fresh_database_url("postgresql", request, tmp_path)
    engine = make_engine(url)
    _, group = setup_window(engine, 10)
    config = service_config(tmp_path, url, lease=4.0)
    # Converts are long enough for the second host to start (and sweep) during one.
    (tmp_path / "work" / "behaviour.json").write_text(
        json.dumps({"convert": {"sleep": 3.0}, "*": {"sleep": 0.3}})
    )

    first = on_another_host(config, pid_offset=0)
    workers.append(first)
    wait_for(lambda: holders(engine), timeout=60, what="the first host's first action")
    (first_owner,) = holders(engine)
    second = on_another_host(config, pid_offset=3)
    workers.append(second)
    # Both hosts at work at once: the second has swept its $TMPDIR at start, where the
    # first host's live scratch lay under a pid that does not exist in the second's
    # namespace. The first host's attempts that were running then end as they should.
    wait_for(lambda: len(holders(engine)) == 2, timeout=60, what="both hosts holding actions")
    mark = last_event(engine)
    wait_for(
        lambda: attempt_ends(engine, first_owner, after=mark),
        timeout=60,
        what="the first host's attempt to end",
    )
    wait_for(lambda: first_owner in holders(engine), timeout=60, what="the first host at work")
    first.send_signal(signal.SIGKILL)  # the first host dies, mid-action
    first.wait()
    wait_for(lambda: published(engine, group), timeout=120, what="the mosaic on the other host")

    second.send_signal(signal.SIGKILL)
    second.wait()
    with reading(engine) as conn:
        states = conn.execute(select(Action.state)).scalars().all()
        outcomes = conn.execute(
            select(Event.kind, Event.message).where(Event.kind.in_(ATTEMPT_ENDS))
        ).all()
    engine.dispose()
    assert set(states) == {"done"}
    # No attempt failed but those the dead host held, for the lease it left behind: a swept
    # live scratch directory would have failed its attempt ("no result").
    assert {kind for kind, _ in outcomes} <= {"action_done", "lease_expired"}, outcomes
    assert any(kind == "lease_expired" for kind, _ in outcomes), "the dead host held work"
    # No two attempts at the same target ever ran at once.
    by_target: dict[str, list[tuple[float, float]]] = {}
    for run in runs(tmp_path):
        by_target.setdefault(run["label"], []).append((run["start"], run["end"]))
    for label, spans in by_target.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"{label} ran twice at once"
