"""Cone-search benchmark: does ``reconciler cone`` stay under 50 ms with 100,000 published
mosaics, on SQLite and on PostgreSQL?

What is built
-------------
A migrated database per backend (a SQLite file; a database in a PostgreSQL cluster of the
benchmark's own, made with ``initdb`` in a temporary directory and started with
``pg_ctl``, so the machine's shared server carries none of the load), filled in bulk
(``executemany`` on SQLite, ``COPY`` on PostgreSQL; the secondary indexes of the big
tables dropped during the load and built after it, then ANALYZE) with ``--mosaics``
published mosaics, each with its group, registry row, footprint and catalogue.

Footprints are DSA-110 strips: the union of the primary-beam discs (radius
``--beam-radius-deg``, the 0.2 cutoff of a 4.65 m dish at 1.4 GHz) of 10 five-minute
observations along one declination, 12.5° of RA (50 minutes) long. The array points at
one of ``--strips`` declinations between −20° and +85° for a while and comes back over
the same sky every day, so mosaics start on a grid of 1.25° of RA (five minutes) and the
same footprint recurs about ``mosaics / (strips × 288)`` times: a position in a strip is
covered by that many mosaics, and the cone search must list all of them. Footprints are
computed with the project's own cells (:mod:`reconciler.skycells`), as publishing
records them. Each mosaic's catalogue has ``--sources`` components at random positions on
its footprint.

What is measured
----------------
:func:`reconciler.coverage.cone_search` (mosaics containing the position, sources within
the radius: what ``reconciler cone`` runs) at ``--queries`` random positions on published
footprints, for each radius of ``--radii``, after ``--warmups`` searches; median and 90th
percentile in milliseconds, with the mosaics and sources found per search.

Run from the repository root::

    .venv/bin/python benchmarks/cone_search.py [--backends sqlite,postgresql]
        [--mosaics 100000] [--sources 20] [--queries 200] [--radii 0.1,0.5,1.0]

The last line of output is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from machine import machine_facts  # benchmarks/machine.py, beside this script
from private_postgres import PrivatePostgres, postgres_bin  # beside this script
from sqlalchemy import Engine

from reconciler.coverage import cone_search
from reconciler.db.engine import make_engine, writing
from reconciler.db.migrate import upgrade
from reconciler.sky import angular_separation_deg
from reconciler.skycells import (
    FOOTPRINT_ORDER,
    SOURCE_ORDER,
    area_sq_deg,
    cell_centres,
    cells_of,
    footprint_rows,
)

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: RA a five-minute observation's beam moves on the sky, degrees.
STEP_DEG = 1.25
OBSERVATIONS = 10
#: Secondary indexes of the bulk-loaded tables, built after the load.
INDEXES = {
    "ix_footprint_cells_registry_id": "footprint_cells (registry_id)",
    "ix_sources_cell": "sources (cell)",
    "ix_sources_catalogue_id": "sources (catalogue_id)",
    "ix_sources_dec_deg": "sources (dec_deg)",
}
_COMPONENT_ERRORS = (1.0, 1.0, 0.0005, 0.0005, 25.0, 20.0, 0.0, 0.0, 0.0, 0.0005)


def strip_decs(strips: int) -> list[float]:
    """The pointing declinations of the survey's strips."""
    return [round(float(d), 2) for d in np.linspace(-20.0, 85.0, strips)]


class Footprints:
    """Footprint cells of strips starting on the RA grid, each made once: the cells whose
    centres are within a beam radius of one of the strip's beam centres (as publishing
    keeps the cells whose centres fall on non-blank pixels)."""

    def __init__(self, beam_radius_deg: float) -> None:
        self.beam_radius_deg = beam_radius_deg
        every = np.arange(12 * 4**FOOTPRINT_ORDER, dtype=np.int64)
        self._ra, self._dec = cell_centres(every, FOOTPRINT_ORDER)
        self._bands: dict[float, np.ndarray] = {}
        self._discs: dict[tuple[float, int], np.ndarray] = {}
        self._strips: dict[tuple[float, int], tuple[np.ndarray, list[tuple[int, int]]]] = {}

    def strip(self, dec: float, start: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Cells and footprint rows of the strip at ``dec`` from RA ``start × STEP_DEG``."""
        key = (dec, start)
        if key not in self._strips:
            steps = range(start, start + OBSERVATIONS)
            cells = np.unique(np.concatenate([self._disc(dec, step % 288) for step in steps]))
            self._strips[key] = (cells, footprint_rows(cells))
        return self._strips[key]

    def _disc(self, dec: float, step: int) -> np.ndarray:
        """The cells whose centres are within a beam radius of one beam centre."""
        key = (dec, step)
        if key not in self._discs:
            centre = (step + 0.5) * STEP_DEG
            near = self._window(dec, centre, 0.0)
            distance = angular_separation_deg(centre, dec, self._ra[near], self._dec[near])
            self._discs[key] = near[distance <= self.beam_radius_deg]
        return self._discs[key]

    def _window(self, dec: float, ra_from: float, length: float) -> np.ndarray:
        """The cells of the band at ``dec`` within a beam radius of the RA range from
        ``ra_from`` to ``ra_from + length``."""
        band = self._band(dec)
        widest = min(abs(dec) + self.beam_radius_deg, 89.0)
        pad = self.beam_radius_deg / np.cos(np.radians(widest))
        if length + 2 * pad >= 360:
            return band
        ras = self._ra[band]
        lo, hi = (ra_from - pad) % 360, (ra_from + length + pad) % 360
        first, last = np.searchsorted(ras, lo), np.searchsorted(ras, hi)
        if lo < hi:
            return band[first:last]
        return np.concatenate([band[first:], band[:last]])

    def _band(self, dec: float) -> np.ndarray:
        """The cells within a beam radius of the declination ``dec``, by RA."""
        if dec not in self._bands:
            near = np.flatnonzero(np.abs(self._dec - dec) <= self.beam_radius_deg)
            self._bands[dec] = near[np.argsort(self._ra[near], kind="stable")]
        return self._bands[dec]


def survey(n_mosaics: int, strips: int, rng: random.Random) -> list[tuple[float, int]]:
    """(dec, RA start step) of each mosaic: the array stays on a strip for a stretch of
    days, mosaics overlap by two observations (stride 8), and each day starts a little
    further round the sky."""
    decs = strip_decs(strips)
    per_day = 288 // 8
    mosaics = []
    day = 0
    while len(mosaics) < n_mosaics:
        dec = decs[rng.randrange(len(decs))]
        for _ in range(rng.randint(5, 40)):
            first = day % 8
            mosaics += [(dec, (first + 8 * k) % 288) for k in range(per_day)]
            day += 1
    return mosaics[:n_mosaics]


def tables(
    layout: list[tuple[float, int]], footprints: Footprints, n_sources: int, rng: random.Random
) -> Iterator[tuple[str, tuple[str, ...], Iterable[tuple]]]:
    """The rows of every table, in load order: (table, columns, rows)."""
    yield (
        "mosaic_groups",
        ("id", "window_start", "window_end", "origin", "dec_deg", "phase"),
        (
            (i, T0 + i * timedelta(minutes=40), T0 + i * timedelta(minutes=40) + _SPAN, "tiling",
             dec, "published")
            for i, (dec, _) in enumerate(layout, start=1)
        ),
    )  # fmt: skip
    yield (
        "data_registry",
        ("id", "kind", "group_id", "generation", "stage_path", "published_path", "status",
         "published_at"),
        (
            (i, "mosaic", i, 1, f"/work/staging/{i}/mosaic.fits", f"/products/mosaics/m{i}.fits",
             "published", T0 + i * timedelta(minutes=40) + _SPAN)
            for i in range(1, len(layout) + 1)
        ),
    )  # fmt: skip
    yield (
        "catalogues",
        ("id", "group_id", "generation", "path", "rms_path", "finder", "finder_version",
         "n_components"),
        (
            (i, i, 1, f"/work/staging/{i}/c.fits", f"/work/staging/{i}/r.fits", "bdsf", "1.13",
             n_sources)
            for i in range(1, len(layout) + 1)
        ),
    )  # fmt: skip
    yield (
        "footprints",
        ("registry_id", "n_cells", "area_sq_deg"),
        (
            (i, len(cells), area_sq_deg(len(cells)))
            for i, (cells, _) in enumerate((footprints.strip(*m) for m in layout), start=1)
        ),
    )
    yield (
        "footprint_cells",
        ("cell", "registry_id", "mask"),
        (
            (cell, i, mask)
            for i, m in enumerate(layout, start=1)
            for cell, mask in footprints.strip(*m)[1]
        ),
    )
    yield (
        "sources",
        ("catalogue_id", "ra_deg", "dec_deg", "peak_jy", "flux_jy", "ra_err_arcsec",
         "dec_err_arcsec", "peak_err_jy", "flux_err_jy", "major_arcsec", "minor_arcsec",
         "pa_deg", "deconvolved_major_arcsec", "deconvolved_minor_arcsec", "local_rms_jy",
         "cell"),
        _sources(layout, footprints, n_sources, rng),
    )  # fmt: skip


_SPAN = timedelta(minutes=50)


def _sources(
    layout: list[tuple[float, int]], footprints: Footprints, n_sources: int, rng: random.Random
) -> Iterator[tuple]:
    seed = rng.randrange(2**32)
    generator = np.random.default_rng(seed)
    for i, m in enumerate(layout, start=1):
        cells, _ = footprints.strip(*m)
        picked = generator.choice(cells, size=n_sources)
        ras, decs = cell_centres(picked, FOOTPRINT_ORDER)
        # Anywhere in the 3.4′ cell, not on its centre.
        ras = (ras + generator.uniform(-0.02, 0.02, n_sources) / np.cos(np.radians(decs))) % 360
        decs = np.clip(decs + generator.uniform(-0.02, 0.02, n_sources), -90, 90)
        fluxes = 10 ** generator.uniform(-3, 0, n_sources)
        source_cells = cells_of(ras, decs, SOURCE_ORDER)
        for ra, dec, flux, cell in zip(
            ras.tolist(), decs.tolist(), fluxes.tolist(), source_cells.tolist(), strict=True
        ):
            yield (i, ra, dec, flux, flux, *_COMPONENT_ERRORS, cell)


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[Engine]:
    """A migrated, empty database of ``backend`` (a private PostgreSQL cluster), removed
    on exit."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{workdir / 'cone.sqlite'}")
        try:
            upgrade(engine)
            yield engine
        finally:
            engine.dispose()
        return
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries under /usr/lib/postgresql")
    cluster = PrivatePostgres.create(bin_dir, workdir / "pgdata")
    cluster.start()
    try:
        url = cluster.url.replace("postgresql://", "postgresql+psycopg://", 1)
        # The bulk load runs for minutes: longer than the service allows a statement.
        engine = make_engine(url, statement_timeout_seconds=3600)
        try:
            upgrade(engine)
            yield engine
        finally:
            engine.dispose()
    finally:
        cluster.stop()


def load(engine: Engine, all_tables: Iterable[tuple[str, tuple[str, ...], Iterable[tuple]]]):
    """Bulk-load the tables with the big tables' secondary indexes dropped, then build
    them and ANALYZE; returns seconds taken per table."""
    took = {}
    with writing(engine) as conn:
        for name in INDEXES:
            conn.exec_driver_sql(f"DROP INDEX {name}")
    raw = engine.raw_connection()
    try:
        for name, columns, rows in all_tables:
            start = time.perf_counter()
            if engine.dialect.name == "postgresql":
                _copy(raw, name, columns, rows)
            else:
                _insert_many(raw, name, columns, rows)
            took[name] = round(time.perf_counter() - start, 1)
            print(f"  loaded {name} in {took[name]} s", flush=True)
    finally:
        raw.close()
    start = time.perf_counter()
    with writing(engine) as conn:
        for name, on in INDEXES.items():
            conn.exec_driver_sql(f"CREATE INDEX {name} ON {on}")
    with writing(engine) as conn:
        conn.exec_driver_sql("ANALYZE")
    took["indexes_and_analyze"] = round(time.perf_counter() - start, 1)
    return took


def _insert_many(raw: Any, name: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    cursor = raw.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    marks = ", ".join("?" * len(columns))
    sql = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks})"
    batch: list[tuple] = []
    for row in rows:
        batch.append(tuple(_sqlite_value(v) for v in row))
        if len(batch) == 100_000:
            cursor.executemany(sql, batch)
            batch = []
    cursor.executemany(sql, batch)
    cursor.execute("COMMIT")


def _sqlite_value(value: object) -> object:
    # The spelling SQLAlchemy's DateTime uses on SQLite, so stored times compare as text.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return value


def _copy(raw: Any, name: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    with (
        raw.driver_connection.cursor() as cursor,
        cursor.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        buffer = io.StringIO()
        for count, row in enumerate(rows, start=1):
            buffer.write("\t".join(map(str, row)) + "\n")
            if count % 100_000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())
    raw.commit()


def measure(
    engine: Engine,
    positions: list[tuple[float, float]],
    radius_deg: float,
    warmups: int,
) -> dict[str, Any]:
    """Median and 90th percentile of cone searches at ``positions``."""
    for ra, dec in positions[:warmups]:
        cone_search(engine, ra, dec, radius_deg)
    took, mosaics, sources = [], [], []
    for ra, dec in positions:
        start = time.perf_counter()
        found = cone_search(engine, ra, dec, radius_deg)
        took.append(1000 * (time.perf_counter() - start))
        mosaics.append(len(found["mosaics"]))
        sources.append(len(found["sources"]))
    return {
        "radius_deg": radius_deg,
        "median_ms": round(statistics.median(took), 2),
        "p90_ms": round(statistics.quantiles(took, n=10)[-1], 2),
        "max_ms": round(max(took), 2),
        "mosaics_found_median": statistics.median(mosaics),
        "mosaics_found_max": max(mosaics),
        "sources_found_median": statistics.median(sources),
        "sources_found_max": max(sources),
    }


def query_positions(
    layout: list[tuple[float, int]], footprints: Footprints, count: int, rng: random.Random
) -> list[tuple[float, float]]:
    """Random positions on published footprints."""
    positions = []
    for _ in range(count):
        cells, _ = footprints.strip(*layout[rng.randrange(len(layout))])
        ra, dec = cell_centres(np.array([cells[rng.randrange(len(cells))]]), FOOTPRINT_ORDER)
        positions.append((float(ra[0]), float(dec[0])))
    return positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--mosaics", type=int, default=100_000)
    parser.add_argument("--sources", type=int, default=20, help="per mosaic")
    parser.add_argument("--strips", type=int, default=30, help="declinations pointed at")
    parser.add_argument("--beam-radius-deg", type=float, default=1.55)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmups", type=int, default=20)
    parser.add_argument("--radii", default="0.1,0.5,1.0")
    parser.add_argument("--seed", type=int, default=110)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    layout = survey(args.mosaics, args.strips, rng)
    footprints = Footprints(args.beam_radius_deg)
    start = time.perf_counter()
    distinct = sorted(set(layout))
    rows = sum(len(footprints.strip(*m)[1]) for m in distinct)
    per_mosaic = statistics.mean(len(footprints.strip(*m)[1]) for m in layout)
    area = statistics.mean(area_sq_deg(len(footprints.strip(*m)[0])) for m in layout)
    figures: dict[str, Any] = {
        "machine": machine_facts(),
        "mosaics": args.mosaics,
        "distinct_footprints": len(distinct),
        "footprint_rows_per_mosaic": round(per_mosaic, 1),
        "footprint_rows": round(per_mosaic * args.mosaics),
        "footprint_area_sq_deg": round(area, 1),
        "sources": args.mosaics * args.sources,
        "footprints_made_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(figures), flush=True)
    del rows
    positions = query_positions(layout, footprints, args.queries, rng)
    for backend in args.backends.split(","):
        with (
            tempfile.TemporaryDirectory(prefix="cone_bench_", dir=REPO / "build") as tmp,
            database(backend, Path(tmp)) as engine,
        ):
            print(f"{backend}: loading", flush=True)
            loaded = load(engine, tables(layout, footprints, args.sources, random.Random(1)))
            results = {"load_s": loaded, "searches": []}
            for radius in (float(r) for r in args.radii.split(",")):
                result = measure(engine, positions, radius, args.warmups)
                print(f"{backend}: {json.dumps(result)}", flush=True)
                results["searches"].append(result)
            figures[backend] = results
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
