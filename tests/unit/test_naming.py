"""Tests for reconciler.naming: the same inputs always give the same names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.errors import PermanentError
from reconciler.naming import (
    calibrated_ms_path,
    caltable_prefix,
    group_target,
    image_prefix,
    measurement_set_path,
    observation_key,
    observation_target,
    parse_target,
    staging_dir,
    window_label,
)

WORK = Path("/data/work")
START = datetime(2025, 3, 1, 12, 34, 56, tzinfo=UTC)
KEY = "2025-03-01T12:34:56"


def test_observation_key_is_the_utc_start_to_the_second():
    assert observation_key(START) == KEY
    assert observation_key(START + timedelta(microseconds=999_999)) == KEY


def test_observation_key_converts_other_zones_to_utc():
    pacific = timezone(timedelta(hours=-8))

    assert observation_key(START.astimezone(pacific)) == KEY
    assert observation_key(datetime(2025, 3, 1, 23, 30, tzinfo=pacific)) == "2025-03-02T07:30:00"


def test_targets_carry_their_prefix():
    assert observation_target(KEY) == f"obs:{KEY}"
    assert group_target(42) == "group:42"


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        (observation_target(KEY), ("obs", KEY)),
        (group_target(7), ("group", "7")),
        ("obs:", ("obs", "")),
    ],
)
def test_parse_target_splits_kind_and_name(target, parsed):
    assert parse_target(target) == parsed


@settings(max_examples=100, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    group_id=st.integers(min_value=1, max_value=10**9),
)
def test_parse_target_round_trips(moment, group_id):
    key = observation_key(moment)

    assert parse_target(observation_target(key)) == ("obs", key)
    assert parse_target(group_target(group_id)) == ("group", str(group_id))


@pytest.mark.parametrize("target", ["", "observation:x", "grp:1", "OBS:x", " obs:x", "group"])
def test_parse_target_rejects_a_target_without_a_known_prefix(target):
    with pytest.raises(ValueError, match="names neither an observation nor a group"):
        parse_target(target)


@pytest.mark.parametrize(
    ("make_path", "expected"),
    [
        (measurement_set_path, "ms/2025-03-01/2025-03-01T12:34:56.ms"),
        (calibrated_ms_path, "calibrated/2025-03-01/2025-03-01T12:34:56.cal.ms"),
        (caltable_prefix, "caltables/2025-03-01/2025-03-01T12:34:56"),
        (image_prefix, "images/2025-03-01/2025-03-01T12:34:56"),
    ],
)
def test_observation_products_live_under_the_day_of_their_key(make_path, expected):
    assert make_path(WORK, KEY) == WORK / expected
    assert make_path(WORK, KEY) == make_path(Path("/data/work"), KEY)


def test_observation_products_of_one_key_never_collide():
    paths = [f(WORK, KEY) for f in (measurement_set_path, calibrated_ms_path, image_prefix)]
    paths.append(caltable_prefix(WORK, KEY))

    assert len(set(paths)) == 4


@pytest.mark.parametrize(
    "make_path", [measurement_set_path, calibrated_ms_path, caltable_prefix, image_prefix]
)
def test_products_made_under_other_settings_have_names_of_their_own(make_path):
    old, new = make_path(WORK, KEY, "0123456789ab"), make_path(WORK, KEY, "ba9876543210")

    assert len({old, new, make_path(WORK, KEY)}) == 3
    assert old.parent == new.parent == make_path(WORK, KEY).parent
    assert old.name.startswith(f"{KEY}.0123456789ab")
    with pytest.raises(PermanentError, match="fingerprint"):
        make_path(WORK, KEY, "../../etc")


def test_window_label_is_compact_utc():
    pacific = timezone(timedelta(hours=-8))
    end = START + timedelta(hours=1)

    assert window_label(START, end) == "20250301T123456_20250301T133456"
    assert window_label(START.astimezone(pacific), end.astimezone(pacific)) == (
        "20250301T123456_20250301T133456"
    )


def test_staging_dir_names_group_and_generation():
    assert staging_dir(WORK, 42, 3) == WORK / "staging" / "group000042_g3"
    assert staging_dir(WORK, 42, 3) != staging_dir(WORK, 42, 4)
    assert staging_dir(WORK, 42, 3) != staging_dir(WORK, 43, 3)
