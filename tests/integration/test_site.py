"""``[site]`` reaches every step: the calibrator transit a solve is asked for, the meridian
the converter rephases to, and where the imager says the dish pointed."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.db import artifacts
from reconciler.db.engine import reading, writing
from reconciler.errors import PermanentError
from reconciler.io.convert import phase_centre_ra_deg
from reconciler.io.imaging import pointing_icrs
from reconciler.model import ActionKey, ActionKind, ClaimedAction, Site
from reconciler.naming import observation_target
from reconciler.sky import DSA110, transit_finder
from reconciler.steps import solve
from tests.world import add_calibrator, add_observations

GREENWICH = Site(latitude_deg=51.4779, longitude_deg=0.0, height_m=46.0)
MOMENT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RA_0834 = 128.7288


def east_of(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


@pytest.mark.parametrize("where", [phase_centre_ra_deg, pointing_icrs])
def test_the_meridian_is_the_configured_sites(where):
    at_ovro = where(MOMENT, 55.57, site=DSA110)
    at_greenwich = where(MOMENT, 55.57, site=GREENWICH)
    ra_ovro = at_ovro[0] if isinstance(at_ovro, tuple) else at_ovro
    ra_greenwich = at_greenwich[0] if isinstance(at_greenwich, tuple) else at_greenwich
    # The meridian is 118.28° further east at Greenwich at the same moment.
    assert east_of(ra_greenwich, ra_ovro) == pytest.approx(-DSA110.longitude_deg, abs=0.5)


def test_the_solve_step_takes_the_transit_at_the_configured_site(engine, settings):
    transit = transit_finder(GREENWICH)(
        RA_0834, 55.57, datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC)
    )[0]
    (key,) = add_observations(engine, 1, start=transit - timedelta(minutes=2))
    add_calibrator(engine)
    with writing(engine) as conn:
        artifacts.record_measurement_set(
            conn,
            key,
            path=str(settings.paths.work / "ms" / f"{key}.ms"),
            start=transit,
            mid=transit,
            end=transit,
            ra_deg=RA_0834,
            dec_deg=55.57,
            n_rows=1,
            n_channels=1,
        )
    claimed = ClaimedAction(
        1, ActionKey(ActionKind.SOLVE, observation_target(key)), None, 1, "test", "t", transit
    )
    at_greenwich = replace(settings, site=GREENWICH)

    with reading(engine) as conn:
        payload = solve.prepare(conn, claimed, at_greenwich)
        with pytest.raises(PermanentError, match="no transit of 0834"):
            solve.prepare(conn, claimed, settings)  # at DSA-110 nothing transits then

    assert abs(datetime.fromisoformat(payload["transit"]) - transit) < timedelta(seconds=1)
    assert payload["site"] == asdict(GREENWICH)
