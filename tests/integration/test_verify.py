"""Published products are read again on a schedule: a missing or altered file is reported
in ``mosaic_status`` and one event, and never re-made over the original."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, text, update

from reconciler.config import VerificationSettings
from reconciler.db.engine import reading, writing
from reconciler.db.models import Action, Event, RegistryEntry
from reconciler.desired.explicit import request_window
from reconciler.engine.registry import ActionRegistry
from reconciler.io.checksum import sha256
from reconciler.model import ActionKind
from reconciler.service import Reconciler
from reconciler.steps import publish
from reconciler.verify import product_problem, verify_published
from tests import engine_actions
from tests.world import OBSERVATION, T0, add_observations, add_solution

DAY = timedelta(hours=24)


def published(engine, settings) -> tuple[Path, Reconciler]:
    """One window published by the real publish step; returns its file and the service."""
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    request_window(engine, T0, T0 + 3 * OBSERVATION, max_window=settings.decide_policy.max_window)
    registry = ActionRegistry(
        [h for h in engine_actions.registry() if h.kind is not ActionKind.PUBLISH]
        + [publish.HANDLER]
    )
    clock = Clock(T0 + DAY)
    service = Reconciler(engine, settings, registry, clock=clock, jitter=lambda: 0.5)
    service.run_pass()
    with reading(engine) as conn:
        path = conn.execute(select(RegistryEntry.published_path)).scalar_one()
    with writing(engine) as conn:  # published at the test's clock, not the wall clock
        conn.execute(update(RegistryEntry).values(verified_at=clock.now))
    return Path(path), service


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def problems(engine) -> list[tuple[str, str]]:
    with reading(engine) as conn:
        shown = conn.execute(text("SELECT product_problem FROM mosaic_status")).scalar_one()
        events = conn.execute(
            select(Event.kind, Event.message).where(Event.kind.like("product_%"))
        ).all()
    return shown, [(e.kind, e.message) for e in events]


def test_an_altered_product_is_reported_once_and_never_remade(engine, settings):
    path, service = published(engine, settings)
    original = path.read_bytes()
    assert verify_published(engine, settings, now=service.clock.now).checked == 0, "not due"

    path.write_bytes(original[:-1] + b"X")
    service.clock.now += DAY + timedelta(minutes=1)
    report = service.run_pass()

    assert report.verification.checked == 1
    shown, events = problems(engine)
    assert f"{path} was altered" in shown
    assert [kind for kind, _ in events] == ["product_problem"]
    # Found the same a day later: still shown, no second event; never re-made.
    service.clock.now += DAY + timedelta(minutes=1)
    assert service.run_pass().verification.checked == 1
    assert problems(engine) == (shown, events)
    assert path.read_bytes() == original[:-1] + b"X"
    with reading(engine) as conn:
        assert conn.execute(select(Action.kind).where(Action.state != "done")).all() == []

    # Put right by a person: whole again, one event saying so.
    path.write_bytes(original)
    service.clock.now += DAY + timedelta(minutes=1)
    service.run_pass()
    shown, events = problems(engine)
    assert shown is None
    assert [kind for kind, _ in events] == ["product_problem", "product_ok"]


def test_a_missing_product_is_reported_and_not_published_again(engine, settings):
    path, service = published(engine, settings)
    path.unlink()
    service.clock.now += DAY + timedelta(minutes=1)

    report = service.run_pass()

    shown, events = problems(engine)
    assert shown == f"{path} is missing"
    assert len(events) == 1 and "is missing" in events[0][1]
    assert [a.kind for a in report.actions] == []
    assert not path.exists()


def test_verification_can_be_switched_off(engine, settings):
    path, service = published(engine, settings)
    path.unlink()
    off = dataclasses.replace(settings, verification=VerificationSettings(interval_hours=0))

    report = verify_published(engine, off, now=service.clock.now + 10 * DAY)

    assert report.checked == 0
    assert problems(engine) == (None, [])


def test_companions_are_verified_and_nothing_outside_the_root_is_read(tmp_path):
    products = tmp_path / "products"
    products.mkdir()
    mosaic, weight = products / "m.fits", products / "m.weight.fits"
    mosaic.write_bytes(b"mosaic")
    weight.write_bytes(b"weight")
    outside = tmp_path / "elsewhere.fits"
    outside.write_bytes(b"foreign")
    files = {
        str(mosaic): sha256(mosaic),
        str(weight): sha256(weight),
    }
    assert product_problem(files, products) is None

    weight.write_bytes(b"changed")
    assert product_problem(files, products).startswith(f"{weight} was altered")
    files[str(outside)] = sha256(outside)
    outside.chmod(0)  # were it read, this would be "could not be read"
    found = product_problem(files, products)
    assert f"{outside} is outside the products root {products}; not read" in found


def test_the_staged_copy_is_removed_once_published_and_the_product_stays(engine, settings):
    path, service = published(engine, settings)
    with reading(engine) as conn:
        staged = Path(conn.execute(select(RegistryEntry.stage_path)).scalar_one())
    assert staged.is_file(), "published in the pass's work loop: removed by the next pass"
    product = sha256(path)

    report = service.run_pass()

    assert report.staging_removed == 1
    assert not staged.exists() and not staged.parent.exists()
    assert sha256(path) == product
    with reading(engine) as conn:
        removed_at = conn.execute(select(RegistryEntry.stage_removed_at)).scalar_one()
    assert removed_at == service.clock.now
    assert service.run_pass().staging_removed == 0, "each product's copy is removed once"


def test_a_staged_copy_outside_the_work_root_is_never_removed(engine, settings, tmp_path):
    _, service = published(engine, settings)
    outside = tmp_path / "outside" / "mosaic.fits"
    outside.parent.mkdir()
    outside.write_bytes(b"not ours")
    with writing(engine) as conn:
        conn.execute(update(RegistryEntry).values(stage_path=str(outside)))

    assert service.run_pass().staging_removed == 1
    assert outside.read_bytes() == b"not ours"
