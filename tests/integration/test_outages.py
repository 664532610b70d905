"""Database outages, against a PostgreSQL the test starts and stops itself (``initdb`` and
``pg_ctl`` into a temporary directory), never the machine's shared cluster: the service
survives, says so once, reconnects, and the work completes exactly once in effect."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.private_postgres import PrivatePostgres, postgres_bin
from reconciler.db.engine import make_engine, reading
from reconciler.db.migrate import upgrade
from reconciler.db.models import Action, MosaicGroup
from reconciler.desired.explicit import request_window
from tests.conftest import unavailable
from tests.integration.test_workers import service_config, start_worker, wait_for
from tests.world import OBSERVATION, T0, add_observations, add_solution

pytestmark = pytest.mark.postgres


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        unavailable("no PostgreSQL binaries under /usr/lib/postgresql")
    cluster = PrivatePostgres.create(bin_dir, tmp_path / "pgdata")
    cluster.start()
    yield cluster
    with contextlib.suppress(subprocess.CalledProcessError):
        cluster.stop("immediate")


def runs_by_label(tmp_path: Path) -> Counter[str]:
    path = tmp_path / "work" / "runs.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(json.loads(line)["label"] for line in lines)


def published(url: str, group: int) -> bool:
    engine = make_engine(url)
    try:
        with reading(engine) as conn:
            phase = conn.execute(select(MosaicGroup.phase).where(MosaicGroup.id == group)).scalar()
        return phase == "published"
    except Exception:  # the database may still be coming back
        return False
    finally:
        engine.dispose()


def prepare_world(url: str) -> int:
    engine = make_engine(url)
    upgrade(engine)
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    group = request_window(engine, T0, T0 + 3 * OBSERVATION, max_window=OBSERVATION * 100)
    engine.dispose()
    return group.group_id


def stop_service(service: subprocess.Popen[bytes]) -> str:
    service.send_signal(signal.SIGTERM)
    output, _ = service.communicate(timeout=60)
    return output.decode()


def test_the_service_rides_out_a_database_outage_during_an_action(
    private_postgres, tmp_path, workers
):
    url = private_postgres.url
    group = prepare_world(url)
    config = service_config(tmp_path, url, lease=8.0)
    (tmp_path / "work" / "behaviour.json").write_text(json.dumps({"*": {"sleep": 2.0}}))
    service = start_worker(config)
    workers.append(service)
    wait_for(lambda: (tmp_path / "work" / "runs.jsonl").exists(), timeout=60, what="a first run")

    private_postgres.stop()
    time.sleep(12)  # longer than the lease: the running action's heartbeats all fail
    private_postgres.start()
    wait_for(lambda: published(url, group), timeout=120, what="the mosaic after the outage")

    assert service.poll() is None, "the service survived the outage without a restart"
    log = stop_service(service)
    engine = make_engine(url)
    with reading(engine) as conn:
        states = conn.execute(select(Action.kind, Action.target, Action.state)).all()
    engine.dispose()
    assert {state for _, _, state in states} == {"done"}, "no claim stays stuck"
    assert len(states) == len({(kind, target) for kind, target, _ in states})
    assert all(count <= 2 for count in runs_by_label(tmp_path).values()), (
        "an action cut off by the outage ran again at most once; the rest once"
    )
    assert "Traceback" not in log
    outage_lines = [line for line in log.splitlines() if "failed:" in line]
    assert 1 <= len(outage_lines) <= 6, "one line per condition, not one per pass or beat"


def test_the_service_starts_while_the_database_is_down_and_waits_for_it(
    private_postgres, tmp_path, workers
):
    url = private_postgres.url
    group = prepare_world(url)
    config = service_config(tmp_path, url)
    private_postgres.stop()
    service = start_worker(config)
    workers.append(service)
    time.sleep(4)
    assert service.poll() is None, "it waits instead of exiting"

    private_postgres.start()
    wait_for(lambda: published(url, group), timeout=120, what="the mosaic once the database is up")

    log = stop_service(service)
    assert log.count("waiting for the database") == 1
    assert "the database answers" in log
