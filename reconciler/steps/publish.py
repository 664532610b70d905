"""Publish: copy a staged mosaic into the products root, never overwriting, then register it.

Order, each step recoverable: (0) write the provenance into the headers of the staged FITS
files, and the quality assessment into the mosaic's (the same record gives the same
bytes, so a retry changes nothing), and read the mosaic's sky footprint (none for a file
that is not a FITS image); (1) copy every staged file to a temporary name in the products
directory and flush it; (2) link it to its final name, which fails rather than overwrite,
and union the footprint into the products' coverage map (a union: a retry adds nothing);
(3) mark the registry row published and record its provenance and footprint, in one
transaction. A crash after (2) leaves a final file whose checksum matches the staged one:
the next attempt recognises it and goes on to (3). A name taken by a different product
gets the next version suffix.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, select

from reconciler.config import Settings, as_dict
from reconciler.db import artifacts, cone, provenance
from reconciler.db.models import MosaicGroup, RegistryEntry
from reconciler.engine.registry import ActionHandler
from reconciler.errors import PermanentError, TemporaryError
from reconciler.fingerprint import fingerprints, product_fingerprint
from reconciler.io.checksum import sha256, sha256_as_recorded
from reconciler.io.confine import confine
from reconciler.io.coverage import add_to_coverage
from reconciler.io.footprint import FootprintError, footprint_of
from reconciler.io.provenance_header import write_provenance
from reconciler.io.versions import project_version, tool_versions
from reconciler.model import ActionKind, ClaimedAction
from reconciler.naming import (
    attempt_path,
    companion_paths,
    coverage_path,
    parse_target,
    window_label,
)

_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The staged mosaic of this group generation and its published name."""
    _, group_text = parse_target(claimed.key.target)
    group_id, generation = int(group_text), claimed.key.generation
    row = conn.execute(
        select(
            RegistryEntry.stage_path,
            MosaicGroup.window_start,
            MosaicGroup.window_end,
            MosaicGroup.dec_deg,
        )
        .join(MosaicGroup, MosaicGroup.id == RegistryEntry.group_id)
        .where(
            RegistryEntry.kind == "mosaic",
            RegistryEntry.group_id == group_id,
            RegistryEntry.generation == generation,
        )
    ).first()
    if row is None:
        raise PermanentError(f"group {group_id} generation {generation} has no staged mosaic")
    dec = f"_dec{row.dec_deg:+06.2f}" if row.dec_deg is not None else ""
    stem = f"dsa110_mosaic_{window_label(row.window_start, row.window_end)}{dec}"
    products = settings.paths.products
    products_dir = confine(products / "mosaics", products, what="the mosaics directory")
    stage_path = confine(
        row.stage_path, settings.paths.work, what=f"data_registry.stage_path of group {group_id}"
    )
    # Names already registered to another product (an earlier generation of this window,
    # byte for byte the same, say) are never reused: each product has a name of its own.
    taken = (
        conn.execute(
            select(RegistryEntry.published_path).where(
                RegistryEntry.published_path.startswith(str(products_dir / stem)),
                ~and_(RegistryEntry.group_id == group_id, RegistryEntry.generation == generation),
            )
        )
        .scalars()
        .all()
    )
    quality = artifacts.quality_of(conn, group_id, generation)
    if quality is not None and quality["quality"] == "failed" and quality["accepted_by"] is None:
        raise PermanentError(
            f"group {group_id} generation {generation} failed its quality assessment and "
            "is held: `reconciler publish --accept` publishes it"
        )
    return {
        "group_id": group_id,
        "generation": generation,
        "stage_path": str(stage_path),
        "quality": quality,
        "products_dir": str(products_dir),
        "stem": stem,
        "taken": sorted(taken),
        "provenance": provenance_of(conn, group_id, settings),
        "coverage_path": str(coverage_path(products)),
        "fingerprint": product_fingerprint(
            fingerprints(settings), artifacts.tile_fingerprints(conn, group_id)
        ),
    }


def provenance_of(conn: Connection, group_id: int, settings: Settings) -> dict[str, Any]:
    """What makes the mosaic of ``group_id``: its inputs (raw files whose checksum is not
    known yet have ``sha256`` None), the project's and the tools' versions and the
    effective settings. Without its ``provenance_hash``, which :func:`run` adds once every
    checksum is known."""
    inputs = provenance.mosaic_inputs(conn, group_id)
    for item in inputs:
        if item["kind"] == "raw_file" and item["sha256"] is None:
            # The child reads (hashes) these: only files under the incoming root.
            confine(item["path"], settings.paths.incoming, what=f"raw file of group {group_id}")
    effective = {key: value for key, value in as_dict(settings).items() if key != "source"}
    settings_json = json.dumps(effective, sort_keys=True, default=str)
    package_version, git_commit = project_version()
    tools = tool_versions()
    return {
        "package_version": package_version,
        "git_commit": git_commit,
        "settings_json": settings_json,
        "settings_hash": hashlib.sha256(settings_json.encode()).hexdigest(),
        "casa_version": tools["casa"],
        "pyuvdata_version": tools["pyuvdata"],
        "casacore_version": tools["casacore"],
        "finder": tools["finder"],
        "finder_version": tools["finder_version"],
        "inputs": inputs,
    }


def completed_provenance(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the checksum of every raw file known (hashed now where the database
    had none: a file converted before checksums were kept; None if it is gone) and its
    ``provenance_hash``: the SHA-256 of the rest as canonical JSON."""
    inputs = []
    for item in record["inputs"]:
        if item["kind"] == "raw_file" and item["sha256"] is None:
            checksum = sha256_as_recorded(Path(item["path"]), item["size_bytes"], item["mtime"])
            item = {**item, "sha256": checksum}
        inputs.append(item)
    completed = {key: value for key, value in record.items() if key != "provenance_hash"}
    completed["inputs"] = inputs
    canonical = json.dumps(completed, sort_keys=True, separators=(",", ":"))
    return {**completed, "provenance_hash": hashlib.sha256(canonical.encode()).hexdigest()}


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Child process: publish the staged files under the first name that is free (or holds
    these very bytes) and no other product is registered under."""
    staged = Path(payload["stage_path"])
    if not staged.is_file():
        raise PermanentError(f"staged mosaic {staged} is missing")
    products = Path(payload["products_dir"])
    taken = set(payload["taken"])
    made_by = payload.get("provenance")
    if made_by is not None:
        made_by = completed_provenance(made_by)
    try:
        if made_by is not None:
            # Into the staged files, never into a published one.
            for fits_file in [staged, *companion_paths(staged)]:
                if fits_file.name.endswith(".fits") and fits_file.is_file():
                    quality = payload.get("quality") if fits_file == staged else None
                    write_provenance(fits_file, made_by, payload["attempt_id"], quality)
        try:
            footprint = footprint_of(staged)
        except FootprintError:
            # Not an image of the sky: nothing for cone searches or the coverage map.
            footprint = np.empty(0, dtype=np.int64)
        products.mkdir(parents=True, exist_ok=True)
        # The mosaic and its companions are one product: a name is free only when every
        # file of it is free or already holds these very bytes.
        files = {staged: sha256(staged)} | {
            companion: sha256(companion)
            for companion in companion_paths(staged)
            if companion.is_file()
        }
        version = 1
        while True:
            suffix = "" if version == 1 else f"_v{version}"
            final = products / f"{payload['stem']}{suffix}.fits"
            targets = {source: _renamed(source, staged, final) for source in files}
            free = all(
                not target.exists() or sha256(target) == files[source]
                for source, target in targets.items()
            )
            if free and str(final) not in taken:
                break
            version += 1
        # The companions first: the mosaic's own name appears last, once all is there. A
        # failure half-way takes back what this attempt placed: all of the product, or none.
        placed: list[Path] = []
        try:
            for source in sorted(targets, key=lambda source: source == staged):
                if _place(source, targets[source], payload["attempt_id"]):
                    placed.append(targets[source])
        except OSError:
            for target in placed:
                target.unlink(missing_ok=True)
            raise
        add_to_coverage(Path(payload["coverage_path"]), footprint)
    except OSError as exc:
        # The operator can fix these (permissions, a full disk): retry with backoff, and say
        # plainly what is wrong so `status` shows it.
        if exc.errno in _NOT_WRITABLE:
            raise TemporaryError(f"products directory {products} is not writable: {exc}") from exc
        if exc.errno == errno.ENOSPC:
            raise TemporaryError(f"no space left to publish into {products}: {exc}") from exc
        raise
    companions = {
        str(target): files[source] for source, target in targets.items() if source != staged
    }
    published = {
        "published_path": str(final),
        "checksum": files[staged],
        "companions": companions,
        "size_bytes": sum(target.stat().st_size for target in targets.values()),
        "footprint": footprint.tolist(),
    }
    return published if made_by is None else {**published, "provenance": made_by}


def _renamed(source: Path, staged: Path, final: Path) -> Path:
    """Where ``source`` (the staged mosaic or a companion of it) is published."""
    if source == staged:
        return final
    extension = source.name.removeprefix(staged.name.removesuffix(".fits"))
    return final.with_name(final.name.removesuffix(".fits") + extension)


def _place(source: Path, final: Path, attempt: str) -> bool:
    """Copy ``source`` to ``final`` atomically, never replacing a file; True when this call
    made ``final`` (False: it was there already, with these bytes)."""
    if final.exists():
        return False
    tmp = attempt_path(final, attempt)
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.link(tmp, final)  # fails if the name was taken meanwhile: never overwrites
    finally:
        tmp.unlink(missing_ok=True)
    return True


def record(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Mark the registry row published, with the checksum of what was published, and
    record its sky footprint and its provenance (keeping the raw files' checksums hashed
    now on their rows)."""
    artifacts.mark_published(
        conn,
        payload["group_id"],
        payload["generation"],
        published_path=result["published_path"],
        checksum=result["checksum"],
        companions=json.dumps(result.get("companions", {}), sort_keys=True),
        size_bytes=result.get("size_bytes"),
        fingerprint=payload["fingerprint"],
        at=datetime.now(UTC),
    )
    cone.record_footprint(conn, payload["group_id"], payload["generation"], result["footprint"])
    made_by = result.get("provenance")
    if made_by is not None:
        raw = [item for item in made_by["inputs"] if item["kind"] == "raw_file"]
        provenance.record_checksums(conn, [item for item in raw if item["sha256"] is not None])
        provenance.record_provenance(conn, payload["group_id"], payload["generation"], made_by)


HANDLER = ActionHandler(
    kind=ActionKind.PUBLISH,
    run="reconciler.steps.publish:run",
    prepare=prepare,
    record=record,
    product_exists=lambda path: Path(path).is_file(),
)
