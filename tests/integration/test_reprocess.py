"""Reprocessing: new versions of the published mosaics of a span under changed settings,
making again only the stages whose settings changed, the earlier versions kept and marked
superseded.

Metadata-only observations (tests.world), the test actions, the real publish step.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.db.engine import reading
from reconciler.db.models import (
    Event,
    Image,
    MeasurementSet,
    MosaicGroup,
    Provenance,
    RegistryEntry,
    Reprocessing,
)
from reconciler.db.provenance import product_provenance
from reconciler.desired.explicit import request_window
from reconciler.desired.reprocess import reprocess
from reconciler.engine.registry import load_registry
from reconciler.errors import RequestError
from reconciler.fingerprint import fingerprints
from reconciler.service import Reconciler
from reconciler.status import provenance_report
from tests import engine_actions, engine_children
from tests.conftest import write_config
from tests.world import DEC, OBSERVATION, T0, add_observations, add_solution

LATER = T0 + timedelta(hours=24)
SPAN = {"start": T0 - timedelta(hours=1), "end": T0 + timedelta(hours=3)}
OTHER_DEC = DEC + 10.0


def deeper(settings: Settings) -> Settings:
    """``settings`` with an imaging-only change."""
    return replace(settings, imaging=replace(settings.imaging, niter=settings.imaging.niter * 2))


def publish_window(
    engine: Engine, settings: Settings, start, *, dec_deg: float = DEC, real_publish: bool = False
) -> int:
    """A published window of three observations at ``start`` on strip ``dec_deg``,
    calibrated by a solution made under ``settings``; returns the group id."""
    keys = add_observations(engine, 3, start=start, dec_deg=dec_deg)
    add_solution(
        engine,
        keys[0],
        dec_deg=dec_deg,
        calibrator=f"cal{dec_deg:g}",
        fingerprint=fingerprints(settings).calibrate,
    )
    group = request_window(
        engine, start, start + 3 * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id
    run_pass(engine, settings, real_publish=real_publish)
    assert group_row(engine, group).phase == "published"
    return group


def run_pass(engine: Engine, settings: Settings, *, real_publish: bool = False) -> None:
    """A pass with the test actions; with ``real_publish``, real FITS mosaics and the real
    publish step (slower: each starts astropy in a child)."""
    registry = engine_actions.fits_registry() if real_publish else load_registry(settings)
    service = Reconciler(engine, settings, registry, clock=lambda: LATER, jitter=lambda: 0.5)
    report = service.run_pass()
    assert not report.failed and not report.errors


def group_row(engine: Engine, group: int):
    with reading(engine) as conn:
        return conn.execute(select(MosaicGroup).where(MosaicGroup.id == group)).one()


def versions(engine: Engine, group: int) -> list:
    with reading(engine) as conn:
        return conn.execute(
            select(RegistryEntry)
            .where(RegistryEntry.group_id == group)
            .order_by(RegistryEntry.generation)
        ).all()


def runs(settings: Settings) -> list[str]:
    path = settings.paths.work / engine_children.RUNS_FILE
    if not path.exists():
        return []
    return [json.loads(line)["label"] for line in path.read_text().splitlines()]


def test_an_imaging_change_reimages_and_publishes_a_new_version_beside_the_old(engine, settings):
    group = publish_window(engine, settings, T0, real_publish=True)
    (first,) = versions(engine, group)
    with reading(engine) as conn:
        converted = conn.execute(select(MeasurementSet.path, MeasurementSet.fingerprint)).all()
    changed = deeper(settings)
    before = len(runs(settings))

    run_pass(engine, changed, real_publish=True)
    assert len(runs(settings)) == before, "a change of settings alone redoes nothing"

    done = reprocess(engine, changed, **SPAN, reason="deeper clean", actor="test")
    assert done.started == (group,) and done.skipped == {}
    run_pass(engine, changed, real_publish=True)

    # The mosaic and publish steps here (real FITS, real publish) keep no log of runs.
    made = runs(settings)[before:]
    assert sorted(label.split()[0] for label in made) == [
        "assess",
        "catalogue",
        "image",
        "image",
        "image",
    ], "only imaging and what follows it is done again"
    row = group_row(engine, group)
    assert row.phase == "published" and row.generation == 2 and row.reprocessing_id == done.id
    old, new = versions(engine, group)
    assert old.id == first.id and old.published_path == first.published_path
    assert new.published_path == first.published_path.replace(".fits", "_v2.fits")
    assert Path(old.published_path).is_file() and Path(new.published_path).is_file()
    assert old.status == new.status == "published"
    assert (old.superseded_by, new.superseded_by) == (new.id, None)
    assert old.superseded_at == new.published_at
    assert (old.fingerprint, new.fingerprint) == (
        fingerprints(settings).catalogue,
        fingerprints(changed).catalogue,
    )
    with reading(engine) as conn:
        images = conn.execute(select(Image.fingerprint)).scalars().all()
        still = conn.execute(select(MeasurementSet.path, MeasurementSet.fingerprint)).all()
        hashes = dict(conn.execute(select(Provenance.registry_id, Provenance.settings_hash)).all())
        asked = conn.execute(select(Reprocessing)).one()
    assert images == [fingerprints(changed).image] * 3
    assert sorted(still) == sorted(converted), "the MSs are reused"
    assert hashes[old.id] != hashes[new.id], "provenance tells the versions apart"
    with reading(engine) as conn:
        shown = product_provenance(conn, group_id=group)
    assert [(p["generation"], p["superseded_by"]) for p in shown] == [(2, None), (1, new.id)]
    assert f"superseded by product {new.id}" in provenance_report(shown)
    assert (asked.reason, asked.actor, asked.groups) == ("deeper clean", "test", 1)


def test_asking_twice_makes_one_new_version(engine, settings):
    group = publish_window(engine, settings, T0)
    changed = deeper(settings)

    first = reprocess(engine, changed, **SPAN)
    again = reprocess(engine, changed, **SPAN)
    assert first.started == (group,)
    assert again.started == () and "is making generation 2" in again.skipped[group]
    run_pass(engine, changed)
    later = reprocess(engine, changed, **SPAN)
    run_pass(engine, changed)

    assert later.skipped == {group: "generation 2 was made under the current settings"}
    assert [v.generation for v in versions(engine, group)] == [1, 2]
    with reading(engine) as conn:
        requests = conn.execute(select(Reprocessing.groups).order_by(Reprocessing.id)).all()
        logged = conn.execute(select(Event.message).where(Event.kind == "reprocess")).all()
    assert [r.groups for r in requests] == [1, 0, 0] and len(logged) == 3


def test_a_dec_strip_limits_what_is_reprocessed(engine, settings):
    here = publish_window(engine, settings, T0)
    there = publish_window(engine, settings, T0 + 6 * OBSERVATION, dec_deg=OTHER_DEC)

    done = reprocess(engine, deeper(settings), **SPAN, dec_deg=OTHER_DEC)

    assert done.started == (there,) and done.skipped == {}
    assert group_row(engine, here).generation == 1
    assert group_row(engine, there).generation == 2


def test_a_group_not_published_is_skipped_saying_so(engine, settings):
    waiting = request_window(
        engine, T0, T0 + 3 * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id

    done = reprocess(engine, deeper(settings), **SPAN)

    assert done.started == ()
    assert done.skipped == {waiting: "new, not published: nothing to make a new version of"}
    assert group_row(engine, waiting).generation == 1
    with pytest.raises(RequestError, match="not after its start"):
        reprocess(engine, settings, start=T0, end=T0)


def test_a_calibration_change_solves_again_and_applies_but_keeps_the_ms(engine, settings):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0], fingerprint=fingerprints(settings).calibrate)
    group = request_window(engine, T0, T0 + 3 * OBSERVATION, max_window=timedelta(hours=24))
    run_pass(engine, settings)
    # The members were converted under the current settings; the solution's own
    # observation is the first member, which a calibration change solves on again.
    changed = replace(settings, imaging=replace(settings.imaging, max_smearing_loss=0.02))
    assert fingerprints(changed).convert == fingerprints(settings).convert
    before = len(runs(settings))

    reprocess(engine, changed, **SPAN)
    transit = Reconciler(
        engine,
        changed,
        load_registry(changed),
        clock=lambda: LATER,
        jitter=lambda: 0.5,
        transits=lambda ra, dec, start, end: [
            t for t in [T0 + OBSERVATION / 2] if start <= t <= end
        ],
    )
    assert not transit.run_pass().failed

    made = sorted(label.split()[0] for label in runs(settings)[before:])
    assert "convert" not in made and made.count("solve") == 1
    assert made.count("apply") == 3 and made.count("image") == 3
    assert group_row(engine, group.group_id).generation == 2


def test_the_reprocess_command_says_what_it_did(engine, settings, tmp_path, db_url, capsys):
    group = publish_window(engine, settings, T0)
    config = write_config(tmp_path, db_url, "[imaging]\nniter = 9999\n")

    code = main(
        ["--config", str(config), "reprocess", "--start", "2025-02-28T23:00:00",
         "--end", "2025-03-01T03:00:00", "--reason", "niter"]
    )  # fmt: skip

    out = capsys.readouterr().out
    assert code == 0
    assert "1 new version(s), 0 group(s) skipped" in out
    assert f"group {group}: new version asked for" in out
