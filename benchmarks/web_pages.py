"""Web benchmark: do the pages of ``reconciler web`` load in under 300 ms with a year of
history, on SQLite and on PostgreSQL?

What is built
-------------
The database of :mod:`plan_scale` at ``--scale`` (default a year: ~105,000 observations,
~13,000 mosaic groups, ~1,000,000 events, every stage and action state present), filled in
bulk as that benchmark fills it (metadata only, no raw files), then settled by two full
looks of the reconciler so every group's status is written.

What is measured
----------------
Each page and JSON endpoint requested through the ASGI app in this process (routing,
the database reads, template rendering or the timeline PNG; no network), ``--repeats``
times after ``--warmups``: median and slowest in milliseconds. The overview and the
timeline are asked for the default view (the 7 days up to the newest data) and with a dec
strip and phase chosen; the mosaic page for the newest published group; the failures page
lists every failed and stuck action of the year.

Run from the repository root::

    .venv/bin/python benchmarks/web_pages.py [--backends sqlite,postgresql]
        [--scale year] [--repeats 15] [--warmups 3]

The last line of output is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from machine import machine_facts  # benchmarks/machine.py, beside this script
from plan_scale import build_history, database, load, make_reconciler  # beside this script
from sqlalchemy import select

from reconciler.db.engine import make_engine, reading
from reconciler.db.migrate import upgrade
from reconciler.db.models import MosaicGroup
from reconciler.web.app import create_app

#: The target: every page under this many milliseconds.
TARGET_MS = 300.0


def pages(engine: Any) -> dict[str, str]:
    """The requests measured, by name."""
    with reading(engine) as conn:
        published = conn.execute(
            select(MosaicGroup.id, MosaicGroup.dec_deg)
            .where(MosaicGroup.phase == "published")
            .order_by(MosaicGroup.window_start.desc())
            .limit(1)
        ).one()
    strip = f"dec={published.dec_deg:.2f}&phase=published"
    return {
        "overview": "/",
        "overview (strip, phase)": f"/?{strip}",
        "overview (30 days)": "/?days=30",
        "timeline.png": "/timeline.png",
        "timeline.png (strip, phase)": f"/timeline.png?{strip}",
        "mosaic page": f"/groups/{published.id}",
        "failures": "/failures",
        "api/status": "/api/status",
        "api/overview": "/api/overview",
        "api/timeline": "/api/timeline",
        "api/queue": "/api/queue",
        "api/events": "/api/events",
        "api/failures": "/api/failures",
    }


def measure(client: TestClient, path: str, repeats: int, warmups: int) -> dict[str, float]:
    """Median and slowest of ``repeats`` requests of ``path``, in ms."""
    for _ in range(warmups):
        assert client.get(path).status_code == 200, path
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        response = client.get(path)
        seconds.append(time.perf_counter() - began)
        assert response.status_code == 200, path
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "bytes": len(response.content),
    }


def bench(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Fill one database, settle it, time every page; drop it."""
    history = build_history(args.scale)
    with database(backend, args.scale, workdir) as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            load(engine, history.tables)
            reconciler = make_reconciler(engine, url, workdir, history.now, None)
            for _ in range(2):
                reconciler.reconcile()
            settings = reconciler.settings
            client = TestClient(create_app(engine, settings))
            figures = {
                name: measure(client, path, args.repeats, args.warmups)
                for name, path in pages(engine).items()
            }
        finally:
            engine.dispose()
    for name, figure in figures.items():
        flag = "" if figure["median_ms"] < TARGET_MS else f"  over {TARGET_MS:g} ms"
        print(
            f"{backend:10s} {name:28s} median {figure['median_ms']:7.1f} ms, "
            f"slowest {figure['max_ms']:7.1f} ms, {figure['bytes']:,} bytes{flag}",
            flush=True,
        )
    return {"counts": history.counts, "pages": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--scale", default="year", choices=("week", "month", "year"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmups", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine_facts(), "target_ms": TARGET_MS}
    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp:
        for backend in args.backends.split(","):
            results[backend] = bench(backend, args, Path(tmp))
    slowest = max(
        figure["median_ms"]
        for backend in args.backends.split(",")
        for figure in results[backend]["pages"].values()
    )
    results["slowest_median_ms"] = slowest
    results["under_target"] = slowest < TARGET_MS
    print(json.dumps(results))


if __name__ == "__main__":
    main()
