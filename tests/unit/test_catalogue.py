"""Tests for reconciler.catalogue and the shipped config/calibrators.toml."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from reconciler.catalogue import (
    Calibrator,
    calibrators_from_mapping,
    choose_calibrator,
    closest_names,
    find_calibrator,
    load_calibrators,
)
from reconciler.errors import ConfigError, NotFoundError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "calibrators.toml"


def entry(**overrides):
    row = {
        "name": "0834+555",
        "ra_deg": 128.7287671,
        "dec_deg": 55.5725194,
        "flux_jy": 8.8,
        "dec_tolerance_deg": 1.5,
    }
    row.update(overrides)
    return row


@pytest.fixture(scope="module")
def shipped() -> list[Calibrator]:
    return load_calibrators(SHIPPED)


def test_shipped_catalogue_covers_every_dec_from_0_to_80(shipped):
    uncovered = [d for d in np.arange(0.0, 80.001, 0.5) if choose_calibrator(shipped, d) is None]
    assert uncovered == []


def test_shipped_catalogue_has_the_design_calibrators_with_the_lists_figures(shipped):
    by_name = {c.name: c for c in shipped}
    c0834 = by_name["0834+555"]
    assert c0834.ra_deg == pytest.approx(15 * (8 + 34 / 60 + 54.904 / 3600), abs=1e-5)
    assert c0834.dec_deg == pytest.approx(55 + 34 / 60 + 21.07 / 3600, abs=1e-5)
    assert c0834.flux_jy == 8.8
    c3c286 = by_name["1331+305"]
    assert c3c286.ra_deg == pytest.approx(15 * (13 + 31 / 60 + 8.288 / 3600), abs=1e-5)
    assert c3c286.dec_deg == pytest.approx(30 + 30 / 60 + 32.96 / 3600, abs=1e-5)
    assert c3c286.flux_jy == 15.0
    assert choose_calibrator(shipped, 55.0).name == "0834+555"
    assert choose_calibrator(shipped, 30.5).name == "1331+305"


def test_shipped_catalogue_entries_are_plausible(shipped):
    assert len({c.name for c in shipped}) == len(shipped)
    for c in shipped:
        assert c.flux_jy >= 0.5
        assert 1.5 <= c.dec_tolerance_deg <= 2.5
        assert c.position_code in {"A", "B", "C", "T"}


def test_load_calibrators_reads_optional_keys(tmp_path):
    path = tmp_path / "cat.toml"
    path.write_text(
        '[[calibrator]]\nname = "A"\nra_deg = 10\ndec_deg = 20.0\nflux_jy = 3\n'
        'dec_tolerance_deg = 1.5\nactive = false\nposition_code = "B"\n'
    )
    (calibrator,) = load_calibrators(path)
    assert calibrator == Calibrator("A", 10.0, 20.0, 3.0, 1.5, active=False, position_code="B")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (entry(flux_jy=-1.0), "flux_jy"),
        (entry(flux_jy="8.8"), "flux_jy must be a number"),
        (entry(dec_deg=91.0), "dec_deg"),
        (entry(ra_deg=360.0), "ra_deg"),
        (entry(dec_tolerance_deg=0.0), "dec_tolerance_deg"),
        (entry(active="yes"), "active"),
        (entry(position_code="Z"), "position_code"),
        (entry(dec_tolerence_deg=1.0), "unknown key"),
        (entry(name=""), "name"),
        (entry(ra_deg=True), "ra_deg must be a number"),
        ({"name": "X"}, "missing key"),
    ],
)
def test_bad_rows_name_the_source_and_the_entry(row, message):
    data = {"calibrator": [entry(name="good"), row]}
    with pytest.raises(ConfigError, match=message) as caught:
        calibrators_from_mapping(data, source="cat.toml")
    assert str(caught.value).startswith("cat.toml: [[calibrator]] entry 2")


def test_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match=r"entry 2 .*duplicate name, already used by entry 1"):
        calibrators_from_mapping({"calibrator": [entry(), entry()]}, source="cat.toml")


def test_missing_or_empty_catalogue_is_refused():
    with pytest.raises(ConfigError, match="no \\[\\[calibrator\\]\\] entries"):
        calibrators_from_mapping({"calibrator": []})
    with pytest.raises(ConfigError, match="unknown top-level"):
        calibrators_from_mapping({"calibrators": [entry()]})


def test_unreadable_and_invalid_files_name_the_file(tmp_path):
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load_calibrators(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[calibrator]\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_calibrators(broken)


def test_choose_returns_none_when_no_calibrator_covers_the_strip():
    catalogue = [Calibrator("A", 0.0, 40.0, 5.0, 1.5)]
    assert choose_calibrator(catalogue, 42.0) is None
    assert choose_calibrator([], 40.0) is None


def test_choose_ignores_inactive_calibrators():
    catalogue = [Calibrator("A", 0.0, 40.0, 5.0, 1.5, active=False)]
    assert choose_calibrator(catalogue, 40.0) is None


def test_choose_prefers_what_looks_brightest_through_the_beam():
    near_faint = Calibrator("near", 0.0, 40.1, 1.0, 1.5)
    far_bright = Calibrator("far", 0.0, 41.0, 10.0, 1.5)
    # 10 Jy at 1 deg (power ~0.6) beats 1 Jy on axis.
    assert choose_calibrator([near_faint, far_bright], 40.0) is far_bright
    too_far = Calibrator("edge", 0.0, 41.5, 2.0, 1.5)
    # 2 Jy at 1.5 deg (power ~0.42) loses to 1 Jy at 0.1 deg.
    assert choose_calibrator([near_faint, too_far], 40.0) is near_faint


def test_choose_breaks_ties_by_offset_then_name_whatever_the_order():
    # Same flux, same offset either side: the name decides.
    below = Calibrator("B-below", 0.0, 39.0, 3.0, 1.5)
    above = Calibrator("A-above", 0.0, 41.0, 3.0, 1.5)
    catalogue = [below, above, Calibrator("C", 0.0, 40.0, 0.5, 1.5)]
    expected = choose_calibrator(catalogue, 40.0)
    assert expected is above
    rng = random.Random(1)
    for _ in range(20):
        rng.shuffle(catalogue)
        assert choose_calibrator(catalogue, 40.0) is above


def test_choose_covers_the_exact_edge_of_the_tolerance():
    assert choose_calibrator([Calibrator("A", 0.0, 40.0, 5.0, 1.5)], 41.5) is not None


def test_closest_names_suggests_near_misses(shipped):
    assert closest_names("0834+556", shipped)[0] == "0834+555"
    assert closest_names("834+555", shipped)[0] == "0834+555"
    assert len(closest_names("0834+556", shipped, n=2)) <= 2
    assert closest_names("completely different", shipped) == []


def test_find_calibrator_says_did_you_mean(shipped):
    assert find_calibrator(shipped, "1331+305").flux_jy == 15.0
    with pytest.raises(
        NotFoundError, match=r"unknown calibrator '0834\+556'; did you mean 0834\+555"
    ):
        find_calibrator(shipped, "0834+556")


# --- the generator script ------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
VLA_LIST = REPO.parent / "shared" / "data" / "vlacalibrators.txt"

EXCERPT = """\
0003-066   J2000  A 00h06m13.892894s -00d23'35.335300"  Aug01
0003-066   B1950  A 00h03m40.288800s -06d40'17.300000"
-----------------------------------------------------
BAND        A B C D    FLUX(Jy)    UVMIN(kL)  UVMAX(kL)
=====================================================
 20cm    L  S X P S       1.60           45
  6cm    C  P P P P       1.30

0834+555   J2000  A 08h34m54.904117s  55d34'21.070980"  Aug01
0831+557   B1950  A 08h31m04.379700s  55d44'41.323000"
-----------------------------------------------------
BAND        A B C D    FLUX(Jy)    UVMIN(kL)  UVMAX(kL)
=====================================================
 20cm L  S P P P       8.80                      100   visplot

9999+999   J2000  T 12h00m00.0s  10d00'00.0"
-----------------------------------------------------
 20cm    L  X X X X       ?
"""


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location(
        "make_calibrator_catalogue", REPO / "scripts" / "make_calibrator_catalogue.py"
    )
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module executes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_generator_parses_blocks_signs_and_unknown_fluxes(generator):
    first, second, third = generator.parse_list(EXCERPT.splitlines())
    # "-00d23'" is negative although its degree field is zero.
    assert first.dec_deg == pytest.approx(-(23 / 60 + 35.3353 / 3600))
    assert (first.quality, first.flux_jy) == ("SXPS", 1.6)
    assert (second.name, second.ra_deg) == ("0834+555", pytest.approx(128.7287671, abs=1e-7))
    assert (second.quality, second.flux_jy) == ("SPPP", 8.8)
    assert (third.position_code, third.flux_jy) == ("T", None)


@pytest.mark.skipif(not VLA_LIST.exists(), reason="the VLA calibrator list is not on this machine")
def test_shipped_catalogue_is_what_the_generator_writes(generator):
    sources = generator.parse_list(VLA_LIST.read_text(encoding="ascii").splitlines())
    selected, uncovered = generator.select(sources)
    assert uncovered.size == 0
    assert generator.render(selected, VLA_LIST.name) == SHIPPED.read_text(encoding="utf-8")
