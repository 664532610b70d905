"""Procrastinate's side of ``benchmarks/queue_throughput.py``.

Run by the interpreter of the virtual environment the benchmark makes for procrastinate,
never the project's: it imports procrastinate and nothing of the reconciler. Commands::

    python queue_procrastinate.py CONNINFO schema        apply procrastinate's schema
    python queue_procrastinate.py CONNINFO fill N        defer N no-op jobs
    python queue_procrastinate.py CONNINFO work NAME     one worker, until the queue is empty

``work`` connects, prints ``ready``, waits for a line on stdin, drains the queue with one
worker (concurrency 1, procrastinate's defaults otherwise) and prints one JSON line: when
it finished and the CPU time it used.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from procrastinate import App, PsycopgConnector

QUEUE = "bench"
#: Jobs deferred per call when filling the queue.
_FILL_BATCH = 1000


def make_app(conninfo: str) -> App:
    """An app with one task, ``noop``, that does nothing."""
    app = App(connector=PsycopgConnector(conninfo=conninfo))

    @app.task(name="noop", queue=QUEUE)
    async def noop() -> None:
        return None

    return app


async def apply_schema(app: App) -> None:
    """Create procrastinate's tables, functions and triggers."""
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def fill(app: App, count: int) -> None:
    """Defer ``count`` no-op jobs."""
    async with app.open_async():
        task = app.tasks["noop"]
        for start in range(0, count, _FILL_BATCH):
            await task.batch_defer_async(*({} for _ in range(min(_FILL_BATCH, count - start))))


async def work(app: App, name: str) -> None:
    """Wait for the go line on stdin, then run one worker until nothing is left."""
    async with app.open_async():
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu = time.process_time()
        await app.run_worker_async(
            queues=[QUEUE], name=name, wait=False, concurrency=1, install_signal_handlers=False
        )
        cpu = time.process_time() - cpu
    print(json.dumps({"end": time.time(), "cpu_seconds": cpu}), flush=True)


def main(argv: list[str]) -> int:
    """Run one command (see the module docstring)."""
    conninfo, command, *rest = argv
    app = make_app(conninfo)
    if command == "schema":
        asyncio.run(apply_schema(app))
    elif command == "fill":
        asyncio.run(fill(app, int(rest[0])))
    elif command == "work":
        asyncio.run(work(app, rest[0]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
