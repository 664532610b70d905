"""The demo: simulate an hour around a 0834+555 transit and run the service until published.

Everything lives under one directory (default ``var/demo``): raw files, work products, the
SQLite database and the published mosaic. Running it again reuses what is there, so a
second run only reports.
"""

from __future__ import annotations

import shutil
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from reconciler.catalogue import load_calibrators
from reconciler.config import PathSettings, Settings
from reconciler.db import calibrators
from reconciler.db.engine import engine_for, reading, writing
from reconciler.db.migrate import upgrade
from reconciler.desired import explicit
from reconciler.progress import follow
from reconciler.service import Reconciler
from reconciler.status import STATUS_COLUMNS, render_table, status_rows
from reconciler.steps import product_registry
from reconciler.web.serve import site_in_background

CALIBRATOR = "0834+555"
DEC_DEG = 55.57
#: A fixed day, so every run of the demo sees the same sky.
DAY = datetime(2025, 3, 1, tzinfo=UTC)
SIMULATED_MINUTES = 60.0
WINDOW = timedelta(minutes=50)
#: A quarter-size array (625 m by 375 m) has coarse enough resolution that a tile covering
#: the primary beam down to ~0.2 is a few hundred pixels: imaging takes seconds, not minutes.
ARRAY_SCALE = 0.25
FIELD_OF_VIEW_DEG = 3.6
#: The correlator shape and noise the demo simulates (besides the sky and the array size).
SIMULATION = {
    "n_subbands": 4,
    "n_antennas": 16,
    "channels_per_subband": 8,
    "noise_jy": 0.05,
    "seed": 1,
}


def demo_settings(base: Path, settings: Settings) -> Settings:
    """The user's settings with everything under ``base``, SQLite, and the demo's shape."""
    return replace(
        settings,
        database=replace(
            settings.database, url=f"sqlite:///{(base / 'reconciler.sqlite').resolve()}"
        ),
        paths=PathSettings(
            incoming=base / "incoming", work=base / "work", products=base / "products"
        ),
        discovery=replace(settings.discovery, expected_subbands=4, min_subbands=4, grace_minutes=0),
        windows=replace(settings.windows, arrival_grace_minutes=0),
        passes=replace(settings.passes, workers=2, max_actions=200),
        tiling=replace(settings.tiling, enabled=False),
        imaging=replace(
            settings.imaging,
            backend=demo_backend(settings.imaging.backend),
            field_of_view_deg=FIELD_OF_VIEW_DEG,
            niter=1000,
        ),
        # The noise the simulator adds, as the radiometer equation's SEFD. Sixteen
        # antennas image 0834+555 (8.8 Jy) to a dynamic range of a few thousand: its
        # sidelobes, not the thermal noise, set the rms, tens of times the thermal noise.
        # The assessment says so (a warning); it holds back only a hundred times.
        qa=replace(settings.qa, sefd_jy=demo_sefd_jy(), efficiency=1.0, noise_ratio_fail=100.0),
    )


def demo_sefd_jy() -> float:
    """The SEFD equivalent to the demo's simulated noise."""
    from reconciler.io.simulator import equivalent_sefd_jy

    return equivalent_sefd_jy(SIMULATION["noise_jy"], SIMULATION["channels_per_subband"])


def demo_backend(configured: str) -> str:
    """The configured imager, or tclean where ``wsclean`` is not installed: the demo needs
    no system package."""
    if configured == "wsclean" and shutil.which("wsclean") is None:
        return "tclean"
    return configured


def demo_transit() -> datetime:
    """The transit of the demo's calibrator on the demo's day (UTC)."""
    from reconciler.io.simulator import calibrator_field_sources
    from reconciler.sky import meridian_transits

    source = next(s for s in calibrator_field_sources() if s.name == CALIBRATOR)
    return meridian_transits(source.ra_deg, source.dec_deg, DAY, DAY + timedelta(days=1))[0]


def simulate_demo_data(directory: Path, transit: datetime) -> None:
    """Write the demo's raw files (the hour around ``transit``) into ``directory``."""
    from reconciler.io.simulator import calibrator_field_sources, simulate_observations

    simulate_observations(
        directory,
        transit - timedelta(minutes=SIMULATED_MINUTES / 2),
        SIMULATED_MINUTES,
        DEC_DEG,
        sources=calibrator_field_sources(),
        array_scale=ARRAY_SCALE,
        **SIMULATION,
    )


def _linger(url: str, out: TextIO) -> None:
    """Keep the page up for the person at the terminal until they press Ctrl-C."""
    print(f"the page stays up at {url} until Ctrl-C", file=out, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("", file=out)


def run_demo(base: Path, settings: Settings, *, out: TextIO = sys.stdout) -> int:
    """Set up, simulate if needed, request the window, run until published; 0 on success."""
    settings = demo_settings(base.absolute(), settings)
    engine = engine_for(settings)
    upgrade(engine)
    with writing(engine) as conn:
        calibrators.upsert_calibrators(
            conn, load_calibrators(settings.calibration.catalogue), overwrite=False
        )
    transit = demo_transit()
    incoming = settings.paths.incoming
    if not any(incoming.glob("*.hdf5")):
        print(
            f"simulating {SIMULATED_MINUTES:g} min around the {CALIBRATOR} transit at "
            f"{transit:%Y-%m-%d %H:%M:%S} UTC into {incoming}",
            file=out,
            flush=True,
        )
        simulate_demo_data(incoming, transit)
    start = (transit - WINDOW / 2).replace(microsecond=0)
    request = explicit.request_window(
        engine, start, start + WINDOW, max_window=settings.decide_policy.max_window, actor="demo"
    )
    print(
        f"mosaic group {request.group_id}: {start:%H:%M:%S}–{start + WINDOW:%H:%M:%S} UTC, "
        f"imaged by {settings.imaging.backend}",
        file=out,
        flush=True,
    )

    stop = threading.Event()
    reconciler = Reconciler(engine, settings, product_registry())

    def serve() -> None:
        while not stop.is_set():
            report = reconciler.run_pass(stop)
            if not report.actions:
                stop.wait(1.0)

    worker = threading.Thread(target=serve, name="demo-service", daemon=True)
    worker.start()
    try:
        with site_in_background(engine, settings) as url:
            if url is not None:
                print(f"watch it fill in: {url}", file=out, flush=True)
            progress = follow(engine, request.group_id, timeout=1800, out=out)
            stop.set()
            worker.join()
            with reading(engine) as conn:
                rows = status_rows(conn)
            print(render_table(rows, STATUS_COLUMNS), file=out)
            if progress.phase != "published":
                print(f"demo ended in phase {progress.phase}: {progress.reason}", file=out)
                return 1
            print(f"\npublished mosaic: {progress.published_path}", file=out)
            if url is not None and sys.stdin.isatty():
                _linger(url, out)
    finally:
        stop.set()
        worker.join()
    return 0
