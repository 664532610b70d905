"""Disk benchmark: does work/ stay bounded through a day of tiling, and do products grow
only by the published files?

What is run
-----------
``--hours`` of raw files (default 24: 288 observations) are simulated at the demo's shape
(:mod:`reconciler.demo`: 16 antennas, 4 subbands, the 0834+555 strip, from an hour before
its transit), all present from the start. The service runs with the demo's settings, the
default tiling switched on and retention keeping intermediates ``--keep-hours`` after their
windows settle (default 0), passes back to back until every window is settled.

What is measured
----------------
Every 2 s while passes run, the bytes under work/ (as ``du`` counts, by part); after every
pass, also the sizes of the files under products/ and the bytes the registry says were
published (``data_registry.size_bytes``). Printed: the peak and final work/ usage, the
largest intermediates one observation held (converted MS + calibrated MS + image tile,
from the parts and the rows present), and the stated bound on work/:
``((tiling.max_in_flight + 1) × tiling.size + 2)`` observations' intermediates plus the
calibration tables and logs (the windows in flight, one published since retention last
looked, a calibrator transit and one neighbour), with the peak's ratio to it; and
products/ against the published bytes (equal when products grow only by the published
files).

Run from the repository root::

    .venv/bin/python benchmarks/disk_day.py [--hours 24] [--keep-hours 0] [--workers 2]

The last line of output is one JSON object holding all the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from machine import machine_facts  # benchmarks/machine.py, beside this script
from sqlalchemy import func, select

from reconciler.catalogue import load_calibrators
from reconciler.config import Settings
from reconciler.db import calibrators
from reconciler.db.engine import make_engine, reading, writing
from reconciler.db.migrate import upgrade
from reconciler.db.models import CalibratedMS, Image, MeasurementSet, MosaicGroup, RegistryEntry
from reconciler.demo import demo_settings, demo_transit
from reconciler.engine.registry import load_registry
from reconciler.io.usage import tree_bytes
from reconciler.service import Reconciler
from reconciler.status import WORK_PARTS

#: Phases a window ends in (then retention may take its members' intermediates).
SETTLED = ("published", "failed", "insufficient", "cancelled", "invalid")


def simulate(incoming: Path, hours: float) -> int:
    """The demo's raw files for ``hours`` from an hour before the transit; their count."""
    from reconciler.demo import ARRAY_SCALE, DEC_DEG, SIMULATION
    from reconciler.io.simulator import calibrator_field_sources, simulate_observations

    truth = simulate_observations(
        incoming,
        demo_transit() - timedelta(hours=1),
        hours * 60,
        DEC_DEG,
        sources=calibrator_field_sources(),
        array_scale=ARRAY_SCALE,
        **SIMULATION,
    )
    return len(truth.files)


def sample(engine: Any, settings: Settings) -> dict[str, Any]:
    """Bytes under work/ by part and under products/, the published bytes, and what is
    present of each intermediate."""
    work = settings.paths.work
    with reading(engine) as conn:
        published = conn.execute(
            select(func.coalesce(func.sum(RegistryEntry.size_bytes), 0)).where(
                RegistryEntry.status == "published"
            )
        ).scalar_one()
        present = {
            model.__tablename__: conn.execute(
                select(func.count()).where(model.removed_at.is_(None))
            ).scalar_one()
            for model in (MeasurementSet, CalibratedMS, Image)
        }
        phases = dict(
            conn.execute(select(MosaicGroup.phase, func.count()).group_by(MosaicGroup.phase)).all()
        )
    return {
        "at": time.monotonic(),
        "work": tree_bytes(work),
        "parts": {part: tree_bytes(work / part) for part in WORK_PARTS},
        "products": tree_bytes(settings.paths.products, apparent=True),
        "published_bytes": int(published),
        "present": present,
        "phases": phases,
    }


class Sampler(threading.Thread):
    """The bytes under work/ (by part) every ``every`` seconds while passes run: the peak
    inside a pass, not only between passes."""

    def __init__(self, work: Path, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.work, self.every = work, every
        self.peak: dict[str, Any] = {"work": 0, "parts": {}}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            parts = {part: tree_bytes(self.work / part) for part in WORK_PARTS}
            total = tree_bytes(self.work)
            if total > self.peak["work"]:
                self.peak = {"work": total, "parts": parts}


def per_observation(samples: list[dict[str, Any]]) -> int:
    """The largest intermediates one observation held: each part's bytes over its rows."""
    parts = {"ms": "measurement_sets", "calibrated": "calibrated_ms", "images": "images"}
    best = dict.fromkeys(parts, 0.0)
    for s in samples:
        for part, table in parts.items():
            if s["present"][table]:
                best[part] = max(best[part], s["parts"][part] / s["present"][table])
    return int(sum(best.values()))


def main(argv: list[str] | None = None) -> int:
    """Run the day; print figures as they come and one JSON line last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--keep-hours", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-passes", type=int, default=2000)
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="disk_day_") as tmp:
        base = Path(tmp)
        settings = demo_settings(base, Settings())
        settings = replace(
            settings,
            tiling=replace(settings.tiling, enabled=True),
            retention=replace(settings.retention, keep_hours=args.keep_hours),
            passes=replace(settings.passes, workers=args.workers),
        )
        files = simulate(settings.paths.incoming, args.hours)
        print(
            f"simulated {files} raw files ({args.hours:g} h) in {time.monotonic() - started:.0f} s"
        )
        settings.paths.work.mkdir(parents=True)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        with writing(engine) as conn:
            calibrators.upsert_calibrators(
                conn, load_calibrators(settings.calibration.catalogue), overwrite=False
            )
        service = Reconciler(engine, settings, load_registry(settings), owner="disk-day-bench")
        samples: list[dict[str, Any]] = []
        sampler = Sampler(settings.paths.work)
        sampler.start()
        for number in range(1, args.max_passes + 1):
            report = service.run_pass()
            samples.append(sample(engine, settings))
            s = samples[-1]
            settled = sum(n for phase, n in s["phases"].items() if phase in SETTLED)
            total = sum(s["phases"].values())
            print(
                f"pass {number}: {len(report.actions)} action(s); windows settled "
                f"{settled}/{total}; work/ {s['work'] / 1e6:.0f} MB (peak so far "
                f"{max(sampler.peak['work'], s['work']) / 1e6:.0f} MB), products/ "
                f"{s['products'] / 1e6:.1f} MB for {s['published_bytes'] / 1e6:.1f} MB published",
                flush=True,
            )
            if total and settled == total and not report.actions and not report.enqueued:
                break
        # The last windows' intermediates go at retention's next look.
        service.clock = lambda: datetime.now(UTC) + timedelta(hours=args.keep_hours, minutes=10)
        service.retain(force=True)
        samples.append(sample(engine, settings))
        sampler.stop.set()
        sampler.join()
        engine.dispose()
    peak = max([sampler.peak, *samples], key=lambda s: s["work"])
    final = samples[-1]
    one = per_observation(samples)
    tiling = settings.tiling
    fixed = max(s["parts"]["caltables"] + s["parts"]["logs"] for s in samples)
    bound = ((tiling.max_in_flight + 1) * tiling.size + 2) * one + fixed
    figures = {
        "benchmark": "disk_day",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "hours": args.hours,
        "keep_hours": args.keep_hours,
        "raw_files": files,
        "passes": len(samples) - 1,
        "windows": final["phases"],
        "work_peak_bytes": peak["work"],
        "work_peak_parts": peak["parts"],
        "work_final_bytes": final["work"],
        "work_final_parts": final["parts"],
        "per_observation_intermediates_bytes": one,
        "work_bound_bytes": bound,
        "work_peak_over_bound": round(peak["work"] / bound, 3) if bound else None,
        "products_bytes": final["products"],
        "published_bytes": final["published_bytes"],
        "products_over_published": round(final["products"] / final["published_bytes"], 4)
        if final["published_bytes"]
        else None,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(
        f"work/: peak {peak['work'] / 1e6:.0f} MB, final {final['work'] / 1e6:.0f} MB; bound "
        f"{bound / 1e6:.0f} MB (((max_in_flight {tiling.max_in_flight} + 1) × size "
        f"{tiling.size} + 2)"
        f" × {one / 1e6:.1f} MB + tables and logs); products/ {final['products'] / 1e6:.1f} MB"
        f" for {final['published_bytes'] / 1e6:.1f} MB published"
    )
    print(json.dumps(figures, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
