"""Pipeline benchmark: how long does a demo-scale mosaic take end to end, how much of that is
the engine rather than the science tools, and how much do two workers gain over one?

What is run
-----------
Raw UVH5 files are simulated once, into a scratch directory, the way ``reconciler demo``
simulates its hour around the 0834+555 transit (same calibrator, day, dec, compact array and
correlator shape), with ``--observations`` observations inside the requested window plus
one either side (for 10: exactly the demo's hour and 50-minute window). Every run then gets
a fresh database (a new PostgreSQL database, or a SQLite file with ``--backend sqlite``), fresh
work and products directories, the demo's settings (:func:`reconciler.demo.demo_settings`)
with ``pass.workers`` set to the run's worker count, and the same raw files. The window is
requested and ``Reconciler.run_pass()`` is called until the mosaic is published. Runs
alternate between the worker counts (``--workers``), ``--repeats`` times.

What is measured
----------------
* Per step kind (convert, solve, apply, image, mosaic, publish): median and total of the
  action durations the PassReports give (``ActionReport.seconds``: the child process, from
  its start to its outcome being read, so child start-up is inside), and end-to-end wall time
  from the first pass to the pass that published.
* Engine overhead. The reconciler is instrumented by subclassing (public methods only, plus
  a wrapped ``prepare`` in each handler and a stop event whose ``wait`` is timed): every
  action's child interval, and the time spent reconciling, claiming, preparing, settling,
  discovering and idling. Worker time is ``workers × wall``; of it, ``tool`` is the summed
  child seconds, ``idle`` the time a worker waited because the only runnable work was held
  by another worker (a dependency, not the engine), and ``engine`` all the rest. With one
  worker engine overhead is exactly ``wall − Σ child seconds``. The brief's simpler figure,
  ``wall − Σ child seconds / workers``, is printed too; it counts dependency idling as
  overhead.
* Child start-up: ``run_in_child`` on a no-op (``builtins:dict``), ``--startup-samples``
  times, and the import time of each tool's package in a fresh interpreter, for scale.
* Speed-up: median one-worker wall over median N-worker wall. Beside it the evidence for a
  shortfall: the time with 0, 1, ... children running and which kinds ran alone (the serial
  parts), an ideal speed-up from the one-worker runs (engine and solve, mosaic and publish
  serial, everything else divided among the workers), each kind's median duration relative
  to the one-worker run (contention), the children's CPU seconds per wall second per kind
  with one worker (above 1: a tool uses more than one thread), the children's CPU seconds
  per child second in every run (well below 1: they waited for a CPU), the CPU the rest of
  the machine used during the run (``/proc/stat``; other processes, the PostgreSQL server
  included), the share of time a runnable task waited for a CPU (``/proc/pressure/cpu``)
  and the other processes that used the most CPU (counting the children they reaped).

Run from the repository root::

    .venv/bin/python benchmarks/pipeline.py [--observations 10] [--workers 1,2]
        [--repeats 2] [--backend postgresql] [--startup-samples 10]

``RECONCILER_BENCH_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names the
PostgreSQL database used to create and drop the benchmark's own databases. Figures are
printed as they come; the last line of output is one JSON object holding all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from machine import machine_facts  # benchmarks/machine.py, beside this script
from sqlalchemy import Connection, Engine

from reconciler.catalogue import load_calibrators
from reconciler.config import PathSettings, Settings
from reconciler.db import calibrators
from reconciler.db.engine import make_engine, writing
from reconciler.db.migrate import upgrade
from reconciler.demo import (
    ARRAY_SCALE,
    CALIBRATOR,
    DAY,
    DEC_DEG,
    SIMULATED_MINUTES,
    SIMULATION,
    WINDOW,
    demo_settings,
)
from reconciler.desired import WantReport, explicit
from reconciler.discover import DiscoveryReport
from reconciler.engine.environment import SINGLE_THREAD
from reconciler.engine.execute import ActionReport
from reconciler.engine.registry import ActionRegistry, Payload, Prepare
from reconciler.engine.runner import ChildLimits, Succeeded, run_in_child
from reconciler.io.casa import casa_environment
from reconciler.io.simulator import (
    INTEGRATION_S,
    INTEGRATIONS_PER_OBSERVATION,
    calibrator_field_sources,
    simulate_observations,
)
from reconciler.model import ClaimedAction, Phase
from reconciler.progress import read_progress
from reconciler.service import PassReport, Reconciler
from reconciler.sky import meridian_transits
from reconciler.steps import product_registry

PG_ADMIN_URL = os.environ.get("RECONCILER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("postgresql", "sqlite")
KINDS = ("convert", "solve", "apply", "image", "mosaic", "catalogue", "publish")
#: Kinds of which a window has one action: they cannot share the workers.
SERIAL_KINDS = ("solve", "mosaic", "catalogue", "publish")
OBSERVATION = timedelta(seconds=INTEGRATIONS_PER_OBSERVATION * INTEGRATION_S)
#: The demo's observations in its window; more or fewer widen or narrow its hour and window.
DEMO_OBSERVATIONS = 10
#: Packages whose import a science child pays before any work, timed for scale.
TOOL_PACKAGES = ("pyuvdata", "casatasks", "reproject")
RUN_TIMEOUT_SECONDS = 1200.0
#: Targets from the brief.
MAX_OVERHEAD_SHARE = 0.05
MIN_SPEEDUP = 1.6


# --- the raw data ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sky:
    """The simulated raw files and the window that covers ``observations`` of them."""

    incoming: Path
    window_start: datetime
    window_end: datetime
    observations: int
    seconds: float


def simulate(directory: Path, observations: int) -> Sky:
    """Simulate the demo's sky with ``observations`` in the window and one either side."""
    source = next(s for s in calibrator_field_sources() if s.name == CALIBRATOR)
    transit = meridian_transits(source.ra_deg, source.dec_deg, DAY, DAY + timedelta(days=1))[0]
    extra = (observations - DEMO_OBSERVATIONS) * OBSERVATION
    span = timedelta(minutes=SIMULATED_MINUTES) + extra
    window = WINDOW + extra
    started = time.perf_counter()
    simulate_observations(
        directory,
        transit - span / 2,
        span.total_seconds() / 60,
        DEC_DEG,
        sources=calibrator_field_sources(),
        array_scale=ARRAY_SCALE,
        **SIMULATION,
    )
    start = (transit - window / 2).replace(microsecond=0)
    return Sky(directory, start, start + window, observations, time.perf_counter() - started)


# --- databases -------------------------------------------------------------------------


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


@contextmanager
def database(backend: str, name: str, directory: Path) -> Iterator[str]:
    """URL of a new, empty database of ``backend``, removed on exit."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'{name}.sqlite'}"
        return
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- instrumentation -------------------------------------------------------------------


@dataclass(frozen=True)
class TimedAction:
    """One performed action: where its child ran on the monotonic clock, and its parts."""

    kind: str
    child_start: float
    child_seconds: float
    prepare_seconds: float
    settle_seconds: float
    children_cpu_seconds: float

    @property
    def child_end(self) -> float:
        return self.child_start + self.child_seconds


@dataclass
class Ledger:
    """Seconds per engine activity (summed over threads) and the performed actions."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    actions: list[TimedAction] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def add(self, activity: str, seconds: float) -> None:
        with self._lock:
            self.seconds[activity] += seconds

    def record(self, action: TimedAction) -> None:
        with self._lock:
            self.actions.append(action)

    @contextmanager
    def timing(self, activity: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(activity, time.monotonic() - started)

    def mark_prepared(self) -> None:
        """Note, for this thread, that ``prepare`` returned: the child starts next."""
        self._local.prepared = time.monotonic()

    def take_prepared(self, default: float) -> float:
        prepared = getattr(self._local, "prepared", default)
        self._local.prepared = default
        return prepared


class IdleTimingStop(threading.Event):
    """A stop event that is never set; a worker waits on it only when it found nothing to
    claim while another worker is busy, so its waits are the dependency idle time."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self._ledger = ledger

    def wait(self, timeout: float | None = None) -> bool:
        with self._ledger.timing("idle wait"):
            return super().wait(timeout)


def timed_registry(ledger: Ledger) -> ActionRegistry:
    """The product's handlers, each ``prepare`` noting when it returned."""

    def wrap(prepare: Prepare) -> Prepare:
        def timed(conn: Connection, claimed: ClaimedAction, settings: Settings) -> Payload:
            payload = prepare(conn, claimed, settings)
            ledger.mark_prepared()
            return payload

        return timed

    return ActionRegistry(replace(h, prepare=wrap(h.prepare)) for h in product_registry())


def children_cpu_seconds() -> float:
    """CPU seconds of every reaped child process (and the descendants they reaped)."""
    times = os.times()
    return times.children_user + times.children_system


class TimedReconciler(Reconciler):
    """The product's reconciler, timing what it does between and around the children."""

    def __init__(self, engine: Engine, settings: Settings, ledger: Ledger) -> None:
        super().__init__(engine, settings, timed_registry(ledger))
        self.ledger = ledger

    def reclaim_expired(self) -> int:
        with self.ledger.timing("reclaim"):
            return super().reclaim_expired()

    def discover(self) -> DiscoveryReport:
        with self.ledger.timing("discover"):
            return super().discover()

    def want(self) -> WantReport:
        with self.ledger.timing("want"):
            return super().want()

    def reconcile(self, *, full: bool = False) -> int:
        with self.ledger.timing("reconcile"):
            return super().reconcile(full=full)

    def claim_next(self) -> ClaimedAction | None:
        with self.ledger.timing("claim"):
            return super().claim_next()

    def perform(self, claimed: ClaimedAction, stop: threading.Event) -> ActionReport:
        started = time.monotonic()
        cpu = children_cpu_seconds()
        report = super().perform(claimed, stop)
        ended = time.monotonic()
        child_start = self.ledger.take_prepared(default=started)
        self.ledger.record(
            TimedAction(
                kind=str(claimed.key.kind),
                child_start=child_start,
                child_seconds=report.seconds,
                prepare_seconds=child_start - started,
                settle_seconds=max(ended - child_start - report.seconds, 0.0),
                children_cpu_seconds=children_cpu_seconds() - cpu,
            )
        )
        return report


# --- machine load ----------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds (busy ones of the whole machine; this process's; its reaped children's)
    and the kernel's CPU pressure: microseconds in which a runnable task waited for a CPU."""

    machine_busy: float
    ours: float
    children: float
    pressure_us: float | None

    @classmethod
    def now(cls) -> CpuSample:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        times = os.times()
        children = children_cpu_seconds()
        return cls(
            machine_busy=(sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"),
            ours=times.user + times.system + children,
            children=children,
            pressure_us=_cpu_pressure_us(),
        )

    def since(self, earlier: CpuSample) -> CpuSample:
        """What was used between ``earlier`` and this sample."""
        pressure = None
        if self.pressure_us is not None and earlier.pressure_us is not None:
            pressure = self.pressure_us - earlier.pressure_us
        return CpuSample(
            self.machine_busy - earlier.machine_busy,
            self.ours - earlier.ours,
            self.children - earlier.children,
            pressure,
        )


def _cpu_pressure_us() -> float | None:
    """The ``some`` total of ``/proc/pressure/cpu``, or None without PSI."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return float(first.rpartition("total=")[2])


class ProcessSampler:
    """Samples the CPU seconds of every other process each ``interval`` seconds while open,
    so the processes that come and go during a run (other sessions' tools) are seen too.

    Only the process's own CPU is counted (a reaper's count of its children would carry
    their whole life); this process and its descendants are left out; a process that lives
    less than one interval may be missed.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self._interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="process-sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._first = {pid: seconds for pid, (_, seconds) in self._sample().items()}
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(self._sample())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._last.update(self._sample())

    def _sample(self) -> dict[int, tuple[str, float]]:
        ticks = os.sysconf("SC_CLK_TCK")
        parents: dict[int, int] = {}
        found: dict[int, tuple[str, float]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except OSError:  # the process ended meanwhile
                continue
            pid = int(stat.parent.name)
            fields = text[text.rindex(")") + 2 :].split()
            parents[pid] = int(fields[1])
            label = _command(argv) or text[text.index("(") + 1 : text.rindex(")")]
            found[pid] = (label, (int(fields[11]) + int(fields[12])) / ticks)
        return {pid: v for pid, v in found.items() if not _descends_from_us(pid, parents)}

    def busiest(self, count: int = 3) -> list[str]:
        """The command lines that used the most CPU while open, with how many processes."""
        seconds: dict[str, float] = defaultdict(float)
        processes: dict[str, int] = defaultdict(int)
        for pid, (label, last) in self._last.items():
            used = last - self._first.get(pid, 0.0)
            if used > 0:
                seconds[label] += used
                processes[label] += 1
        ranked = sorted(seconds, key=seconds.__getitem__, reverse=True)[:count]
        return [f"{label} (×{processes[label]}): {seconds[label]:.1f} s" for label in ranked]


def _command(argv: list[bytes]) -> str:
    """The program and its leading options, up to the first path or JSON argument (so the
    same command of different actions reads the same)."""
    words = [w.decode(errors="replace") for w in argv if w]
    kept = words[:1]
    for word in words[1:4]:
        if word.startswith(("/", "{")):
            break
        kept.append(word[:40])
    return " ".join(kept)


def _descends_from_us(pid: int, parents: dict[int, int]) -> bool:
    ours = os.getpid()
    while pid > 1:
        if pid == ours:
            return True
        pid = parents.get(pid, 0)
    return False


# --- one run ---------------------------------------------------------------------------


@dataclass
class Run:
    """What one run of the pipeline measured."""

    workers: int
    wall: float
    passes: list[PassReport]
    ledger: Ledger
    started: float
    cpu: CpuSample
    top_others: list[str]


def run_pipeline(sky: Sky, workers: int, backend: str, directory: Path, name: str) -> Run:
    """Publish the sky's window with ``workers`` workers on a fresh database and dirs."""
    base = directory / name
    with database(backend, name, directory) as url:
        settings = demo_settings(base, Settings())
        settings = replace(
            settings,
            database=replace(settings.database, url=url),
            paths=PathSettings(incoming=sky.incoming, work=base / "work", products=base / "p"),
            passes=replace(settings.passes, workers=workers),
        )
        engine = make_engine(url)
        try:
            upgrade(engine)
            with writing(engine) as conn:
                calibrators.upsert_calibrators(
                    conn, load_calibrators(settings.calibration.catalogue), overwrite=False
                )
            group = explicit.request_window(
                engine,
                sky.window_start,
                sky.window_end,
                max_window=settings.decide_policy.max_window,
                actor="benchmark",
            ).group_id
            return _until_published(engine, settings, group, sky.observations)
        finally:
            engine.dispose()


def _until_published(engine: Engine, settings: Settings, group: int, members: int) -> Run:
    """Run passes until the group is published; the figures of the whole."""
    ledger = Ledger()
    reconciler = TimedReconciler(engine, settings, ledger)
    stop = IdleTimingStop(ledger)
    passes: list[PassReport] = []
    with ProcessSampler() as others:
        cpu_before = CpuSample.now()
        started = time.monotonic()
        while True:
            report = reconciler.run_pass(stop)
            passes.append(report)
            failed = [(a.label, a.message) for a in report.actions if a.outcome != "done"]
            if failed:
                raise SystemExit(f"actions did not succeed: {failed}")
            progress = read_progress(engine, group)
            if progress is None:
                raise SystemExit(f"group {group} vanished")
            if progress.phase == Phase.PUBLISHED:
                break
            if time.monotonic() - started > RUN_TIMEOUT_SECONDS:
                raise SystemExit(
                    f"not published after {RUN_TIMEOUT_SECONDS:g} s: {progress.reason}"
                )
            if not report.actions:
                with ledger.timing("between passes"):
                    time.sleep(0.5)
        wall = time.monotonic() - started
        cpu_after = CpuSample.now()
    if progress.members != members:
        raise SystemExit(f"the window held {progress.members} observations, not {members}")
    return Run(
        workers=settings.passes.workers,
        wall=wall,
        passes=passes,
        ledger=ledger,
        started=started,
        cpu=cpu_after.since(cpu_before),
        top_others=others.busiest(),
    )


# --- figures ---------------------------------------------------------------------------


def _kind(report: ActionReport) -> str:
    return report.label.split(" ", 1)[0]


def step_figures(run: Run) -> dict[str, dict[str, float]]:
    """Median and total seconds per step kind, from the PassReports."""
    by_kind: dict[str, list[float]] = defaultdict(list)
    for report in run.passes:
        for action in report.actions:
            by_kind[_kind(action)].append(action.seconds)
    return {
        kind: {
            "n": len(by_kind[kind]),
            "median_s": round(statistics.median(by_kind[kind]), 3),
            "total_s": round(sum(by_kind[kind]), 3),
        }
        for kind in KINDS
        if by_kind[kind]
    }


def overhead_figures(run: Run) -> dict[str, Any]:
    """Worker time split into tool, dependency idle and engine; the engine's parts."""
    tool = sum(a.seconds for p in run.passes for a in p.actions)
    worker_time = run.workers * run.wall
    idle = run.ledger.seconds.get("idle wait", 0.0)
    engine = worker_time - tool - idle
    parts = dict(run.ledger.seconds)
    parts.pop("idle wait", None)
    parts["prepare"] = sum(a.prepare_seconds for a in run.ledger.actions)
    parts["settle"] = sum(a.settle_seconds for a in run.ledger.actions)
    parts["unaccounted"] = engine - sum(parts.values())
    return {
        "tool_s": round(tool, 3),
        "idle_s": round(idle, 3),
        "engine_s": round(engine, 3),
        "engine_share": round(engine / worker_time, 4),
        "idle_share": round(idle / worker_time, 4),
        "brief_overhead_s": round(run.wall - tool / run.workers, 3),
        "brief_overhead_share": round(1 - tool / run.workers / run.wall, 4),
        "engine_parts_s": {k: round(v, 3) for k, v in sorted(parts.items())},
    }


def occupancy_figures(run: Run) -> dict[str, Any]:
    """Seconds with k children running, and per kind the seconds it ran alone."""
    edges = sorted(
        [(a.child_start, 1, a.kind) for a in run.ledger.actions]
        + [(a.child_end, -1, a.kind) for a in run.ledger.actions]
    )
    running: list[str] = []
    with_k: dict[int, float] = defaultdict(float)
    alone: dict[str, float] = defaultdict(float)
    clock = run.started
    for at, step, kind in edges:
        at = max(at, clock)
        with_k[len(running)] += at - clock
        if len(running) == 1:
            alone[running[0]] += at - clock
        clock = at
        if step > 0:
            running.append(kind)
        else:
            running.remove(kind)
    with_k[0] += run.started + run.wall - clock
    return {
        "seconds_with_children": {str(k): round(v, 2) for k, v in sorted(with_k.items())},
        "alone_s_by_kind": {k: round(alone[k], 2) for k in KINDS if k in alone},
    }


def cpu_figures(run: Run) -> dict[str, Any]:
    """CPU used by this run and by the rest of the machine; per kind with one worker."""
    capacity = (os.cpu_count() or 1) * run.wall
    cpu = run.cpu
    tool = sum(a.child_seconds for a in run.ledger.actions)
    figures: dict[str, Any] = {
        "ours_s": round(cpu.ours, 2),
        "others_s": round(cpu.machine_busy - cpu.ours, 2),
        "machine_busy_share": round(cpu.machine_busy / capacity, 3),
        "others_share_of_machine": round((cpu.machine_busy - cpu.ours) / capacity, 3),
        # Below 1 with single-threaded tools: the children waited for a CPU (or for I/O).
        "child_cpu_per_child_second": round(cpu.children / tool, 3) if tool else None,
        "cpu_pressure_share": (
            round(cpu.pressure_us / 1e6 / run.wall, 3) if cpu.pressure_us is not None else None
        ),
        "top_other_processes": run.top_others,
    }
    if run.workers == 1:
        # Serial: the children reaped during an action are exactly that action's.
        child_cpu: dict[str, float] = defaultdict(float)
        wall: dict[str, float] = defaultdict(float)
        for action in run.ledger.actions:
            child_cpu[action.kind] += action.children_cpu_seconds
            wall[action.kind] += action.child_seconds
        figures["child_cpu_per_wall_by_kind"] = {
            k: round(child_cpu[k] / wall[k], 2) for k in KINDS if wall.get(k)
        }
    return figures


def describe(run: Run, child_startup_s: float) -> dict[str, Any]:
    """All figures of one run, as plain data; ``child_startup_s`` is a no-op child's cost."""
    overhead = overhead_figures(run)
    startup = child_startup_s * len(run.ledger.actions)
    overhead["child_startup_s"] = round(startup, 2)
    overhead["child_startup_share"] = round(startup / (run.workers * run.wall), 4)
    return {
        "workers": run.workers,
        "wall_s": round(run.wall, 2),
        "passes": len(run.passes),
        "steps": step_figures(run),
        "overhead": overhead,
        "occupancy": occupancy_figures(run),
        "cpu": cpu_figures(run),
    }


def print_run(figures: dict[str, Any]) -> None:
    """Print one run's figures (from :func:`describe`) for a reader."""
    workers = figures["workers"]
    print(
        f"\n{workers} worker(s): end to end {figures['wall_s']:.1f} s "
        f"in {figures['passes']} pass(es)"
    )
    print(f"  {'step':<8} {'n':>3} {'median s':>9} {'total s':>8}")
    for kind, step in figures["steps"].items():
        print(f"  {kind:<8} {step['n']:>3} {step['median_s']:>9.2f} {step['total_s']:>8.1f}")
    o = figures["overhead"]
    print(
        f"  worker time {workers} × wall: tool {o['tool_s']:.1f} s, dependency idle "
        f"{o['idle_s']:.1f} s ({o['idle_share']:.1%}), engine {o['engine_s']:.1f} s "
        f"({o['engine_share']:.1%})"
    )
    print(
        f"  brief's overhead (wall − Σ tool / workers): {o['brief_overhead_s']:.1f} s "
        f"({o['brief_overhead_share']:.1%})"
    )
    print(
        f"  child start-up inside the tool time (one no-op child per action): "
        f"{o['child_startup_s']:.1f} s ({o['child_startup_share']:.1%} of worker time)"
    )
    parts = ", ".join(f"{k} {v:.2f}" for k, v in o["engine_parts_s"].items())
    print(f"  engine parts (s): {parts}")
    occ = figures["occupancy"]
    print(
        "  seconds with k children running: "
        + ", ".join(f"{k}: {v:.1f}" for k, v in occ["seconds_with_children"].items())
    )
    if workers > 1:
        print(
            "  ran alone (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in occ["alone_s_by_kind"].items())
        )
    cpu = figures["cpu"]
    pressure = cpu["cpu_pressure_share"]
    print(
        f"  CPU: ours {cpu['ours_s']:.1f} s, other processes {cpu['others_s']:.1f} s "
        f"({cpu['others_share_of_machine']:.1%} of the machine), machine busy "
        f"{cpu['machine_busy_share']:.1%}; children's CPU per child second "
        f"{cpu['child_cpu_per_child_second']:.2f}"
        + (f"; a task waited for a CPU {pressure:.0%} of the time" if pressure is not None else "")
    )
    print("  busiest other processes: " + "; ".join(cpu["top_other_processes"]))
    if "child_cpu_per_wall_by_kind" in cpu:
        print(
            "  child CPU s per wall s: "
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu["child_cpu_per_wall_by_kind"].items())
        )


# --- child start-up --------------------------------------------------------------------


def child_startup(samples: int) -> dict[str, float]:
    """Seconds ``run_in_child`` takes for a no-op: interpreter, engine imports, outcome."""
    limits = ChildLimits(timeout_seconds=60, heartbeat_seconds=30, env=SINGLE_THREAD)
    seconds = []
    for _ in range(samples):
        started = time.perf_counter()
        outcome = run_in_child(
            "builtins:dict", {}, limits, renew_lease=lambda: True, stop=threading.Event()
        )
        seconds.append(time.perf_counter() - started)
        if not isinstance(outcome, Succeeded):
            raise SystemExit(f"the no-op child did not succeed: {outcome}")
    return {
        "samples": samples,
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
    }


def tool_imports(directory: Path) -> dict[str, float]:
    """Seconds a fresh interpreter takes to import each tool package (beyond a bare start)."""
    env = {**os.environ, **SINGLE_THREAD, **casa_environment(directory / "casa.log")}

    def python(code: str) -> float:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, cwd=directory, capture_output=True
        )
        return time.perf_counter() - started

    bare = min(python("pass") for _ in range(3))
    return {package: round(python(f"import {package}") - bare, 3) for package in TOOL_PACKAGES}


# --- comparison ------------------------------------------------------------------------


def _median(figures: list[dict[str, Any]], workers: int, value: Callable[[Any], float]) -> float:
    """Median of ``value(run)`` over the runs with ``workers`` workers."""
    return statistics.median(value(f) for f in figures if f["workers"] == workers)


def speedups(figures: list[dict[str, Any]], workers: list[int]) -> dict[str, Any]:
    """Per worker count above one: the speed-up of the median wall time over one worker's,
    the ideal speed-up, and how much slower each kind ran than with one worker.

    The ideal takes the one-worker run's durations and keeps its engine time and the
    window's single actions (solve, mosaic, publish) serial while the rest is divided evenly
    among the workers."""
    if 1 not in workers:
        return {}
    one_wall = _median(figures, 1, lambda f: f["wall_s"])
    serial = _median(
        figures,
        1,
        lambda f: sum(f["steps"][k]["total_s"] for k in SERIAL_KINDS if k in f["steps"]),
    )
    tool = _median(figures, 1, lambda f: f["overhead"]["tool_s"])
    engine = _median(figures, 1, lambda f: f["overhead"]["engine_s"])
    kinds = [k for k in KINDS if all(k in f["steps"] for f in figures)]
    result: dict[str, Any] = {}
    for count in workers[1:]:
        ideal = one_wall / (engine + serial + (tool - serial) / count)
        slowdown = {
            k: round(
                _median(figures, count, lambda f, k=k: f["steps"][k]["median_s"])
                / _median(figures, 1, lambda f, k=k: f["steps"][k]["median_s"]),
                3,
            )
            for k in kinds
        }
        result[str(count)] = {
            "speedup": round(one_wall / _median(figures, count, lambda f: f["wall_s"]), 3),
            "ideal_speedup": round(ideal, 3),
            "median_duration_vs_one_worker": slowdown,
            "tool_s_vs_one_worker": round(
                _median(figures, count, lambda f: f["overhead"]["tool_s"]) / tool, 3
            ),
        }
    return result


# --- main ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, default=DEMO_OBSERVATIONS)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count")
    parser.add_argument("--backend", choices=BACKENDS, default="postgresql")
    parser.add_argument("--startup-samples", type=int, default=10)
    return parser


def _worker_counts(value: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        counts = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        parser.error(f"--workers must be comma-separated integers, got {value!r}")
    if not counts or counts[0] < 1:
        parser.error("--workers needs at least one count, each at least 1")
    return counts


def _targets(figures: list[dict[str, Any]], speed: dict[str, Any]) -> dict[str, bool]:
    targets: dict[str, bool] = {}
    for run in figures:
        name = f"engine_overhead_{run['workers']}w_under_5pct"
        met = run["overhead"]["engine_share"] < MAX_OVERHEAD_SHARE
        targets[name] = targets.get(name, True) and met
    if "2" in speed:
        targets["speedup_2w_at_least_1.6"] = speed["2"]["speedup"] >= MIN_SPEEDUP
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print figures as they come and one JSON line last."""
    parser = _parser()
    args = parser.parse_args(argv)
    workers = _worker_counts(args.workers, parser)
    if args.observations < 3 or args.repeats < 1 or args.startup_samples < 1:
        parser.error("--observations must be at least 3, --repeats and --startup-samples 1")
    started = time.perf_counter()
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="pipeline_bench_") as tmp:
        directory = Path(tmp)
        startup = child_startup(args.startup_samples)
        print(
            f"no-op child via run_in_child: median {startup['median_s'] * 1000:.0f} ms "
            f"(min {startup['min_s'] * 1000:.0f}, max {startup['max_s'] * 1000:.0f}) "
            f"over {startup['samples']}"
        )
        imports = tool_imports(directory)
        print(
            "import in a fresh interpreter: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in imports.items())
        )
        sky = simulate(directory / "incoming", args.observations)
        print(
            f"simulated {len(list(sky.incoming.glob('*.hdf5')))} raw files in {sky.seconds:.1f} s; "
            f"window {sky.window_start:%H:%M:%S}–{sky.window_end:%H:%M:%S} UTC "
            f"({sky.observations} observations), backend {args.backend}",
            flush=True,
        )
        figures: list[dict[str, Any]] = []
        for repeat in range(args.repeats):
            for count in workers:
                name = f"pipeline_bench_{os.getpid()}_{repeat}_{count}w"
                run = run_pipeline(sky, count, args.backend, directory, name)
                figures.append(describe(run, startup["median_s"]))
                print_run(figures[-1])
                sys.stdout.flush()
    speed = speedups(figures, workers)
    for count, s in speed.items():
        slower = ", ".join(f"{k} {v:.2f}" for k, v in s["median_duration_vs_one_worker"].items())
        print(
            f"\nspeed-up {count} workers over 1: {s['speedup']:.2f}× (ideal from the one-worker "
            f"runs {s['ideal_speedup']:.2f}×); median step duration relative to one "
            f"worker: {slower}; summed tool time {s['tool_s_vs_one_worker']:.2f}×"
        )
    targets = _targets(figures, speed)
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")
    total = time.perf_counter() - started
    print(f"total {total:.0f} s", flush=True)
    summary = {
        "benchmark": "pipeline",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine_facts(), "load_average_at_start": [round(v, 2) for v in load]},
        "backend": args.backend,
        "observations": args.observations,
        "repeats": args.repeats,
        "simulation_s": round(sky.seconds, 1),
        "child_startup": startup,
        "tool_import_s": imports,
        "runs": figures,
        "speedup": speed,
        "targets": targets,
        "seconds": round(total, 1),
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
