"""Provenance: every published product records what made it, in the database (the
``provenance`` tables and the ``product_provenance`` view, shown by ``reconciler
provenance``) and in its FITS headers, so the file alone says where it came from."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from sqlalchemy import insert, select, text

from reconciler.cli import main
from reconciler.db.discovery import upsert_raw_files
from reconciler.db.engine import reading, writing
from reconciler.db.models import (
    CalibrationSolution,
    Observation,
    Provenance,
    ProvenanceInput,
    RawFile,
    RegistryEntry,
)
from reconciler.db.provenance import record_checksums
from reconciler.desired.explicit import request_window
from reconciler.io.checksum import sha256
from reconciler.io.mosaic import Tile, build_mosaic
from reconciler.model import ActionKind
from reconciler.service import Reconciler
from reconciler.steps import publish
from tests import engine_actions
from tests.world import OBSERVATION, T0, add_observations, add_solution

#: A checksum conversion "recorded" for one file: publishing must take it, not hash again.
RECORDED_AT_CONVERSION = "c0" * 32
LATER = T0 + timedelta(hours=24)
SUBBANDS = 2


def add_raw_files(engine, settings, keys: list[str]) -> dict[str, Path]:
    """Two small raw files per observation, on disk and in ``raw_files``; the first file's
    row holds a checksum as conversion would have kept it, the others none."""
    files = {}
    rows = []
    with reading(engine) as conn:
        ids = dict(conn.execute(select(Observation.key, Observation.id)).all())
    for key in keys:
        for subband in range(SUBBANDS):
            path = settings.paths.incoming / f"{key}_sb{subband:02d}.hdf5"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{key} subband {subband}".encode() * (100 + subband))
            files[path.name] = path
            rows.append(
                {
                    "path": str(path),
                    "directory": str(path.parent),
                    "observation_id": ids[key],
                    "subband": subband,
                    "size_bytes": path.stat().st_size,
                    "mtime": path.stat().st_mtime,
                    "sha256": None,
                }
            )
    rows[0]["sha256"] = RECORDED_AT_CONVERSION
    with writing(engine) as conn:
        conn.execute(insert(RawFile), rows)
    return files


@pytest.fixture
def world(engine, settings):
    """Three observations with raw files and a solution, one window published through the
    real publish step."""
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])
    files = add_raw_files(engine, settings, keys)
    group = request_window(
        engine, T0, T0 + 3 * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id
    service = Reconciler(
        engine, settings, engine_actions.fits_registry(), clock=lambda: LATER, jitter=lambda: 0.5
    )
    report = service.run_pass()
    assert not report.failed and not report.errors
    with reading(engine) as conn:
        product = conn.execute(select(RegistryEntry)).one()
        tables = conn.execute(select(CalibrationSolution.tables)).scalar_one()
    assert product.status == "published"
    return {"keys": keys, "files": files, "group": group, "product": product, "tables": tables}


def test_a_published_product_records_what_made_it(engine, settings, world):
    with reading(engine) as conn:
        made_by = conn.execute(select(Provenance)).one()
        inputs = conn.execute(select(ProvenanceInput)).all()
        kept = dict(conn.execute(select(RawFile.path, RawFile.sha256)).all())

    assert made_by.registry_id == world["product"].id
    assert made_by.package_version == metadata.version("dsa110-reconciler")
    head = subprocess.run(
        ["git", "-C", str(Path(publish.__file__).parent), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert made_by.git_commit.removesuffix("+dirty") == head
    assert made_by.casa_version == metadata.version("casatools")
    assert made_by.pyuvdata_version == metadata.version("pyuvdata")
    assert made_by.casacore_version == metadata.version("python-casacore")
    effective = json.loads(made_by.settings_json)
    assert effective["mosaic"]["pb_cutoff"] == settings.mosaic.pb_cutoff
    assert effective["paths"]["incoming"] == str(settings.paths.incoming)
    assert made_by.settings_hash == hashlib.sha256(made_by.settings_json.encode()).hexdigest()

    raw = {Path(i.path).name: i for i in inputs if i.kind == "raw_file"}
    assert sorted(raw) == sorted(world["files"])
    for name, path in world["files"].items():
        assert raw[name].size_bytes == path.stat().st_size
        assert raw[name].observation_key == name.split("_sb")[0]
    first = f"{world['keys'][0]}_sb00.hdf5"
    # Hashed once, at conversion: publishing took the recorded checksum as it was.
    assert raw[first].sha256 == RECORDED_AT_CONVERSION
    # The rest were never converted with checksums: publishing hashed them and kept them.
    for name, path in world["files"].items():
        if name != first:
            assert raw[name].sha256 == sha256(path)
            assert kept[str(path)] == sha256(path)

    (calibration,) = [i for i in inputs if i.kind == "calibration"]
    assert (calibration.calibrator, calibration.transit_time) == ("0834+555", T0)
    assert calibration.observation_key == world["keys"][0]
    assert calibration.path == world["tables"]


def test_the_published_fits_headers_say_where_the_file_came_from(engine, world):
    published = Path(world["product"].published_path)
    header = fits.getheader(published)
    weight_header = fits.getheader(published.with_name(published.stem + ".weight.fits"))
    with reading(engine) as conn:
        made_by = conn.execute(select(Provenance)).one()

    assert header["PROVHASH"] == weight_header["PROVHASH"] == made_by.provenance_hash
    assert header["PKGVER"] == made_by.package_version
    assert header["GITCOMMT"] == made_by.git_commit
    assert header["SETHASH"] == made_by.settings_hash
    assert header["CASAVER"] == metadata.version("casatools")
    assert header["PYUVDVER"] == metadata.version("pyuvdata")
    assert header["CASACVER"] == metadata.version("python-casacore")
    assert header["NRAWFILE"] == 3 * SUBBANDS
    assert header["RAWBYTES"] == sum(p.stat().st_size for p in world["files"].values())
    assert (header["CALNAME"], header["CALTRANS"]) == ("0834+555", T0.isoformat())
    history = [str(line) for line in header["HISTORY"]]
    for name, path in world["files"].items():
        at = history.index(f"PROV raw {name} {path.stat().st_size} bytes sha256:")
        recorded = name == f"{world['keys'][0]}_sb00.hdf5"
        assert history[at + 1] == f"PROV {RECORDED_AT_CONVERSION if recorded else sha256(path)}"
    assert f"PROV caltable {Path(world['tables']).name}" in history
    assert all(len(line) <= 72 for line in history), "every HISTORY line is one card"
    # What was published is what the registry's checksum says: headers went in before.
    assert sha256(published) == world["product"].checksum


def test_the_product_provenance_view(engine, world):
    with reading(engine) as conn:
        row = conn.execute(text("SELECT * FROM product_provenance")).mappings().one()

    assert row["product_id"] == world["product"].id
    assert row["group_id"] == world["group"]
    assert row["published_path"] == world["product"].published_path
    assert row["raw_files"] == 3 * SUBBANDS
    assert row["raw_bytes"] == sum(p.stat().st_size for p in world["files"].values())
    assert row["raw_files_without_checksum"] == 0
    assert (row["solutions"], row["calibrator"]) == (1, "0834+555")
    assert str(row["calibrator_transit"]).startswith("2025-03-01 00:00:00")
    assert row["casa_version"] == metadata.version("casatools")
    assert row["finder"] is None or row["finder"] in ("bdsf", "AegeanTools")

    # The README's question: which products used this raw file, and was it the same file?
    name = f"{world['keys'][1]}_sb00.hdf5"
    with reading(engine) as conn:
        used = conn.execute(
            text(
                "SELECT p.published_path, i.sha256 FROM provenance_inputs i"
                " JOIN product_provenance p ON p.product_id = i.registry_id"
                " WHERE i.kind = 'raw_file' AND i.path LIKE :name"
            ),
            {"name": f"%{name}"},
        ).all()
    assert used == [(world["product"].published_path, sha256(world["files"][name]))]


def test_the_provenance_command_in_text_and_json(config, engine, world, capsys):
    group = str(world["group"])
    assert main(["--config", str(config), "provenance", group, "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["published_path"] == world["product"].published_path
    assert shown["settings"]["mosaic"]["pb_cutoff"] == 0.2
    assert len([i for i in shown["inputs"] if i["kind"] == "raw_file"]) == 3 * SUBBANDS
    (calibration,) = [i for i in shown["inputs"] if i["kind"] == "calibration"]
    assert calibration["transit_time"] == T0.isoformat()

    by_name = Path(world["product"].published_path).name
    assert main(["--config", str(config), "provenance", by_name]) == 0
    out = capsys.readouterr().out
    assert f"group {group} generation 1, published" in out
    assert f"CASA {metadata.version('casatools')}" in out
    assert "0834+555 transit 2025-03-01T00:00:00+00:00" in out
    path = world["files"][f"{world['keys'][1]}_sb01.hdf5"]
    assert f"{path}  {path.stat().st_size} bytes  sha256 {sha256(path)}" in out

    assert main(["--config", str(config), "provenance", "no_such_mosaic.fits"]) == 2
    assert "no product with provenance matches" in capsys.readouterr().err


def test_a_checksum_is_kept_only_for_the_file_as_it_was_hashed(engine, settings):
    keys = add_observations(engine, 1)
    files = add_raw_files(engine, settings, keys)
    path = files[f"{keys[0]}_sb01.hdf5"]
    size, mtime = path.stat().st_size, path.stat().st_mtime

    with writing(engine) as conn:
        record_checksums(
            conn, [{"path": str(path), "size_bytes": size + 1, "mtime": mtime, "sha256": "a" * 64}]
        )
    assert _kept(engine, path) is None, "hashed at another size: not this file"
    with writing(engine) as conn:
        record_checksums(
            conn, [{"path": str(path), "size_bytes": size, "mtime": mtime, "sha256": "b" * 64}]
        )
    assert _kept(engine, path) == "b" * 64

    # Discovery reads a changed file again: its checksum is forgotten.
    with writing(engine) as conn:
        row = {
            "path": str(path),
            "directory": str(path.parent),
            "subband": 1,
            "size_bytes": size,
            "mtime": mtime + 10,
            "error": None,
        }
        upsert_raw_files(conn, {str(path): row}, datetime.now(UTC))
    assert _kept(engine, path) is None


def _kept(engine, path: Path) -> str | None:
    with reading(engine) as conn:
        return conn.execute(select(RawFile.sha256).where(RawFile.path == str(path))).scalar_one()


def test_conversion_hashes_only_the_files_without_a_checksum(engine, settings):
    from reconciler.model import ActionKey, ClaimedAction
    from reconciler.steps import convert

    keys = add_observations(engine, 1)
    files = add_raw_files(engine, settings, keys)
    claimed = ClaimedAction(
        id=1,
        key=ActionKey(ActionKind.CONVERT, f"obs:{keys[0]}"),
        group_id=None,
        attempts=1,
        owner="test",
        token=uuid.uuid4().hex,
        priority=T0,
    )
    with reading(engine) as conn:
        payload = convert.prepare(conn, claimed, settings)

    second = files[f"{keys[0]}_sb01.hdf5"]
    assert payload["to_checksum"] == [
        {"path": str(second), "size_bytes": second.stat().st_size, "mtime": second.stat().st_mtime}
    ]


def sky_tile(directory: Path, index: int) -> Tile:
    """A small SIN tile with a restoring beam and a flat primary beam."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [128.7 + 0.05 * index, 55.57]
    wcs.wcs.cdelt = [-0.01, 0.01]
    wcs.wcs.crpix = [16.0, 16.0]
    header = wcs.to_header()
    header["BMAJ"], header["BMIN"], header["BPA"] = 0.03, 0.02, 0.0
    image = np.zeros((32, 32), dtype=np.float32)
    image[16, 16] = 1.0 + index
    paths = Tile(directory / f"tile{index}.fits", directory / f"tile{index}.pb.fits")
    fits.PrimaryHDU(data=image, header=header).writeto(paths.image_path)
    fits.PrimaryHDU(data=np.ones_like(image), header=wcs.to_header()).writeto(paths.pb_path)
    return paths


def test_provenance_goes_into_a_real_mosaic_before_it_is_published(tmp_path):
    tiles = [sky_tile(tmp_path, index) for index in range(2)]
    staged = tmp_path / "work" / "staging" / "group_1_g1" / "mosaic.fits"
    build_mosaic(
        tiles,
        staged,
        members=["obs0", "obs1"],
        date_obs=T0,
        date_end=T0 + 2 * OBSERVATION,
    )
    before = fits.getdata(staged)
    raw = tmp_path / "incoming" / "2025-03-01T00:00:00_sb00.hdf5"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"visibilities" * 1000)
    record = {
        "package_version": "9.9.9",
        "git_commit": None,
        "settings_json": "{}",
        "settings_hash": hashlib.sha256(b"{}").hexdigest(),
        "casa_version": "6.7.0.31",
        "pyuvdata_version": "3.2.8",
        "casacore_version": "3.8.1",
        "finder": None,
        "finder_version": None,
        "inputs": [
            {
                "kind": "raw_file",
                "observation_key": "obs0",
                "path": str(raw),
                "size_bytes": raw.stat().st_size,
                "sha256": None,
                "mtime": raw.stat().st_mtime,
                "calibrator": None,
                "transit_time": None,
            }
        ],
    }
    payload = {
        "stage_path": str(staged),
        "products_dir": str(tmp_path / "products" / "mosaics"),
        "stem": "dsa110_mosaic_test",
        "group_id": 1,
        "generation": 1,
        "taken": [],
        "provenance": record,
        "coverage_path": str(tmp_path / "products" / "coverage.moc.fits"),
    }

    first = publish.run({**payload, "attempt_id": uuid.uuid4().hex})
    staged_bytes = staged.read_bytes()
    again = publish.run({**payload, "attempt_id": uuid.uuid4().hex})

    assert first == again, "the same record writes the same bytes: one product"
    assert staged.read_bytes() == staged_bytes
    published = Path(first["published_path"])
    assert published.read_bytes() == staged_bytes
    with fits.open(published) as hdus:
        header, data = hdus[0].header, hdus[0].data
        assert np.array_equal(data, before, equal_nan=True), "the pixels are untouched"
    assert header["PROVHASH"] == first["provenance"]["provenance_hash"]
    assert header["PKGVER"] == "9.9.9"
    assert "GITCOMMT" not in header and "FINDER" not in header and "CALNAME" not in header
    assert (header["NRAWFILE"], header["NCALTAB"]) == (1, 0)
    assert header["NMEMBERS"] == 2 and header["TELESCOP"] == "DSA-110"
    assert WCS(header).celestial.wcs.ctype[0] == "RA---SIN"
    history = [str(line) for line in header["HISTORY"]]
    assert history[0].startswith("linear mosaic"), "the mosaic's own history is kept"
    assert f"PROV raw {raw.name} {raw.stat().st_size} bytes sha256:" in history
    assert f"PROV {sha256(raw)}" in history

    # Another record (new settings, say) replaces the provenance of a staged file, never
    # adds to it, and the product moves to a name of its own.
    changed = {**record, "settings_hash": "f" * 64}
    third = publish.run({**payload, "provenance": changed, "attempt_id": uuid.uuid4().hex})
    header = fits.getheader(third["published_path"])
    assert third["published_path"].endswith("_v2.fits")
    assert header["SETHASH"] == "f" * 64
    assert [str(h) for h in header["HISTORY"]].count(f"PROV {sha256(raw)}") == 1
    assert fits.getheader(published)["SETHASH"] == record["settings_hash"], "not rewritten"
