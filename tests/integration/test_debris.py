"""Leftovers of dead attempts are found by name and removed; a live attempt's never are."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.db import queries
from reconciler.db.engine import writing
from reconciler.engine.debris import find_debris, remove_debris
from reconciler.engine.execute import attempt_id
from reconciler.model import ActionKey, ActionKind, ActionSpec
from reconciler.naming import attempt_of, attempt_path

NOW = datetime(2025, 3, 2, tzinfo=UTC)


def test_attempt_names_round_trip():
    attempt = uuid.uuid4().hex
    path = attempt_path(Path("/w/ms/2025-03-01/k.ms"), attempt)
    assert path.name == f".k.ms.attempt-{attempt}"
    assert attempt_of(path.name) == attempt
    assert attempt_of("k.ms") is None
    assert attempt_of(".k.ms.attempt-short") is None


def running_attempt(engine) -> str:
    """Claim an action as a live worker would; returns its attempt id."""
    spec = ActionSpec(ActionKey(ActionKind.IMAGE, "obs:2025-03-01T00:00:00"), NOW, group_id=None)
    with writing(engine) as conn:
        queries.enqueue(conn, [spec], now=NOW)
        (claimed,) = queries.claim(
            conn, owner="host-b:17:abc", kinds=[ActionKind.IMAGE], now=NOW, lease_seconds=600
        )
    return attempt_id(claimed.token)


def test_only_the_leftovers_of_attempts_that_are_gone_are_removed(engine, tmp_path):
    work, products = tmp_path / "work", tmp_path / "products"
    live = running_attempt(engine)
    dead = uuid.uuid4().hex
    ms = work / "ms" / "2025-03-01" / "2025-03-01T00:00:00.ms"
    (ms / "ANTENNA").mkdir(parents=True)
    (ms / "table.dat").write_bytes(b"ms")
    dead_ms = attempt_path(ms, dead)
    (dead_ms / "ANTENNA").mkdir(parents=True)
    live_image = attempt_path(work / "images" / "2025-03-01" / "k", live)
    live_image.mkdir(parents=True)
    (live_image / "image.fits").write_bytes(b"being written")
    published = products / "mosaics" / "dsa110_mosaic_x.fits"
    published.parent.mkdir(parents=True)
    published.write_bytes(b"published")
    half_copied = attempt_path(published, dead)
    half_copied.write_bytes(b"half")

    assert find_debris([work, products]) == {dead_ms: dead, live_image: live, half_copied: dead}
    removed = remove_debris(engine, [work, products], now=NOW + timedelta(seconds=1))

    assert sorted(removed) == sorted([dead_ms, half_copied])
    assert not dead_ms.exists() and not half_copied.exists()
    assert (live_image / "image.fits").read_bytes() == b"being written"
    assert published.read_bytes() == b"published" and (ms / "table.dat").is_file()


def test_an_attempt_whose_lease_ran_out_is_not_live(engine, tmp_path):
    attempt = running_attempt(engine)
    leftover = attempt_path(tmp_path / "work" / "staging" / "g1" / "mosaic.fits", attempt)
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")

    assert remove_debris(engine, [tmp_path / "work"], now=NOW + timedelta(hours=1)) == [leftover]
