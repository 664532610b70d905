"""Chaos benchmark: kill the service at random moments in every step, restart it, and check
that it ends with the same products as a run nobody disturbed.

What is run
-----------
The demo's data (an hour around a 0834+555 transit, 16 antennas, 4 subbands) and its
50-minute window, with the real steps (pyuvdata, CASA, reproject), twice from scratch:

* a reference run, undisturbed;
* a chaos run, in which the whole service is SIGKILLed ``--kills`` times, each time while
  an action of the next kind in turn (convert, solve, apply, image, mosaic, publish) is
  running, at a random moment into it, and restarted at once (at most ``--per-kind``
  kills in one kind; by default the kills are spread evenly). With ``--services 2`` two
  services share the database and only one of them is killed; with ``--pg-restarts N``
  the database (a PostgreSQL cluster of the benchmark's own) is also restarted N times
  at random moments.

Then the two runs are compared: the published file names; the mosaic pixels (largest
absolute difference); each action's attempts (claims) against the reference, and that each
observation was converted, calibrated and imaged by exactly one finished action; no
attempt's leftovers under work/ or products/ and no scratch directory left in $TMPDIR;
raw files unchanged (SHA-256); nothing stuck (every action done, the group published).

Run from the repository root::

    .venv/bin/python benchmarks/chaos.py [--kills 20] [--seed 1] [--per-kind N]
        [--backend sqlite|postgresql] [--services 1] [--pg-restarts 0]

The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from machine import machine_facts  # benchmarks/machine.py, beside this script
from private_postgres import PrivatePostgres, postgres_bin  # beside this script
from sqlalchemy import select

from reconciler.catalogue import load_calibrators
from reconciler.config import Settings
from reconciler.db import calibrators
from reconciler.db.engine import make_engine, reading, writing
from reconciler.db.migrate import upgrade
from reconciler.db.models import Action, MosaicGroup
from reconciler.demo import FIELD_OF_VIEW_DEG, WINDOW, demo_transit, simulate_demo_data
from reconciler.desired.explicit import request_window
from reconciler.engine.debris import find_debris
from reconciler.model import ActionKind

REPO = Path(__file__).resolve().parents[1]
KINDS = [str(kind) for kind in ActionKind]
#: How long one run may take before the benchmark gives up on it.
RUN_TIMEOUT_S = 3600.0


def simulate(source: Path) -> tuple[Path, Any]:
    """The demo's raw files, written once into ``source``; returns it and the transit."""
    transit = demo_transit()
    if not any(source.glob("*.hdf5")):
        simulate_demo_data(source, transit)
    return source, transit


class Scene:
    """One run's directories, database, configuration and services."""

    def __init__(self, base: Path, source: Path, transit: Any, url: str) -> None:
        self.base = base
        self.url = url
        for name in ("incoming", "work", "products", "tmp"):
            (base / name).mkdir(parents=True)
        for path in source.glob("*.hdf5"):
            shutil.copy2(path, base / "incoming" / path.name)
        self.config = base / "reconciler.toml"
        self.config.write_text(
            f"""
[database]
url = "{url}"
[paths]
incoming = "{base / "incoming"}"
work = "{base / "work"}"
products = "{base / "products"}"
[discovery]
expected_subbands = 4
min_subbands = 4
grace_minutes = 0
[windows]
arrival_grace_minutes = 0
[schedule]
interval_seconds = 1
[lease]
seconds = 10
heartbeat_seconds = 2
[retry]
max_attempts = 1000
base_delay_seconds = 1
max_delay_seconds = 5
[tiling]
enabled = false
[imaging]
field_of_view_deg = {FIELD_OF_VIEW_DEG}
niter = 1000
"""
        )
        engine = make_engine(url)
        upgrade(engine)
        with writing(engine) as conn:
            calibrators.upsert_calibrators(
                conn, load_calibrators(Settings().calibration.catalogue), overwrite=False
            )
        start = (transit - WINDOW / 2).replace(microsecond=0)
        self.group = request_window(
            engine, start, start + WINDOW, max_window=timedelta(hours=24)
        ).group_id
        engine.dispose()
        self.services: list[subprocess.Popen[bytes]] = []

    def start_service(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "TMPDIR": str(self.base / "tmp"), "PYTHONPATH": str(REPO)}
        log = open(self.base / f"service-{len(self.services)}.log", "ab")  # noqa: SIM115
        service = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "--config", str(self.config), "run"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=self.base,
        )
        self.services.append(service)
        return service

    def query(self, statement: Any) -> list[Any]:
        engine = make_engine(self.url)
        try:
            with reading(engine) as conn:
                return list(conn.execute(statement))
        except Exception:  # the database may be restarting
            return []
        finally:
            engine.dispose()

    def published(self) -> bool:
        rows = self.query(select(MosaicGroup.phase).where(MosaicGroup.id == self.group))
        return bool(rows) and rows[0].phase == "published"

    def running_kinds(self, service: subprocess.Popen[bytes]) -> set[str]:
        """Kinds of the actions ``service`` holds now (its worker names carry its pid)."""
        held = select(Action.kind).where(
            Action.state == "running", Action.lease_owner.like(f"%:{service.pid}:%")
        )
        return {r.kind for r in self.query(held)}

    def stop_all(self) -> None:
        for service in self.services:
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)
        for service in self.services:
            try:
                service.wait(timeout=120)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()


def raw_checksums(directory: Path) -> dict[str, str]:
    """SHA-256 of every raw file in ``directory``, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.glob("*.hdf5")}


def wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def run(scene: Scene, args: argparse.Namespace, rng: random.Random, chaos: bool) -> dict:
    """Run the scene until published, disturbing it when ``chaos``; returns what happened."""
    started = time.monotonic()
    victim = scene.start_service()
    for _ in range(args.services - 1):
        scene.start_service()
    kills: Counter[str] = Counter()
    restarts = 0
    # The database restarts fall in the first two thirds of an undisturbed run's time, so
    # they all happen while there is work going on.
    span = (10.0, max(20.0, args.reference_wall_s * 2 / 3))
    restart_at = sorted(rng.uniform(*span) for _ in range(args.pg_restarts)) if chaos else []
    quota = args.per_kind or math.ceil(args.kills / len(KINDS))
    while chaos and (kills.total() < args.kills or restart_at) and not scene.published():
        if restart_at and time.monotonic() - started > restart_at[0]:
            restart_at.pop(0)
            args.cluster.stop("immediate")
            time.sleep(rng.uniform(1.0, 5.0))
            args.cluster.start()
            restarts += 1
        running = [k for k in scene.running_kinds(victim) if kills[k] < quota]
        if not running or kills.total() >= args.kills:
            time.sleep(0.05)
            continue
        # The kind killed least so far, of those running now: every kind gets its turns,
        # the ones that run once (solve, mosaic, publish) whenever they run. A publish
        # lasts about a second, so its kills come sooner into it.
        kind = min(sorted(running), key=lambda k: kills[k])
        time.sleep(rng.uniform(0.0, 0.3 if kind == "publish" else 2.0))
        if kind not in scene.running_kinds(victim):
            continue  # it ended meanwhile: this kill would not land in it
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        kills[kind] += 1
        victim = scene.start_service()
    done = wait(scene.published, timeout=RUN_TIMEOUT_S)
    scene.stop_all()
    wall = round(time.monotonic() - started, 1)
    return {"published": done, "kills": dict(kills), "db_restarts": restarts, "wall_s": wall}


def outcome(scene: Scene) -> dict[str, Any]:
    """The products and the bookkeeping of a finished run."""
    actions = scene.query(select(Action.kind, Action.target, Action.state, Action.attempts))
    published = sorted(p.name for p in (scene.base / "products").rglob("*") if p.is_file())
    mosaics = sorted((scene.base / "products").rglob("*.fits"))
    return {
        "published": published,
        "mosaic": next((m for m in mosaics if "weight" not in m.name), None),
        "states": Counter(a.state for a in actions),
        "attempts": {(a.kind, a.target): a.attempts for a in actions},
        "done": Counter((a.kind, a.target) for a in actions if a.state == "done"),
        "debris": sorted(
            str(p) for p in find_debris([scene.base / "work", scene.base / "products"])
        ),
        "scratch": sorted(p.name for p in (scene.base / "tmp").glob("reconciler-action-*")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--services", type=int, default=1)
    parser.add_argument("--pg-restarts", type=int, default=0)
    parser.add_argument(
        "--per-kind",
        type=int,
        default=0,
        help="most kills in one step kind (default: --kills spread evenly over the kinds)",
    )
    args = parser.parse_args()
    if args.pg_restarts and args.backend != "postgresql":
        parser.error("--pg-restarts needs --backend postgresql")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="chaos_bench_", dir=REPO / "build") as tmp:
        base = Path(tmp)
        source, transit = simulate(REPO / "build" / "chaos-source")
        raw_before = raw_checksums(source)
        args.cluster = None
        args.reference_wall_s = 0.0
        if args.backend == "postgresql":
            bin_dir = postgres_bin()
            if bin_dir is None:
                parser.error("no PostgreSQL binaries under /usr/lib/postgresql")
            args.cluster = PrivatePostgres.create(bin_dir, base / "pgdata")
            args.cluster.start()
        figures: dict[str, Any] = {"machine": machine_facts(), "seed": args.seed}
        try:
            results = {}
            for name in ("reference", "chaos"):
                url = f"sqlite:///{base / name / 'reconciler.sqlite'}"
                if args.cluster is not None:
                    admin = make_engine(args.cluster.url, isolation_level="AUTOCOMMIT")
                    with admin.connect() as conn:
                        conn.exec_driver_sql(f"CREATE DATABASE {name}")
                    admin.dispose()
                    url = args.cluster.url.rsplit("/", 1)[0] + f"/{name}"
                scene = Scene(base / name, source, transit, url)
                ran = run(scene, args, rng, chaos=name == "chaos")
                args.reference_wall_s = ran["wall_s"]
                results[name] = (ran, outcome(scene), scene)
                print(f"{name}: {ran}", flush=True)
        finally:
            if args.cluster is not None:
                args.cluster.stop("immediate")
        (ref_run, ref, _), (chaos_run, got, chaos_scene) = results["reference"], results["chaos"]
        with fits.open(ref["mosaic"]) as a, fits.open(got["mosaic"]) as b:
            same_blank = bool(np.array_equal(np.isnan(a[0].data), np.isnan(b[0].data)))
            max_diff = float(np.nanmax(np.abs(a[0].data - b[0].data)))
        extra = {
            f"{kind} {target}": attempts - ref["attempts"].get((kind, target), 0)
            for (kind, target), attempts in got["attempts"].items()
            if attempts != ref["attempts"].get((kind, target))
        }
        per_kind = Counter(kind for kind, _ in got["done"])
        figures |= {
            "backend": args.backend,
            "services": args.services,
            "kills_made": sum(chaos_run["kills"].values()),
            "kills_by_kind": chaos_run["kills"],
            "kills_survived": sum(chaos_run["kills"].values()) if chaos_run["published"] else 0,
            "db_restarts": chaos_run["db_restarts"],
            "reference_wall_s": ref_run["wall_s"],
            "chaos_wall_s": chaos_run["wall_s"],
            "published_names_equal": ref["published"] == got["published"],
            "mosaic_max_abs_diff_jy": max_diff,
            "mosaic_blank_pixels_equal": same_blank,
            "done_actions_per_kind": dict(per_kind),
            "done_twice": sorted(f"{k} {t}" for (k, t), n in got["done"].items() if n > 1),
            "extra_attempts": extra,
            "action_states": dict(got["states"]),
            "debris_left": got["debris"],
            "scratch_left": got["scratch"],
            "raw_unchanged": raw_checksums(chaos_scene.base / "incoming") == raw_before,
            "stuck": not chaos_run["published"] or set(got["states"]) != {"done"},
        }
        for key, value in figures.items():
            print(f"{key}: {value}")
        print(json.dumps(figures, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
