"""Groups that can make no progress by themselves (failed, insufficient) are parked: passes
stop observing them, so their number does not weigh on every pass; a retry or new data in
their window wakes them."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

from sqlalchemy import select

from reconciler.db.engine import make_engine, reading
from reconciler.db.models import Event, MosaicGroup, Observation
from reconciler.desired.commands import retry
from reconciler.desired.explicit import request_window
from reconciler.engine.registry import load_registry
from reconciler.io.simulator import INTEGRATION_S, simulate_observations
from reconciler.service import Reconciler
from tests.conftest import make_settings
from tests.world import DEC, OBSERVATION, T0, add_observations, add_solution

LATER = T0 + timedelta(days=1)


def groups(engine) -> dict[int, tuple[str, bool]]:
    with reading(engine) as conn:
        rows = conn.execute(select(MosaicGroup.id, MosaicGroup.phase, MosaicGroup.parked))
        return {r.id: (r.phase, r.parked) for r in rows}


def test_failed_groups_are_parked_and_a_retry_wakes_every_group_sharing_the_failure(
    engine, settings
):
    keys = add_observations(engine, 4)
    add_solution(engine, keys[0])
    max_window = settings.decide_policy.max_window
    first = request_window(engine, T0, T0 + 3 * OBSERVATION, max_window=max_window).group_id
    second = request_window(
        engine, T0 + OBSERVATION, T0 + 4 * OBSERVATION, max_window=max_window
    ).group_id
    behaviour = settings.paths.work / "behaviour.json"
    behaviour.write_text(
        json.dumps({f"convert obs:{keys[1]}": {"fail": "permanent", "fail_times": 99}})
    )
    service = Reconciler(engine, settings, load_registry(settings), clock=lambda: LATER)
    service.run_pass()
    assert groups(engine) == {first: ("failed", True), second: ("failed", True)}

    # Parked: a pass no longer looks at them, and changes nothing.
    assert service.snapshot().groups == ()
    assert service.run_pass().actions == []

    behaviour.write_text("{}")
    assert retry(engine, service.snapshot([first]), first, max_window=max_window) == 1
    assert groups(engine) == {first: ("failed", False), second: ("failed", False)}
    with reading(engine) as conn:
        said = conn.execute(select(Event.message).where(Event.kind == "retry")).scalar_one()
    assert f"group(s) {second} woken too" in said

    service.run_pass()
    assert groups(engine) == {first: ("published", False), second: ("published", False)}


def test_an_insufficient_group_is_parked_until_its_missing_data_arrive(db_url, tmp_path):
    settings = make_settings(
        tmp_path,
        db_url,
        discovery={"expected_subbands": 4, "min_subbands": 4, "grace_minutes": 0},
        windows={"min_observations": 1, "arrival_grace_minutes": 0},
    )
    source = tmp_path / "source"
    truth = simulate_observations(
        source, T0, 24 * INTEGRATION_S / 60, DEC, subbands=[0, 1, 2, 3], n_antennas=3,
        channels_per_subband=2, seed=0,
    )  # fmt: skip
    files = sorted(truth.files)
    incoming = settings.paths.incoming
    incoming.mkdir(parents=True, exist_ok=True)
    for path in files[:3]:
        shutil.copy2(path, incoming / path.name)
    engine = make_engine(db_url)
    window_start = T0 - timedelta(seconds=30)
    group = request_window(
        engine, window_start, window_start + timedelta(minutes=10),
        max_window=settings.decide_policy.max_window,
    ).group_id  # fmt: skip
    service = Reconciler(engine, settings, load_registry(settings), clock=lambda: LATER)
    service.run_pass()
    assert groups(engine) == {group: ("insufficient", True)}
    assert service.snapshot().groups == ()

    # The missing subband arrives: discovery changes the observation, which wakes the group.
    with reading(engine) as conn:
        key = conn.execute(select(Observation.key)).scalar_one()
    add_solution(engine, key)
    shutil.copy2(files[3], incoming / files[3].name)
    service.run_pass()

    assert groups(engine) == {group: ("published", False)}
    engine.dispose()
