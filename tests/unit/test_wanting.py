"""Pure parts of the ways of wanting a mosaic: decide on a calibrator-only request, the
tiling continuation, and the settings the service's tiling and transits read."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from reconciler import sky
from reconciler.config import Settings, load_settings
from reconciler.decide import DecidePolicy, decide_group
from reconciler.desired.tiling import _continuation
from reconciler.errors import ConfigError
from reconciler.model import DesiredGroup, GroupObserved, Origin, Phase
from reconciler.windows import ObservationSpan, tile_windows

T0 = datetime(2025, 3, 1, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def spans(count: int, *, start: datetime = T0, dec: float = 55.6) -> list[ObservationSpan]:
    return [
        ObservationSpan(f"o{start + i * FIVE:%H%M}", start + i * FIVE, start + (i + 1) * FIVE, dec)
        for i in range(count)
    ]


def test_a_group_naming_only_a_calibrator_waits_for_its_window():
    group = DesiredGroup(
        id=1, window_start=None, window_end=None, origin=Origin.CALIBRATOR, calibrator="0834+555"
    )
    decision = decide_group(GroupObserved(group=group), now=T0, policy=DecidePolicy())
    assert decision.phase is Phase.WAITING
    assert "transit of 0834+555" in decision.reason


def test_a_group_without_window_or_calibrator_is_still_invalid():
    group = DesiredGroup(id=1, window_start=None, window_end=None)
    decision = decide_group(GroupObserved(group=group), now=T0, policy=DecidePolicy())
    assert decision.phase is Phase.INVALID


def test_continuing_from_a_window_gives_the_windows_of_tiling_everything():
    data = spans(40)
    whole = tile_windows(data, max_gap=FIVE, dec_tolerance_deg=1.0, closed_before=T0 + 1e3 * FIVE)
    second = whole.windows[1]
    rest = [s for s in data if s.start >= second.start]
    tail = _continuation(rest, second.end, overlap=2, max_gap=FIVE, tolerance=1.0)
    continued = tile_windows(
        tail, max_gap=FIVE, dec_tolerance_deg=1.0, closed_before=T0 + 1e3 * FIVE
    )
    assert continued.windows == whole.windows[2:]


def test_continuing_after_a_gap_starts_a_new_run():
    before = spans(4)
    after = spans(3, start=T0 + timedelta(hours=2))
    tail = _continuation(before + after, before[-1].end, overlap=2, max_gap=FIVE, tolerance=1.0)
    assert tail == after


def test_continuing_after_a_dec_change_starts_a_new_run():
    before = spans(4)
    after = spans(3, start=before[-1].end, dec=30.0)
    tail = _continuation(before + after, before[-1].end, overlap=2, max_gap=FIVE, tolerance=1.0)
    assert tail == after


def test_site_defaults_are_dsa110():
    site = Settings().site
    assert (site.latitude_deg, site.longitude_deg, site.height_m) == (
        sky.DSA110.latitude_deg,
        sky.DSA110.longitude_deg,
        sky.DSA110.height_m,
    )


def test_tiling_defaults_are_on_with_windows_of_ten_every_eight():
    tiling = Settings().tiling
    assert (tiling.enabled, tiling.size, tiling.stride) == (True, 10, 8)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[tiling]\nsize = 4\nstride = 5\n", "tiling.stride (5) is more than tiling.size (4)"),
        (
            "[tiling]\nsize = 2\nstride = 2\n",
            "windows.min_observations (3) is more than tiling.size (2)",
        ),
        ("[tiling]\nmax_new_per_pass = 0\n", "tiling.max_new_per_pass must be positive"),
        ("[site]\nlatitude_deg = 91.0\n", "site.latitude_deg must be in [-90, 90]"),
        ("[site]\nheight_m = nan\n", "site.height_m must be in"),
    ],
)
def test_bad_tiling_and_site_settings_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path, environ={})
