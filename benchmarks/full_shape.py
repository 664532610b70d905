"""Full-shape benchmark: what one DSA-110 observation at its real shape costs, step by step,
and whether its science comes out right.

What is run
-----------
The project's simulator writes ``--observations`` consecutive observations at the full
correlator shape (16 subbands of 48 channels, 96 antennas, 24 integrations, 4
polarisations, the full 2.5 km array), the first centred on the 0834+555 transit of the
demo's day at the demo's dec, with the calibrator and the demo's two field sources and
Gaussian noise of ``--noise-jy`` per real and imaginary part of each visibility (3 Jy; a
dish pair with DSA-110's SEFD of roughly 6 kJy gives about 2.3 Jy in 244 kHz and 12.9 s).
Everything lives in a temporary directory, removed at the end. The project's own service
then runs on it: a fresh SQLite database, the configuration defaults (``--backend``
chooses the imager; default the configured one) with discovery expecting the 16 subbands
at once, no arrival grace, windows of one observation allowed, ``--workers`` workers; the
window holding the observations is requested and ``Reconciler.run_pass()`` is called
until the mosaic is published. The transit observation is converted, solved on,
calibrated and imaged.

What is measured
----------------
* Per step kind (convert, solve, apply, image, mosaic, publish): wall seconds of each
  action's child (``ActionReport.seconds``), CPU seconds of its process tree (user + system
  of the reaped children and their descendants, from ``os.times``; exact with one worker,
  so with more only the totals are given), and the peak of the summed resident memory of
  every process descending from this one (``/proc``, sampled every 0.2 s).
* Real-time factor: the array makes an observation every 309 s, so two cores have 618
  CPU-s for it; the factor is 618 / (convert + apply + image CPU-s per observation), with
  one worker. The wall-time factor is 309 s per observation over the wall seconds from
  the first action to the last image, less the solve's: with ``--workers 2
  --observations 2``, what two workers on this machine keep up with.
* Science: the image's rms (robust rms of the residual, as recorded) over the thermal
  noise the radiometer equation gives for the simulated noise, the calibrated MS's
  channel averaging and the imager's Briggs weights (computed here from the MS's uvw as
  WSClean and tclean weight); and the calibrator's peak in the PB-corrected tile over its
  simulated flux. Targets: within 20 % and 5 %.

Run from the repository root::

    .venv/bin/python benchmarks/full_shape.py [--backend wsclean|tclean] [--workers 1]
        [--observations 1] [--noise-jy 3.0]

Figures are printed as they come; the last line of output is one JSON object holding all
of them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from casacore import tables
from machine import machine_facts  # benchmarks/machine.py, beside this script
from sqlalchemy import Engine, select

from reconciler.catalogue import load_calibrators
from reconciler.config import PathSettings, Settings
from reconciler.db import calibrators
from reconciler.db.engine import make_engine, reading, writing
from reconciler.db.migrate import upgrade
from reconciler.db.models import CalibratedMS, Image, Observation
from reconciler.demo import CALIBRATOR, DEC_DEG, demo_transit
from reconciler.desired import explicit
from reconciler.engine.execute import ActionReport
from reconciler.io.deconvolve import ROBUST
from reconciler.io.imaging import choose_grid, describe_ms
from reconciler.io.simulator import (
    INTEGRATION_S,
    INTEGRATIONS_PER_OBSERVATION,
    SimulationTruth,
    calibrator_field_sources,
    simulate_observations,
)
from reconciler.io.tiles import RMS_KEY
from reconciler.model import ClaimedAction, Phase
from reconciler.progress import read_progress
from reconciler.service import Reconciler
from reconciler.steps import product_registry

KINDS = ("convert", "solve", "apply", "image", "mosaic", "catalogue", "publish")
#: The correlator's shape (issue 9): per observation 16 x 48 channels, 96 antennas.
SHAPE = {"n_subbands": 16, "channels_per_subband": 48, "n_antennas": 96, "n_pols": 4}
OBSERVATION_S = INTEGRATIONS_PER_OBSERVATION * INTEGRATION_S
#: Two cores' CPU seconds per observation: twice real time needs at most this much.
CPU_BUDGET_S = 2 * 309.0
RUN_TIMEOUT_S = 3 * 3600.0
SAMPLE_INTERVAL_S = 0.2
#: Targets of issue 9.
MAX_CPU_S = 309.0
MAX_SOLVE_CPU_S = 120.0
MAX_TREE_RSS_GB = 6.0
NOISE_TOLERANCE = 0.20
FLUX_TOLERANCE = 0.05


# --- the process tree ------------------------------------------------------------------


class TreeMemory:
    """Samples the summed resident memory of this process's descendants while open.

    ``peak()`` is the highest sum since the last ``reset()``; ``overall`` since opening.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-memory", daemon=True)
        self._lock = threading.Lock()
        self._peak = 0
        self.overall = 0
        self._page = os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        with self._lock:
            self._peak = 0

    def peak(self) -> int:
        with self._lock:
            return self._peak

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            total = self._descendants_rss()
            with self._lock:
                self._peak = max(self._peak, total)
                self.overall = max(self.overall, total)

    def _descendants_rss(self) -> int:
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                resident = int((stat.parent / "statm").read_text().split()[1])
            except (OSError, IndexError, ValueError):  # the process ended meanwhile
                continue
            pid = int(stat.parent.name)
            parents[pid] = int(text[text.rindex(")") + 2 :].split()[1])
            rss[pid] = resident * self._page
        ours = os.getpid()
        total = 0
        for pid, resident in rss.items():
            ancestor = parents.get(pid, 0)
            while ancestor > 1 and ancestor != ours:
                ancestor = parents.get(ancestor, 0)
            if ancestor == ours:
                total += resident
        return total


def children_cpu_seconds() -> float:
    """CPU seconds of every reaped child process (and the descendants they reaped)."""
    times = os.times()
    return times.children_user + times.children_system


@dataclass(frozen=True)
class Measured:
    """One performed action: its kind, child wall, tree CPU and tree peak memory."""

    kind: str
    started: float
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int


@dataclass
class Ledger:
    """The performed actions, in the order they ended."""

    actions: list[Measured] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MeasuredReconciler(Reconciler):
    """The product's reconciler, measuring each action's child process tree."""

    def __init__(
        self, engine: Engine, settings: Settings, ledger: Ledger, memory: TreeMemory
    ) -> None:
        super().__init__(engine, settings, product_registry())
        self.ledger = ledger
        self.memory = memory

    def perform(self, claimed: ClaimedAction, stop: threading.Event) -> ActionReport:
        started = time.monotonic()
        cpu = children_cpu_seconds()
        self.memory.reset()
        report = super().perform(claimed, stop)
        measured = Measured(
            kind=str(claimed.key.kind),
            started=started,
            wall_s=report.seconds,
            cpu_s=children_cpu_seconds() - cpu,
            peak_rss_bytes=self.memory.peak(),
        )
        with self.ledger.lock:
            self.ledger.actions.append(measured)
        print(
            f"  {measured.kind:8s} {report.label}: {report.outcome}, wall {measured.wall_s:.1f} s,"
            f" CPU {measured.cpu_s:.1f} s, tree peak {measured.peak_rss_bytes / 1e9:.2f} GB",
            flush=True,
        )
        return report


# --- the run ---------------------------------------------------------------------------


def simulate(directory: Path, observations: int, noise_jy: float) -> SimulationTruth:
    """The full-shape observations, the first centred on the calibrator's transit."""
    started = time.perf_counter()
    truth = simulate_observations(
        directory,
        demo_transit() - timedelta(seconds=OBSERVATION_S / 2),
        observations * OBSERVATION_S / 60.0,
        DEC_DEG,
        sources=calibrator_field_sources(),
        noise_jy=noise_jy,
        seed=1,
        **SHAPE,
    )
    size = sum(path.stat().st_size for path in truth.files)
    print(
        f"simulated {observations} observation(s), {len(truth.files)} files, "
        f"{size / 1e9:.1f} GB, in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return truth


def benchmark_settings(base: Path, incoming: Path, backend: str, workers: int) -> Settings:
    """The configuration defaults, one-observation windows, no grace, ``workers``."""
    settings = Settings()
    return replace(
        settings,
        database=replace(settings.database, url=f"sqlite:///{base / 'reconciler.sqlite'}"),
        paths=PathSettings(incoming=incoming, work=base / "work", products=base / "products"),
        discovery=replace(settings.discovery, grace_minutes=0),
        windows=replace(settings.windows, arrival_grace_minutes=0, min_observations=1),
        passes=replace(settings.passes, workers=workers, max_actions=100),
        tiling=replace(settings.tiling, enabled=False),
        imaging=replace(settings.imaging, backend=backend),
    )


def run_to_published(settings: Settings, truth: SimulationTruth, memory: TreeMemory) -> Ledger:
    """Request the window of the simulated observations and run passes until published."""
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
        with writing(engine) as conn:
            calibrators.upsert_calibrators(
                conn, load_calibrators(settings.calibration.catalogue), overwrite=False
            )
        start = truth.observation_starts[0].replace(microsecond=0)
        end = truth.observation_starts[-1] + timedelta(seconds=OBSERVATION_S)
        group = explicit.request_window(
            engine, start, end, max_window=settings.decide_policy.max_window, actor="benchmark"
        ).group_id
        ledger = Ledger()
        reconciler = MeasuredReconciler(engine, settings, ledger, memory)
        started = time.monotonic()
        while True:
            report = reconciler.run_pass()
            failed = [(a.label, a.message) for a in report.actions if a.outcome != "done"]
            if failed:
                raise SystemExit(f"actions did not succeed: {failed}")
            progress = read_progress(engine, group)
            if progress is not None and progress.phase == Phase.PUBLISHED:
                return ledger
            if time.monotonic() - started > RUN_TIMEOUT_S:
                raise SystemExit(f"not published after {RUN_TIMEOUT_S:g} s")
            if not report.actions:
                time.sleep(0.5)
    finally:
        engine.dispose()


# --- figures ---------------------------------------------------------------------------


def step_figures(ledger: Ledger, workers: int) -> dict[str, dict[str, float]]:
    """Per kind: actions, wall seconds (total and per action), CPU-s and peak tree RSS."""
    by_kind: dict[str, list[Measured]] = defaultdict(list)
    for action in ledger.actions:
        by_kind[action.kind].append(action)
    figures: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        actions = by_kind.get(kind, [])
        if not actions:
            continue
        figures[kind] = {
            "n": len(actions),
            "wall_s": round(sum(a.wall_s for a in actions) / len(actions), 1),
            "peak_rss_gb": round(max(a.peak_rss_bytes for a in actions) / 1e9, 2),
        }
        if workers == 1:
            figures[kind]["cpu_s"] = round(sum(a.cpu_s for a in actions) / len(actions), 1)
    return figures


def wall_real_time_factor(ledger: Ledger, observations: int) -> float:
    """309 s per observation over the wall seconds from the first action to the last
    image, less the solve's (which happens once per calibrator transit, not per
    observation)."""
    first = min(a.started for a in ledger.actions)
    images = [a.started + a.wall_s for a in ledger.actions if a.kind == "image"]
    solve = sum(a.wall_s for a in ledger.actions if a.kind == "solve")
    return round(observations * OBSERVATION_S / (max(images) - first - solve), 2)


def expected_image_noise_jy(
    ms: Path, noise_jy: float, native_width_hz: float, field_of_view_deg: float, gains: np.ndarray
) -> float:
    """The thermal rms of a Stokes I image of ``ms`` with Briggs weighting (robust
    :data:`reconciler.io.deconvolve.ROBUST`) on the grid the pipeline chose.

    Each native visibility has ``noise_jy`` per real and imaginary part; Stokes I is the
    mean of XX and YY and an averaged channel the mean of ``k`` native ones, so its noise
    is ``noise_jy / sqrt(2 k)``; the noise was added after the simulated ``gains``
    (antenna, channel, feed), so calibration scales its variance by the mean of
    ``1 / |g_i g_j|^2``. The image rms is that times ``sqrt(sum w^2) / sum w`` over
    the imaging weights ``w``: Briggs weights from the density of unflagged samples in the
    uv cells of the image's grid (one cell: the inverse of the image's width).
    """
    description = describe_ms(ms)
    with tables.table(str(ms), ack=False) as main:
        uvw = main.getcol("UVW")
        flags = main.getcol("FLAG")
        cross = main.getcol("ANTENNA1") != main.getcol("ANTENNA2")
    with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as spw:
        frequencies = spw.getcell("CHAN_FREQ", 0)
        width = float(np.abs(spw.getcell("CHAN_WIDTH", 0)).mean())
    cell_arcsec, size = choose_grid(
        description.max_baseline_m, description.freq_max_hz, field_of_view_deg
    )
    cell_wavelengths = 1.0 / (size * math.radians(cell_arcsec / 3600.0))
    used = cross[:, None] & ~flags[:, :, 0] & ~flags[:, :, -1]
    u = uvw[:, 0, None] * frequencies[None, :] / 299_792_458.0
    v = uvw[:, 1, None] * frequencies[None, :] / 299_792_458.0
    u, v = u[used], v[used]
    mirror = v < 0
    u[mirror], v[mirror] = -u[mirror], -v[mirror]
    column = np.round(u / cell_wavelengths).astype(np.int64) + size
    row = np.round(v / cell_wavelengths).astype(np.int64)
    cells = row * (2 * size + 1) + column
    density = np.bincount(cells)[cells].astype(np.float64)
    f2 = (5.0 * 10.0 ** (-ROBUST)) ** 2 / (np.sum(density) / density.size)
    weights = 1.0 / (1.0 + density * f2)
    inverse_power = np.mean(1.0 / np.abs(gains) ** 2, axis=0)  # over antennas
    calibrated_variance = float(np.mean(inverse_power**2))
    per_visibility = noise_jy * math.sqrt(
        calibrated_variance / (2.0 * round(width / native_width_hz))
    )
    return float(per_visibility * math.sqrt(np.sum(weights**2)) / np.sum(weights))


def calibrator_peak_jy(pbcor_path: Path) -> float:
    """The brightest PB-corrected pixel within an arcminute of the calibrator."""
    source = next(s for s in calibrator_field_sources() if s.name == CALIBRATOR)
    with fits.open(pbcor_path) as hdus:
        data = np.asarray(hdus[0].data).squeeze()
        wcs = WCS(hdus[0].header).celestial
    column, row = wcs.world_to_pixel(SkyCoord(source.ra_deg, source.dec_deg, unit="deg"))
    cell_deg = abs(float(wcs.wcs.cdelt[1]))
    reach = max(2, math.ceil(1.0 / 60.0 / cell_deg))
    row, column = round(float(row)), round(float(column))
    box = data[row - reach : row + reach + 1, column - reach : column + reach + 1]
    return float(np.nanmax(box))


def science_figures(settings: Settings, truth: SimulationTruth, noise_jy: float) -> dict:
    """Image rms over the thermal noise, calibrator peak over its flux, for the transit."""
    engine = make_engine(settings.database_url)
    try:
        with reading(engine) as conn:
            # The first observation is the transit's.
            image = conn.execute(
                select(Image.path, Image.beam_major_arcsec, Image.backend, CalibratedMS.path)
                .join(Observation, Observation.id == Image.observation_id)
                .join(CalibratedMS, CalibratedMS.observation_id == Observation.id)
                .order_by(Observation.start_time)
            ).first()
    finally:
        engine.dispose()
    if image is None:
        raise SystemExit("published, but no image of a calibrated MS is recorded")
    native_width = float(abs(truth.frequencies_hz[1] - truth.frequencies_hz[0]))
    expected = expected_image_noise_jy(
        Path(image[3]), noise_jy, native_width, settings.imaging.field_of_view_deg, truth.gains
    )
    with fits.open(image.path) as hdus:
        measured = float(hdus[0].header[RMS_KEY])
    pbcor = Path(image.path).with_name(Path(image.path).name.replace(".image.", ".pbcor."))
    peak = calibrator_peak_jy(pbcor)
    flux = next(s for s in calibrator_field_sources() if s.name == CALIBRATOR).flux_jy
    return {
        "image_rms_jy": measured,
        "thermal_rms_jy": expected,
        "rms_ratio": round(measured / expected, 3),
        "calibrator_peak_jy": round(peak, 4),
        "calibrator_flux_jy": flux,
        "flux_ratio": round(peak / flux, 4),
        "beam_arcsec": image.beam_major_arcsec,
        "image_backend": image.backend,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("wsclean", "tclean"), default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--observations", type=int, default=1)
    parser.add_argument("--noise-jy", type=float, default=3.0)
    args = parser.parse_args(argv)
    backend = args.backend or Settings().imaging.backend
    if backend == "wsclean" and shutil.which("wsclean") is None:
        raise SystemExit("no wsclean on PATH (make setup installs it)")

    figures: dict[str, Any] = {
        "machine": machine_facts(),
        "backend": backend,
        "workers": args.workers,
        "observations": args.observations,
        "noise_jy": args.noise_jy,
        "shape": SHAPE,
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    print(f"full-shape benchmark: {json.dumps(figures)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="full-shape-") as scratch:
        base = Path(scratch)
        truth = simulate(base / "incoming", args.observations, args.noise_jy)
        settings = benchmark_settings(base, base / "incoming", backend, args.workers)
        started = time.monotonic()
        with TreeMemory() as memory:
            ledger = run_to_published(settings, truth, memory)
        figures["wall_to_published_s"] = round(time.monotonic() - started, 1)
        figures["peak_tree_rss_gb"] = round(memory.overall / 1e9, 2)
        steps = step_figures(ledger, args.workers)
        figures["steps"] = steps
        print(f"{'step':8s} {'n':>2s} {'wall s':>8s} {'CPU-s':>8s} {'peak GB':>8s}")
        for kind, step in steps.items():
            cpu = f"{step['cpu_s']:8.1f}" if "cpu_s" in step else f"{'-':>8s}"
            print(
                f"{kind:8s} {step['n']:2d} {step['wall_s']:8.1f} {cpu} {step['peak_rss_gb']:8.2f}"
            )
        if args.workers == 1:
            per_observation = sum(steps[k]["cpu_s"] for k in ("convert", "apply", "image"))
            figures["per_observation_cpu_s"] = round(per_observation, 1)
            figures["real_time_factor"] = round(CPU_BUDGET_S / per_observation, 2)
            print(
                f"convert + apply + image: {per_observation:.1f} CPU-s per observation; "
                f"real-time factor {CPU_BUDGET_S:g} / that = {figures['real_time_factor']}",
                flush=True,
            )
        figures["wall_real_time_factor"] = wall_real_time_factor(ledger, args.observations)
        print(f"wall-time real-time factor: {figures['wall_real_time_factor']}", flush=True)
        science = science_figures(settings, truth, args.noise_jy)
        figures["science"] = science
        print(
            f"image rms {science['image_rms_jy'] * 1e3:.3f} mJy vs thermal "
            f"{science['thermal_rms_jy'] * 1e3:.3f} mJy: ratio {science['rms_ratio']}; "
            f"calibrator {science['calibrator_peak_jy']:.3f} Jy vs {science['calibrator_flux_jy']}"
            f" Jy: ratio {science['flux_ratio']}",
            flush=True,
        )
    targets = {
        "memory": figures["peak_tree_rss_gb"] <= MAX_TREE_RSS_GB,
        "noise": abs(science["rms_ratio"] - 1.0) <= NOISE_TOLERANCE,
        "flux": abs(science["flux_ratio"] - 1.0) <= FLUX_TOLERANCE,
    }
    if args.workers == 1:  # CPU per step is measured only with one worker
        targets["cpu"] = figures["per_observation_cpu_s"] <= MAX_CPU_S
        targets["solve_cpu"] = steps["solve"]["cpu_s"] <= MAX_SOLVE_CPU_S
    figures["targets_met"] = targets
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
