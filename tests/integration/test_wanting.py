"""Calibrator-centred requests, calibrator-only SQL rows, the default tiling, late data.

Metadata-only observations (tests.world) and the test actions; transits are injected so
the calibrator's transit lies where each test needs it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text

from reconciler.config import Settings
from reconciler.db.engine import reading, writing
from reconciler.db.models import Event, MosaicGroup, MosaicGroupMember, Observation
from reconciler.desired.centred import request_centred
from reconciler.desired.late import new_generation
from reconciler.desired.tiling import create_tiling_windows, observation_limit
from reconciler.engine.registry import load_registry
from reconciler.errors import NotFoundError, RequestError
from reconciler.service import Reconciler
from reconciler.windows import ObservationSpan, WindowState, tile_windows
from tests.conftest import make_settings
from tests.world import DEC, OBSERVATION, T0, add_calibrator, add_observations, add_solution

LATER = T0 + timedelta(days=1)
MINUTE = timedelta(minutes=1)


def at(*moments: datetime):
    """A transit finder that knows only ``moments``."""

    def find(ra: float, dec: float, start: datetime, end: datetime) -> list[datetime]:
        return [t for t in moments if start <= t <= end]

    return find


def reconciler(
    engine: Engine, settings: Settings, *, now: datetime = LATER, transits=None
) -> Reconciler:
    return Reconciler(
        engine,
        settings,
        load_registry(settings),
        clock=lambda: now,
        jitter=lambda: 0.5,
        transits=transits or at(),
    )


def tiling(tmp_path, db_url, **changes) -> Settings:
    return make_settings(
        tmp_path, db_url, tiling={"enabled": True, "max_new_per_pass": 20, **changes}
    )


def group_rows(engine: Engine) -> list:
    with reading(engine) as conn:
        return conn.execute(select(MosaicGroup).order_by(MosaicGroup.id)).all()


def members(engine: Engine, group_id: int) -> list[str]:
    with reading(engine) as conn:
        return list(
            conn.execute(
                select(Observation.key)
                .join(MosaicGroupMember, MosaicGroupMember.observation_id == Observation.id)
                .where(MosaicGroupMember.group_id == group_id)
                .order_by(MosaicGroupMember.position)
            ).scalars()
        )


def events(engine: Engine, group_id: int, kind: str) -> list[str]:
    with reading(engine) as conn:
        return list(
            conn.execute(
                select(Event.message)
                .where(Event.group_id == group_id, Event.kind == kind)
                .order_by(Event.id)
            ).scalars()
        )


def runs(settings: Settings) -> list[str]:
    path = settings.paths.work / "runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["label"] for line in path.read_text().splitlines()]


def windows_of(engine: Engine) -> list[tuple[str, str, int]]:
    """(first member, last member, count) of each tiling group, in time order."""
    found = []
    with reading(engine) as conn:
        for row in conn.execute(
            select(MosaicGroup)
            .where(MosaicGroup.origin == "tiling")
            .order_by(MosaicGroup.window_start)
        ):
            keys = list(
                conn.execute(
                    select(Observation.key)
                    .where(
                        Observation.start_time >= row.window_start,
                        Observation.start_time < row.window_end,
                        func.abs(Observation.dec_deg - row.dec_deg) <= 1.0,
                    )
                    .order_by(Observation.start_time)
                ).scalars()
            )
            found.append((keys[0], keys[-1], len(keys)))
    return found


def pure_windows(keys: Sequence[str], engine: Engine, settings: Settings) -> list[tuple]:
    with reading(engine) as conn:
        rows = conn.execute(select(Observation).where(Observation.key.in_(keys))).all()
    tiled = tile_windows(
        [ObservationSpan(r.key, r.start_time, r.end_time, r.dec_deg) for r in rows],
        max_gap=timedelta(minutes=settings.tiling.max_gap_minutes),
        dec_tolerance_deg=1.0,
        size=settings.tiling.size,
        stride=settings.tiling.stride,
        closed_before=LATER,
    )
    return [(w.members[0], w.members[-1], len(w.members)) for w in tiled.windows]


# --- calibrator-centred requests -------------------------------------------------------


def test_data_before_the_first_transit_centre_the_window_on_that_transit(engine, settings):
    keys = add_observations(engine, 30)
    add_calibrator(engine)
    first = T0 + timedelta(minutes=60)
    transits = at(T0 - timedelta(days=1), first, first + timedelta(days=1))

    result, found = request_centred(engine, settings, "0834+555", 50, transits=transits, now=LATER)

    assert result.created and found.transit == first
    assert found.window.state is WindowState.COMPLETE
    assert found.start <= first - timedelta(minutes=25) and found.end == first + 25 * MINUTE
    (row,) = group_rows(engine)
    assert (row.origin, row.calibrator_name, row.timespan_minutes) == ("calibrator", "0834+555", 50)
    assert row.dec_deg == pytest.approx(DEC) and row.window_end == found.end
    assert found.window.members == tuple(keys[6:17])

    again, _ = request_centred(engine, settings, "0834+555", 50, transits=transits, now=LATER)
    assert (again.group_id, again.created) == (result.group_id, False)

    snapshot = reconciler(engine, settings, transits=transits).snapshot([result.group_id])
    assert [m.key for m in snapshot.groups[0].observed.members] == keys[6:17]


def test_data_that_end_early_give_an_asymmetric_window(engine, settings):
    keys = add_observations(engine, 8)
    add_calibrator(engine)
    transit = T0 + 10 * MINUTE  # the window would start 15 minutes before the data

    _, found = request_centred(engine, settings, "0834+555", 50, transits=at(transit), now=LATER)

    assert found.window.state is WindowState.SHORT
    assert found.window.members == tuple(keys[:7]) and found.start == T0


def test_too_few_observations_are_refused_saying_what_is_missing(engine, settings):
    add_observations(engine, 2)
    add_calibrator(engine)

    with pytest.raises(RequestError) as refused:
        request_centred(engine, settings, "0834+555", 50, transits=at(T0 + 5 * MINUTE), now=LATER)

    message = str(refused.value)
    assert "only 2 observation(s) at dec 55.57" in message and "at least 3 needed" in message
    assert group_rows(engine) == []


def test_an_unknown_calibrator_names_the_closest_ones(engine, settings):
    add_calibrator(engine)
    with pytest.raises(
        NotFoundError, match=r"unknown calibrator '0834\+554'; did you mean 0834\+555"
    ):
        request_centred(engine, settings, "0834+554", 50, transits=at(), now=LATER)


# --- calibrator-only rows inserted with plain SQL --------------------------------------


def insert_sql(engine: Engine, name: str, minutes: float | None = 50) -> int:
    with writing(engine) as conn:
        if minutes is None:
            conn.execute(
                text("INSERT INTO mosaic_groups (calibrator_name) VALUES (:n)"), {"n": name}
            )
        else:
            conn.execute(
                text(
                    "INSERT INTO mosaic_groups (calibrator_name, timespan_minutes) VALUES (:n, :m)"
                ),
                {"n": name, "m": minutes},
            )
        return conn.execute(select(func.max(MosaicGroup.id))).scalar_one()


def test_a_plain_sql_row_naming_a_calibrator_is_filled_in_by_the_pass(engine, settings):
    keys = add_observations(engine, 30)
    add_calibrator(engine)
    transit = T0 + timedelta(minutes=60)
    group = insert_sql(engine, "0834+555", None)

    reconciler(engine, settings, transits=at(transit)).run_pass(_stopped())

    (row,) = group_rows(engine)
    assert (row.id, row.origin, row.timespan_minutes) == (group, "calibrator", 50)
    assert row.window_end == transit + 25 * MINUTE and row.dec_deg == pytest.approx(DEC)
    assert row.phase == "converting"
    assert members(engine, group) == keys[6:17]
    assert "centred on the transit of 0834+555" in events(engine, group, "resolved")[0]


def test_an_unknown_calibrator_in_sql_makes_the_row_invalid_with_the_closest_names(
    engine, settings
):
    add_calibrator(engine)
    insert_sql(engine, "0834+556")

    reconciler(engine, settings).want()

    (row,) = group_rows(engine)
    assert row.phase == "invalid" and row.window_start is None
    assert "did you mean 0834+555" in row.status_reason


def test_a_sql_row_without_transit_data_waits_and_says_why_once(engine, settings):
    add_calibrator(engine)
    group = insert_sql(engine, "0834+555")
    service = reconciler(engine, settings, transits=at(T0))

    for _ in range(2):
        service.want()
        service.reconcile()

    (row,) = group_rows(engine)
    assert row.phase == "waiting" and "transit of 0834+555" in row.status_reason
    (note,) = events(engine, group, "unresolved")
    assert "no observations at dec 55.57±1.5" in note

    add_observations(engine, 12, start=T0 - 30 * MINUTE)
    service.want()
    assert group_rows(engine)[0].window_end == T0 + 25 * MINUTE


def test_a_resolved_window_equal_to_another_group_is_reported_not_a_crash(engine, settings):
    add_observations(engine, 30)
    add_calibrator(engine)
    transits = at(T0 + timedelta(minutes=60))
    first, _ = request_centred(engine, settings, "0834+555", 50, transits=transits, now=LATER)
    insert_sql(engine, "0834+555")

    reconciler(engine, settings, transits=transits).run_pass(_stopped())

    twin_row = group_rows(engine)[1]
    assert twin_row.phase == "invalid" and twin_row.window_start is None
    assert f"same window as group {first.group_id}" in twin_row.status_reason


def _stopped() -> threading.Event:
    """A stop already set: the pass reconciles but performs no action."""
    stop = threading.Event()
    stop.set()
    return stop


# --- default tiling --------------------------------------------------------------------


def test_tiling_makes_overlapping_windows_and_a_short_last_one(engine, tmp_path, db_url):
    settings = tiling(tmp_path, db_url)
    keys = add_observations(engine, 20)

    report = create_tiling_windows(engine, settings, now=LATER)

    assert windows_of(engine) == [
        (keys[0], keys[9], 10),
        (keys[8], keys[17], 10),
        (keys[16], keys[19], 4),
    ]
    assert len(report.created) == 3
    rows = group_rows(engine)
    assert {r.origin for r in rows} == {"tiling"} and all(
        r.dec_deg == pytest.approx(DEC) for r in rows
    )
    assert create_tiling_windows(engine, settings, now=LATER).created == []


def test_the_same_data_give_the_same_windows_whatever_order_they_arrive_in(
    engine, tmp_path, db_url
):
    # Every third observation arrives 9 minutes after its end, after the next one; the
    # tiling runs at every arrival. The arrival grace (15 minutes from the data start)
    # bounds how late an observation can be.
    settings = make_settings(
        tmp_path,
        db_url,
        tiling={"enabled": True, "max_new_per_pass": 20},
        windows={"arrival_grace_minutes": 15.0},
    )
    delays = [9 if i % 3 == 0 else 0 for i in range(20)]  # minutes
    arrivals = sorted((T0 + (i + 1) * OBSERVATION + delays[i] * MINUTE, i) for i in range(20))
    assert [i for _, i in arrivals] != sorted(i for _, i in arrivals)
    keys = []
    for arrived, i in arrivals:
        keys += add_observations(engine, 1, start=T0 + i * OBSERVATION)
        create_tiling_windows(engine, settings, now=arrived)
    so_far = windows_of(engine)
    assert so_far == pure_windows(keys, engine, settings)[: len(so_far)] and len(so_far) == 2

    create_tiling_windows(engine, settings, now=LATER)

    assert windows_of(engine) == pure_windows(keys, engine, settings)
    assert len(windows_of(engine)) == 3


def test_tiling_work_per_pass_is_bounded_and_a_backlog_drains_in_order(engine, tmp_path, db_url):
    settings = tiling(tmp_path, db_url, max_new_per_pass=2)
    keys = add_observations(engine, 80)

    created: list[int] = []
    for _ in range(10):
        report = create_tiling_windows(engine, settings, now=LATER)
        if not report.created:
            break
        assert len(report.created) <= 2
        assert report.observations_read <= observation_limit(settings, 2) < len(keys)
        created += report.created

    assert created == sorted(created)
    assert windows_of(engine) == pure_windows(keys, engine, settings)
    starts = [r.window_start for r in group_rows(engine)]
    assert starts == sorted(starts), "earliest window first"


def test_no_new_windows_while_enough_are_in_flight(engine, tmp_path, db_url):
    settings = tiling(tmp_path, db_url, max_in_flight=1)
    add_observations(engine, 30)

    assert len(create_tiling_windows(engine, settings, now=LATER).created) == 1
    report = create_tiling_windows(engine, settings, now=LATER)
    assert report.created == [] and "in flight" in report.skipped


def test_gaps_split_the_tiling_and_a_too_short_run_is_reported(engine, tmp_path, db_url):
    settings = tiling(tmp_path, db_url)
    first = add_observations(engine, 5)
    fragment = add_observations(engine, 2, start=T0 + timedelta(hours=2))
    last = add_observations(engine, 4, start=T0 + timedelta(hours=4))

    report = create_tiling_windows(engine, settings, now=LATER)

    assert len(report.created) == 2 and len(report.too_short) == 1
    rows = {r.id: r for r in group_rows(engine)}
    short = rows[report.too_short[0]]
    assert (
        short.phase == "invalid"
        and "too short to mosaic: only 2 observation(s)" in short.status_reason
    )
    assert members(engine, short.id) == fragment
    assert windows_of(engine) == [
        (first[0], first[-1], 5),
        (fragment[0], fragment[-1], 2),
        (last[0], last[-1], 4),
    ]


def test_a_dec_change_in_the_middle_of_the_data_starts_new_windows(engine, tmp_path, db_url):
    settings = tiling(tmp_path, db_url)
    north = add_observations(engine, 6)
    south = add_observations(engine, 6, start=T0 + 6 * OBSERVATION, dec_deg=30.0)

    create_tiling_windows(engine, settings, now=LATER)
    reconciler(engine, settings).reconcile()

    rows = group_rows(engine)
    assert [round(r.dec_deg, 2) for r in rows] == [DEC, 30.0]
    assert members(engine, rows[0].id) == north and members(engine, rows[1].id) == south


def test_consecutive_windows_share_two_observations_and_their_products(engine, tmp_path, db_url):
    settings = tiling(tmp_path, db_url, size=5, stride=3)
    keys = add_observations(engine, 8)
    add_solution(engine, keys[0])

    report = reconciler(engine, settings).run_pass()

    assert not report.failed
    rows = group_rows(engine)
    assert [r.phase for r in rows] == ["published", "published"]
    assert set(members(engine, rows[0].id)) & set(members(engine, rows[1].id)) == set(keys[3:5])
    labels = runs(settings)
    for kind in ("convert", "apply", "image"):
        assert sorted(label for label in labels if label.startswith(kind)) == sorted(
            f"{kind} obs:{k}" for k in keys
        ), f"each observation {kind} once"


@pytest.mark.parametrize("transit_in", [1, 4], ids=["in-first-window", "after-first-window"])
def test_the_calibrator_transit_inside_one_window_and_outside_another(
    engine, tmp_path, db_url, transit_in
):
    # Windows [0-2] and [2-4]. A transit in observation 1 is inside the first window and
    # outside the second; one in observation 4 comes after all the data of the first
    # window (data before the first transit). Either way it is solved on once, and the
    # window without it is calibrated from it.
    settings = tiling(tmp_path, db_url, size=3, stride=2)
    keys = add_observations(engine, 5)
    add_calibrator(engine)
    transit = T0 + transit_in * OBSERVATION + OBSERVATION / 2

    reconciler(engine, settings, transits=at(transit)).run_pass()

    assert [r.phase for r in group_rows(engine)] == ["published", "published"]
    solves = [label for label in runs(settings) if label.startswith("solve")]
    assert solves == [f"solve obs:{keys[transit_in]}"]


# --- missing and late data -------------------------------------------------------------


def test_missing_observations_in_the_middle_of_a_window(engine, tmp_path, db_url):
    settings = tiling(tmp_path, db_url, size=5, stride=4)
    keys = add_observations(engine, 2) + add_observations(engine, 3, start=T0 + 3 * OBSERVATION)
    add_solution(engine, keys[0])

    reconciler(engine, settings).run_pass()

    (row,) = group_rows(engine)
    assert row.phase == "published"
    assert members(engine, row.id) == keys
    assert row.window_end - row.window_start == 6 * OBSERVATION


def test_late_data_for_a_published_window_is_reported_and_a_new_version_made_on_request(
    engine, tmp_path, db_url
):
    settings = tiling(tmp_path, db_url, size=5, stride=4)
    keys = add_observations(engine, 2) + add_observations(engine, 3, start=T0 + 3 * OBSERVATION)
    add_solution(engine, keys[0])
    service = reconciler(engine, settings)
    service.run_pass()
    (row,) = group_rows(engine)
    first_path = row.published_path

    (late,) = add_observations(engine, 1, start=T0 + 2 * OBSERVATION)
    before = len(runs(settings))
    service.run_pass()
    service.run_pass()

    (row,) = group_rows(engine)
    assert row.phase == "published" and row.published_path == first_path
    assert (
        f"late data: 1 observation(s) arrived after this mosaic was made ({late})"
        in row.status_reason
    )
    assert f"--new-version {row.id}" in row.status_reason
    assert len(events(engine, row.id, "late_data")) == 1
    assert len(runs(settings)) == before, "nothing is redone without a request"

    assert new_generation(engine, row.id) == 2
    service.run_pass()

    (row,) = group_rows(engine)
    assert row.phase == "published" and row.generation == 2
    assert row.published_path != first_path and "late data" not in row.status_reason
    assert members(engine, row.id) == sorted([*keys, late])
    labels = runs(settings)
    assert labels.count(f"image obs:{late}") == 1 and labels.count(f"image obs:{keys[0]}") == 1
    assert labels.count(f"publish group:{row.id}") == 2


def test_a_new_version_is_only_made_of_a_published_group(engine, settings):
    from reconciler.desired.explicit import request_window

    group = request_window(
        engine, T0, T0 + 3 * OBSERVATION, max_window=timedelta(hours=24)
    ).group_id
    with pytest.raises(RequestError, match="not published"):
        new_generation(engine, group)
    with pytest.raises(NotFoundError):
        new_generation(engine, 999)
