"""Convert: the subband files of one observation become one MS at a deterministic path."""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from reconciler.config import Settings
from reconciler.db import artifacts
from reconciler.db.models import Observation, RawFile
from reconciler.errors import PermanentError
from reconciler.model import ActionKind, ClaimedAction
from reconciler.naming import measurement_set_path, parse_target
from reconciler.steps.registry import ActionHandler


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The observation's readable subband files and where its MS goes."""
    _, key = parse_target(claimed.key.target)
    files = (
        conn.execute(
            select(RawFile.path)
            .join(Observation, Observation.id == RawFile.observation_id)
            .where(Observation.key == key, RawFile.error.is_(None))
            .order_by(RawFile.subband)
        )
        .scalars()
        .all()
    )
    if not files:
        raise PermanentError(f"observation {key} has no readable raw files")
    work = settings.paths.work
    return {
        "key": key,
        "files": list(files),
        "out_ms": str(measurement_set_path(work, key)),
        "scratch": str(work / "scratch" / "convert" / key),
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Child process: convert and validate; bad input is a permanent error."""
    from reconciler.io.convert import ConversionError, convert_observation
    from reconciler.io.uvh5 import RawFileError

    try:
        summary = convert_observation(
            [Path(p) for p in payload["files"]],
            Path(payload["out_ms"]),
            scratch_dir=Path(payload["scratch"]),
        )
    except (ConversionError, RawFileError) as exc:
        raise PermanentError(str(exc)) from exc
    return {
        "path": str(summary.path),
        "start": summary.start.isoformat(),
        "mid": summary.mid.isoformat(),
        "end": summary.end.isoformat(),
        "ra_deg": summary.phase_centre_ra_deg,
        "dec_deg": summary.phase_centre_dec_deg,
        "n_rows": summary.n_rows,
        "n_channels": summary.n_channels,
    }


def record(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Index the MS from what the MS itself says."""
    artifacts.record_measurement_set(
        conn,
        payload["key"],
        path=str(result["path"]),
        start=datetime.fromisoformat(result["start"]),
        mid=datetime.fromisoformat(result["mid"]),
        end=datetime.fromisoformat(result["end"]),
        ra_deg=result["ra_deg"],
        dec_deg=result["dec_deg"],
        n_rows=result["n_rows"],
        n_channels=result["n_channels"],
    )


def ms_exists(path: str) -> bool:
    """An MS that opens and has rows.

    Opening is cached per (path, modification time, size) of the table descriptor, so a
    pass only stats the file; an MS replaced or emptied since is opened again.
    """
    try:
        stat = (Path(path) / "table.dat").stat()
    except OSError:
        return False
    return _has_rows(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8192)
def _has_rows(path: str, mtime_ns: int, size: int) -> bool:
    from reconciler.io.ms import MsError, read_ms_summary

    try:
        return read_ms_summary(path).n_rows > 0
    except MsError:
        return False


HANDLER = ActionHandler(
    kind=ActionKind.CONVERT,
    run="reconciler.steps.convert:run",
    prepare=prepare,
    record=record,
    product_exists=ms_exists,
)
