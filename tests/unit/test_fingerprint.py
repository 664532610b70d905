"""Settings fingerprints: a change of one stage's settings changes its fingerprint and
those of the stages after it, never those before."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from reconciler.config import Settings
from reconciler.fingerprint import Fingerprints, fingerprints, product_fingerprint
from reconciler.model import ActionKind, Site

BASE = Settings()
STAGES = [f.name for f in fields(Fingerprints)]


def changed_stages(settings: Settings) -> list[str]:
    before, after = fingerprints(BASE), fingerprints(settings)
    return [stage for stage in STAGES if getattr(before, stage) != getattr(after, stage)]


@pytest.mark.parametrize(
    ("settings", "first"),
    [
        (replace(BASE, site=Site(latitude_deg=37.0)), "convert"),
        (replace(BASE, imaging=replace(BASE.imaging, max_smearing_loss=0.02)), "calibrate"),
        (replace(BASE, imaging=replace(BASE.imaging, niter=5000)), "image"),
        (replace(BASE, imaging=replace(BASE.imaging, backend="tclean")), "image"),
        (replace(BASE, mosaic=replace(BASE.mosaic, pb_cutoff=0.3)), "mosaic"),
        (replace(BASE, catalogue=replace(BASE.catalogue, thresh_pix=6.0)), "catalogue"),
    ],
)
def test_a_change_reaches_its_stage_and_every_later_one(settings, first):
    assert changed_stages(settings) == STAGES[STAGES.index(first) :]


def test_settings_no_stage_reads_change_no_fingerprint():
    unread = replace(BASE, passes=replace(BASE.passes, workers=4), source="elsewhere")
    assert changed_stages(unread) == []
    assert fingerprints(BASE) == fingerprints(Settings())


def test_every_fingerprint_fits_a_path_and_actions_map_to_their_stage():
    made = fingerprints(BASE)
    assert all(len(getattr(made, stage)) == 12 for stage in STAGES)
    assert made.of(ActionKind.SOLVE) == made.of(ActionKind.APPLY) == made.calibrate
    assert made.of(ActionKind.IMAGE) == made.image


def test_a_product_has_the_current_fingerprint_only_when_every_tile_has():
    made = fingerprints(BASE)
    assert product_fingerprint(made, [made.image, made.image]) == made.catalogue
    assert product_fingerprint(made, [made.image, None]) is None
    assert product_fingerprint(made, [made.image, "0" * 12]) is None
    assert product_fingerprint(made, []) is None
