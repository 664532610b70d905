"""Queue benchmark: claim-and-complete of no-op actions on PostgreSQL, the project side by
side with procrastinate 3.10 and a bare ``FOR UPDATE SKIP LOCKED`` loop.

The contenders
--------------
* project: what a service worker does for an action, minus the child process: claim
  through :class:`reconciler.engine.claims.Claims` (a batch when the queue is long and the
  actions short), then mark the action done with its ``action_done`` event as the executor
  does for a handler that records nothing.
* procrastinate: procrastinate 3.10 with an ``async`` task that does nothing, one worker
  per process (concurrency 1, ``wait=False``, its defaults otherwise), jobs deferred in
  batches beforehand. It runs in a virtual environment of its own that this benchmark
  makes (``python -m venv`` and pip) under ``build/queue-bench/``, never the project's.
* bare: psycopg in autocommit, claim as ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP
  LOCKED LIMIT 1) RETURNING`` and complete as an ``UPDATE`` fenced by the token, each its
  own transaction, on the project's ``actions`` table (same partial index); no event.

What is measured
----------------
In each round every contender, in an order that rotates from round to round, drains a
freshly filled queue of ``--actions`` (default 20,000) with ``--workers`` (default 4)
processes started together; the rate is actions over the time from the start signal to the
last worker's end. Afterwards every action must be done and claimed exactly once. Figures
are medians over ``--rounds`` (default 3). Client CPU is the workers' own CPU time per action.

Round trips per action are counted in one more, untimed round of ``--count-actions``
(default 2,000) per contender, through a TCP proxy that counts every flight of bytes a
client sends after an answer from the server (connection start-up included, so the figure
is a little high for everyone).

Run from the repository root, with the PostgreSQL server of ``RECONCILER_BENCH_PG``
(default ``postgresql://postgres@127.0.0.1:5432/test``, used to create and drop the
benchmark's own database)::

    .venv/bin/python benchmarks/queue_throughput.py [--actions 20000] [--workers 4] [--rounds 3]

The last line of output is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from machine import machine_facts  # benchmarks/machine.py, beside this script

from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.engine import make_engine, writing_one
from reconciler.db.migrate import upgrade
from reconciler.engine.claims import Claims
from reconciler.model import ActionKind

PG_ADMIN_URL = os.environ.get("RECONCILER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
HERE = Path(__file__).resolve().parent
PROCRASTINATE = "procrastinate==3.10.*"
PROCRASTINATE_VENV = HERE.parent / "build" / "queue-bench" / "procrastinate-3.10"
CONTENDERS = ("project", "procrastinate", "bare")
KINDS = ("convert", "apply", "image")
LEASE_SECONDS = 600.0


# --- the workers (each in its own process) ------------------------------------------------


def _wait_for_go() -> float:
    """Say ready, wait for the start line; return the CPU time at the start."""
    print("ready", flush=True)
    sys.stdin.readline()
    return time.process_time()


def _finished(cpu_started: float) -> None:
    print(json.dumps({"end": time.time(), "cpu_seconds": time.process_time() - cpu_started}))


def project_worker(url: str, name: str) -> None:
    """Claim and complete through the project's queue until nothing is left."""
    engine = make_engine(url)
    claims = Claims(
        engine,
        owner=name,
        kinds=tuple(ActionKind),
        lease_seconds=LEASE_SECONDS,
        batch=Settings().passes.claim_batch,
        clock=lambda: datetime.now(UTC),
    )
    with engine.connect():
        pass
    cpu = _wait_for_go()
    while (action := claims.next()) is not None:
        started = time.monotonic()
        with writing_one(engine) as conn:
            queries.complete(
                conn,
                action,
                now=datetime.now(UTC),
                message=f"{action.key.kind} {action.key.target} done in 0.0 s",
                actor=name,
            )
        claims.performed(time.monotonic() - started)
    _finished(cpu)
    engine.dispose()


_BARE_CLAIM = """
UPDATE actions SET state = 'running', lease_owner = %(owner)s, lease_token = %(token)s,
    lease_expires_at = %(expires)s, heartbeat_at = %(now)s, started_at = %(now)s,
    attempts = attempts + 1, version = version + 1
WHERE id = (
    SELECT id FROM actions
    WHERE state = 'pending' AND kind = ANY(%(kinds)s)
        AND (not_before IS NULL OR not_before <= %(now)s)
    ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
_BARE_COMPLETE = """
UPDATE actions SET state = 'done', lease_owner = NULL, lease_token = NULL,
    lease_expires_at = NULL, finished_at = %(now)s, version = version + 1
WHERE id = %(id)s AND lease_token = %(token)s AND state = 'running'
"""


def bare_worker(url: str, name: str) -> None:
    """The least a SKIP LOCKED queue can do: two autocommit statements an action."""
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        cpu = _wait_for_go()
        while True:
            now = datetime.now(UTC)
            token = str(uuid.uuid4())
            params = {
                "owner": name,
                "token": token,
                "now": now,
                "expires": now + timedelta(seconds=LEASE_SECONDS),
                "kinds": list(KINDS),
            }
            row = conn.execute(_BARE_CLAIM, params).fetchone()
            if row is None:
                break
            conn.execute(_BARE_COMPLETE, {"id": row[0], "token": token, "now": datetime.now(UTC)})
    _finished(cpu)


# --- databases and queues -----------------------------------------------------------------


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


@contextmanager
def bench_database() -> Iterator[str]:
    """A new database (libpq URL) holding the project's and procrastinate's schemas;
    dropped on exit."""
    name = f"reconciler_queue_bench_{os.getpid()}"
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    url = f"{base}/{name}"
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        _procrastinate(url, "schema")
        yield url
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_port(url: str, port: int) -> str:
    """The same database through another port on 127.0.0.1 (the counting proxy)."""
    scheme, _, rest = url.partition("://")
    user, _, hostpart = rest.rpartition("@")
    _, _, database = hostpart.partition("/")
    return f"{scheme}://{user}@127.0.0.1:{port}/{database}"


def fill_actions(url: str, count: int) -> None:
    """Replace every action and event with ``count`` pending no-op actions."""
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE actions, events")
        with conn.cursor().copy(
            "COPY actions (kind, target, generation, priority, created_at) FROM STDIN"
        ) as copy:
            for i in range(count):
                priority = now - timedelta(days=1) + timedelta(seconds=i)
                copy.write_row((KINDS[i % 3], f"obs:bench-{i:06d}", 0, priority, now))
    _vacuum(url, "actions", "events")


def fill_jobs(url: str, count: int) -> None:
    """Replace procrastinate's jobs with ``count`` no-op jobs."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "TRUNCATE procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs,"
            " procrastinate_workers"
        )
    _procrastinate(url, "fill", str(count))
    _vacuum(url, "procrastinate_jobs", "procrastinate_events")


def _vacuum(url: str, *tables: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"VACUUM ANALYZE {table}")


def verify_actions(url: str, count: int, *, events: bool) -> None:
    """Every action done, claimed once (one attempt), with one event each if asked."""
    with psycopg.connect(url) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM actions GROUP BY state"))
        attempts = conn.execute("SELECT count(*) FROM actions WHERE attempts <> 1").fetchone()
        done_events = conn.execute(
            "SELECT count(*), count(DISTINCT action_id) FROM events WHERE kind = 'action_done'"
        ).fetchone()
    problems = []
    if states != {"done": count}:
        problems.append(f"states {states}")
    if attempts[0]:
        problems.append(f"{attempts[0]} actions claimed more or less than once")
    if events and tuple(done_events) != (count, count):
        problems.append(f"action_done events {tuple(done_events)}")
    if problems:
        raise RuntimeError(f"queue not drained exactly once: {'; '.join(problems)}")


def verify_jobs(url: str, count: int) -> None:
    """Every job succeeded and was started exactly once."""
    with psycopg.connect(url) as conn:
        states = dict(conn.execute("SELECT status, count(*) FROM procrastinate_jobs GROUP BY 1"))
        started = conn.execute(
            "SELECT count(*), count(DISTINCT job_id) FROM procrastinate_events"
            " WHERE type = 'started'"
        ).fetchone()
    if states != {"succeeded": count} or tuple(started) != (count, count):
        raise RuntimeError(f"jobs not run exactly once: states {states}, started {started}")


# --- procrastinate's environment ----------------------------------------------------------


def procrastinate_python() -> Path:
    """The interpreter of procrastinate's own virtual environment, made on first use."""
    python = PROCRASTINATE_VENV / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('procrastinate'))"
    if python.exists():
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.startswith("3.10."):
            return python
    print(f"installing {PROCRASTINATE} into {PROCRASTINATE_VENV}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", PROCRASTINATE_VENV], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", PROCRASTINATE, "psycopg[binary]"], check=True
    )
    return python


def _procrastinate(url: str, *args: str) -> None:
    script = HERE / "queue_procrastinate.py"
    subprocess.run(
        [procrastinate_python(), script, url, *args], check=True, stderr=subprocess.DEVNULL
    )


# --- the proxy that counts round trips ----------------------------------------------------


class RoundTripCounter:
    """A TCP proxy in front of the PostgreSQL server that counts round trips: every flight
    of bytes a client sends after the server last spoke (or first, on a new connection)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.flights = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            spoke = ["server"]
            threading.Thread(
                target=self._pump, args=(client, server, spoke, "client"), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, spoke, "server"), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, spoke: list[str], side: str):
        try:
            while data := source.recv(65536):
                with self._lock:
                    if side == "client" and spoke[0] == "server":
                        self.flights += 1
                    spoke[0] = side
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting connections."""
        self._listener.close()


# --- rounds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    """One contender draining one queue."""

    contender: str
    actions: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Actions per second."""
        return self.actions / self.seconds


def _worker_command(contender: str, url: str, name: str) -> list[str]:
    if contender == "procrastinate":
        script = HERE / "queue_procrastinate.py"
        return [str(procrastinate_python()), str(script), url, "work", name]
    script = Path(__file__)
    return [sys.executable, str(script), "--worker", contender, "--url", url, "--name", name]


def drain(contender: str, url: str, actions: int, workers: int) -> Drain:
    """Fill the contender's queue, drain it with ``workers`` processes, verify it."""
    fill = fill_jobs if contender == "procrastinate" else fill_actions
    fill(url, actions)
    processes = [
        subprocess.Popen(
            _worker_command(contender, url, f"bench-{contender}-{i}"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{contender} worker did not start")
    started = time.time()
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    ends = []
    for process in processes:
        output, _ = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise RuntimeError(f"{contender} worker exited with {process.returncode}")
        ends.append(json.loads(output.strip().splitlines()[-1]))
    if contender == "procrastinate":
        verify_jobs(url, actions)
    else:
        verify_actions(url, actions, events=contender == "project")
    seconds = max(e["end"] for e in ends) - started
    return Drain(contender, actions, seconds, sum(e["cpu_seconds"] for e in ends))


def count_round_trips(contender: str, url: str, actions: int, workers: int) -> float:
    """Round trips per action of one untimed drain through the counting proxy."""
    counter = RoundTripCounter("127.0.0.1", _port(url))
    try:
        before = counter.flights
        drained = drain(contender, _with_port(url, counter.port), actions, workers)
        return (counter.flights - before) / drained.actions
    finally:
        counter.close()


def _port(url: str) -> int:
    hostpart = url.partition("://")[2].rpartition("@")[2].partition("/")[0]
    return int(hostpart.partition(":")[2] or 5432)


def _print_drain(result: Drain) -> None:
    print(
        f"  {result.contender:<13} {result.rate:7.0f} actions/s  ({result.seconds:5.1f} s, "
        f"client CPU {1000 * result.cpu_seconds / result.actions:.2f} ms an action); verified",
        flush=True,
    )


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """The timed rounds and the counting round; figures by contender."""
    rounds: dict[str, list[Drain]] = {c: [] for c in CONTENDERS}
    for r in range(args.rounds):
        order = CONTENDERS[r % 3 :] + CONTENDERS[: r % 3]
        print(f"round {r + 1} of {args.rounds} ({', '.join(order)}):", flush=True)
        for contender in order:
            result = drain(contender, url, args.actions, args.workers)
            _print_drain(result)
            rounds[contender].append(result)
    print(f"round trips, {args.count_actions:,} actions each through a counting proxy:")
    figures: dict[str, Any] = {}
    for contender in CONTENDERS:
        trips = count_round_trips(contender, url, args.count_actions, args.workers)
        print(f"  {contender:<13} {trips:5.2f} round trips an action", flush=True)
        runs = rounds[contender]
        figures[contender] = {
            "actions_per_second": round(statistics.median(d.rate for d in runs), 1),
            "rounds": [round(d.rate, 1) for d in runs],
            "client_cpu_ms_per_action": round(
                statistics.median(1000 * d.cpu_seconds / d.actions for d in runs), 3
            ),
            "round_trips_per_action": round(trips, 2),
        }
    return figures


def _ratios(figures: dict[str, Any]) -> dict[str, float]:
    project = figures["project"]["actions_per_second"]
    return {
        f"project_over_{other}": round(project / figures[other]["actions_per_second"], 3)
        for other in ("procrastinate", "bare")
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count-actions", type=int, default=2_000)
    parser.add_argument("--worker", choices=("project", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    return parser


WORKERS: dict[str, Callable[[str, str], None]] = {"project": project_worker, "bare": bare_worker}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--worker``, one worker process of it)."""
    args = _parser().parse_args(argv)
    if args.worker:
        WORKERS[args.worker](args.url, args.name)
        return 0
    started = time.perf_counter()
    procrastinate_python()
    with bench_database() as url:
        print(
            f"{args.actions:,} no-op actions, {args.workers} worker processes, "
            f"{args.rounds} interleaved rounds",
            flush=True,
        )
        figures = run(args, url)
    ratios = _ratios(figures)
    print(
        f"project / procrastinate {ratios['project_over_procrastinate']:.2f} (target ≥ 2), "
        f"project / bare loop {ratios['project_over_bare']:.2f} (target ≥ 0.5)"
    )
    targets = {
        "twice_procrastinate": ratios["project_over_procrastinate"] >= 2.0,
        "half_the_bare_loop": ratios["project_over_bare"] >= 0.5,
    }
    machine = machine_facts()
    summary = {
        "benchmark": "queue",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "actions": args.actions,
        "workers": args.workers,
        "rounds": args.rounds,
        "count_actions": args.count_actions,
        "contenders": figures,
        "ratios": ratios,
        "targets": targets,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
