"""The Python API (MosaicOrchestrator) and the CLI commands built on the same functions:
``request --calibrator [--wait]``, ``request --new-version`` and ``transits``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import astropy.units as u
import pytest
from astropy.time import Time
from scipy.optimize import brentq
from sqlalchemy import func, select, text

from reconciler import MosaicOrchestrator, sky
from reconciler.api import MosaicNotPublishedError, MosaicTimeoutError
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.db.engine import reading, writing
from reconciler.db.models import MosaicGroup
from reconciler.desired.centred import NoTransitData, TransitWindow
from reconciler.errors import NotFoundError
from reconciler.windows import WindowRefusal, WindowState
from tests.conftest import make_settings
from tests.unit.test_sky import DEC_0834, RA_0834, erfa_observed_hour_angle_rad
from tests.world import DEC, OBSERVATION, T0, add_calibrator, add_observations, add_solution

LATER = T0 + timedelta(days=1)
TRANSIT = T0 + timedelta(minutes=60)


def at(*moments: datetime):
    def find(ra: float, dec: float, start: datetime, end: datetime) -> list[datetime]:
        return [t for t in moments if start <= t <= end]

    return find


def orchestrator(settings: Settings, **kwargs) -> MosaicOrchestrator:
    return MosaicOrchestrator(settings, clock=lambda: LATER, transits=at(TRANSIT), **kwargs)


def count_groups(engine) -> int:
    with reading(engine) as conn:
        return conn.execute(select(func.count()).select_from(MosaicGroup)).scalar_one()


# --- MosaicOrchestrator ----------------------------------------------------------------


def test_find_transit_centered_window_creates_nothing(engine, settings):
    keys = add_observations(engine, 30)
    add_calibrator(engine)

    found = orchestrator(settings).find_transit_centered_window("0834+555", 50)

    assert isinstance(found, TransitWindow)
    assert found.transit == TRANSIT and found.window.state is WindowState.COMPLETE
    assert found.window.members == tuple(keys[6:17])
    assert count_groups(engine) == 0


def test_find_transit_centered_window_returns_refusals(engine, settings):
    add_calibrator(engine)
    api = orchestrator(settings)

    nothing = api.find_transit_centered_window("0834+555", 50)
    assert isinstance(nothing, NoTransitData) and "no observations at dec" in nothing.reason

    add_observations(engine, 2, start=TRANSIT - OBSERVATION)
    refusal = api.find_transit_centered_window("0834+555", 50)
    assert isinstance(refusal, WindowRefusal) and refusal.final
    assert "only 2 observation(s)" in refusal.reason

    with pytest.raises(NotFoundError, match="did you mean 0834"):
        api.find_transit_centered_window("0834+55")


def test_create_without_waiting_returns_the_group(engine, settings):
    add_observations(engine, 30)
    add_calibrator(engine)
    api = orchestrator(settings)

    group = api.create_mosaic_centered_on_calibrator("0834+555", 50, wait_for_published=False)

    assert isinstance(group, int)
    with reading(engine) as conn:
        row = conn.execute(select(MosaicGroup).where(MosaicGroup.id == group)).one()
    assert (row.origin, row.calibrator_name, row.window_end) == (
        "calibrator",
        "0834+555",
        TRANSIT + timedelta(minutes=25),
    )
    assert api.create_mosaic_centered_on_calibrator("0834+555", wait_for_published=False) == group


def test_create_and_wait_returns_the_published_path(engine, settings):
    keys = add_observations(engine, 5, start=TRANSIT - 2 * OBSERVATION)
    add_solution(engine, keys[0])

    path = orchestrator(settings).create_mosaic_centered_on_calibrator(
        "0834+555", timespan_minutes=15, timeout=120
    )

    assert isinstance(path, str) and Path(path).is_file()
    assert Path(path).parent.name == "publish"


def test_wait_for_published_raises_on_failure_and_on_timeout(engine, settings):
    keys = add_observations(engine, 5, start=TRANSIT - 2 * OBSERVATION)
    add_solution(engine, keys[0])
    api = orchestrator(settings)
    group = api.create_mosaic_centered_on_calibrator("0834+555", 15, wait_for_published=False)

    with pytest.raises(MosaicTimeoutError, match=f"group {group} not published after 0 s"):
        api.wait_for_published(group, timeout=0)

    (settings.paths.work / "behaviour.json").write_text(
        json.dumps({"mosaic": {"fail": "permanent", "fail_times": 9}})
    )
    with pytest.raises(MosaicNotPublishedError, match="is failed, not published") as failed:
        api.wait_for_published(group, timeout=120)
    assert "broken for good" in str(failed.value)


def test_find_earliest_incomplete_window(engine, tmp_path, db_url):
    settings = make_settings(
        tmp_path, db_url, tiling={"enabled": True, "size": 3, "stride": 2, "max_new_per_pass": 9}
    )
    keys = add_observations(engine, 5)
    api = orchestrator(settings)

    planned = api.find_earliest_incomplete_window()
    assert planned.members == tuple(keys[:3]) and planned.state is WindowState.COMPLETE
    assert count_groups(engine) == 0, "finding creates nothing"
    assert api.find_earliest_incomplete_window(dec_deg=30.0) is None

    from reconciler.desired.tiling import create_tiling_windows

    create_tiling_windows(engine, settings, now=LATER)
    assert api.find_earliest_incomplete_window(dec_deg=DEC).members == tuple(keys[:3])
    with writing(engine) as conn:
        conn.execute(text("UPDATE mosaic_groups SET phase = 'published' WHERE id = 1"))
    assert api.find_earliest_incomplete_window().members == tuple(keys[2:5])
    with writing(engine) as conn:
        conn.execute(text("UPDATE mosaic_groups SET phase = 'published'"))
    assert api.find_earliest_incomplete_window() is None


def test_settings_come_from_a_config_file(tmp_path, db_url):
    config = tmp_path / "api.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n[tiling]\nsize = 6\nstride = 5\n')

    api = MosaicOrchestrator(config_path=config)

    assert api.settings.tiling.size == 6 and api.settings.database_url == db_url


# --- the CLI ---------------------------------------------------------------------------


def cli(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def real_transit() -> datetime:
    """The transit of the calibrator tests.world registers, on the day of T0."""
    return sky.meridian_transits(128.7288, DEC, T0, T0 + timedelta(days=1))[0]


def test_cli_request_calibrator_and_wait_until_published(config, engine, capsys):
    transit = real_transit()
    keys = add_observations(engine, 4, start=transit - timedelta(minutes=10))
    add_solution(engine, keys[0])

    status = cli(
        config, "request", "--calibrator", "0834+555", "--timespan-minutes", "15", "--wait",
        "--timeout", "120", "--json",
    )  # fmt: skip

    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert status == 0, captured.err
    assert data["created"] and data["phase"] == "published"
    assert Path(data["published_path"]).is_file()
    assert data["observations"] == 4 and data["state"] == "complete"
    assert abs(datetime.fromisoformat(data["transit"]) - transit) < timedelta(seconds=1)
    assert "published" in captured.err, "progress lines go to stderr"


def test_cli_wait_times_out_with_status_3(config, engine, capsys):
    transit = real_transit()
    keys = add_observations(engine, 4, start=transit - timedelta(minutes=10))
    add_solution(engine, keys[0])

    status = cli(config, "request", "--calibrator", "0834+555", "--timespan-minutes", "15",
                 "--wait", "--timeout", "0", "--json")  # fmt: skip

    assert status == 3
    assert json.loads(capsys.readouterr().out)["published_path"] is None


def test_cli_wait_on_a_failing_mosaic_exits_1(config, engine, tmp_path, capsys):
    transit = real_transit()
    keys = add_observations(engine, 4, start=transit - timedelta(minutes=10))
    add_solution(engine, keys[0])
    (tmp_path / "work").mkdir(exist_ok=True)
    (tmp_path / "work" / "behaviour.json").write_text(
        json.dumps({"mosaic": {"fail": "permanent", "fail_times": 9}})
    )

    status = cli(config, "request", "--calibrator", "0834+555", "--timespan-minutes", "15",
                 "--wait", "--timeout", "120")  # fmt: skip

    assert status == 1
    assert "is failed: mosaic group:1 failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["request"], "give exactly one of"),
        (["request", "--calibrator", "0834+555", "--start", "2025-03-01"], "give exactly one of"),
        (["request", "--start", "2025-03-01"], "needs both --start and --end"),
        (["request", "--calibrator", "0834+556"], "did you mean 0834+555"),
        (["request", "--calibrator", "0834+555"], "no observations at dec 55.57"),
        (["request", "--calibrator", "0834+555", "--timespan-minutes", "0"], "must be positive"),
        (["request", "--new-version", "7"], "no mosaic group with id 7"),
        (["transits", "3C286", "--start", "2025-03-01", "--end", "2025-03-02"], "unknown"),
        (["transits", "0834+555", "--start", "2025-03-02", "--end", "2025-03-01"], "after"),
    ],
)
def test_cli_refusals_say_what_is_wrong(config, engine, capsys, args, message):
    add_calibrator(engine)
    assert cli(config, *args) == 2
    assert message in capsys.readouterr().err


def test_cli_new_version_of_a_published_group(config, engine, capsys):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    assert cli(config, "request", "--start", "2025-03-01T00:00:00", "--end", "2025-03-01T00:15:30",
               "--wait", "--timeout", "60") == 0  # fmt: skip
    capsys.readouterr()

    assert cli(config, "request", "--new-version", "1", "--wait", "--json") == 0

    data = json.loads(capsys.readouterr().out)
    assert data["generation"] == 2 and data["phase"] == "published"
    assert data["published_path"].endswith("_g2.txt")


def test_cli_transits_agree_with_an_independent_ephemeris(config, engine, capsys):
    assert cli(config, "calibrators", "add", "0834+555", "--ra", str(RA_0834),
               "--dec", str(DEC_0834), "--flux-jy", "8.8") == 0  # fmt: skip
    capsys.readouterr()

    assert cli(config, "transits", "0834+555", "--start", "2026-11-01", "--end", "2026-11-04",
               "--json") == 0  # fmt: skip

    data = json.loads(capsys.readouterr().out)
    moments = [datetime.fromisoformat(t) for t in data["transits"]]
    assert len(moments) == 3 and all(m.tzinfo is not None for m in moments)
    for moment in moments:
        t = Time(moment.astimezone(UTC))
        offset = brentq(
            lambda s, t=t: erfa_observed_hour_angle_rad(RA_0834, DEC_0834, t + s * u.s),
            -300.0,
            300.0,
            xtol=1e-4,
        )
        assert abs(offset) < 2.0, "within 2 s of ERFA's apparent hour angle zero"
    assert data["site"]["longitude_deg"] == sky.SITE_LONGITUDE_DEG


def test_cli_transits_follow_the_configured_site(config, engine, capsys):
    add_calibrator(engine)
    args = ("transits", "0834+555", "--start", "2026-11-01", "--end", "2026-11-02", "--json")
    assert cli(config, *args) == 0
    (at_dsa110,) = json.loads(capsys.readouterr().out)["transits"]
    config.write_text(config.read_text() + "[site]\nlongitude_deg = -117.2817\n")

    assert cli(config, *args) == 0
    (one_degree_east,) = json.loads(capsys.readouterr().out)["transits"]

    earlier = datetime.fromisoformat(at_dsa110) - datetime.fromisoformat(one_degree_east)
    assert abs(earlier.total_seconds() - sky.SIDEREAL_DAY_S / 360) < 1.0

    assert cli(config, "transits", "0834+555", "--start", "2026-11-01", "--end", "2026-11-02") == 0
    table = capsys.readouterr().out
    assert "meridian transits of 0834+555" in table and "lon -117.282" in table
