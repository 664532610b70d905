"""Published products are read again on a schedule and checked against their checksums.

A product's files (the mosaic and the weight map and preview beside it) were recorded with
their SHA-256 when published. Once per ``verification.interval_hours`` each is read and
compared; what is missing, altered or unreadable becomes the registry row's ``problem``
(shown as ``mosaic_status.product_problem``), and a change of problem is one event and
one log line. Nothing is ever re-made or repaired here: a published product belongs to
the people who use it, and only a person decides what replaces it. A path that lies
outside the products root is never read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Row, select, update

from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.engine import reading_one, writing
from reconciler.db.models import RegistryEntry
from reconciler.io.checksum import sha256
from reconciler.io.confine import inside

log = logging.getLogger("reconciler")


@dataclass
class VerifyReport:
    """What one round of verification read and found: problems by registry row id."""

    checked: int = 0
    problems: dict[int, str] = field(default_factory=dict)


def verify_published(
    engine: Engine, settings: Settings, *, now: datetime, actor: str = "service"
) -> VerifyReport:
    """Verify the published products whose last verification is older than the interval,
    oldest first, at most ``verification.max_per_pass`` of them."""
    v = settings.verification
    report = VerifyReport()
    if v.interval_hours <= 0:
        return report
    due = now - timedelta(hours=v.interval_hours)
    with reading_one(engine) as conn:
        rows = conn.execute(
            select(
                RegistryEntry.id,
                RegistryEntry.group_id,
                RegistryEntry.published_path,
                RegistryEntry.checksum,
                RegistryEntry.companions,
                RegistryEntry.problem,
            )
            .where(RegistryEntry.status == "published", RegistryEntry.verified_at < due)
            .order_by(RegistryEntry.verified_at)
            .limit(v.max_per_pass)
        ).all()
    for row in rows:
        # The files are read outside any transaction: a large mosaic holds no lock.
        problem = product_problem(
            _recorded_files(row.published_path, row.checksum, row.companions),
            settings.paths.products,
        )
        report.checked += 1
        if problem is not None:
            report.problems[row.id] = problem
        with writing(engine) as conn:
            changed = conn.execute(
                update(RegistryEntry)
                .where(
                    RegistryEntry.id == row.id,
                    RegistryEntry.problem.is_not_distinct_from(row.problem),
                )
                .values(verified_at=now, problem=problem)
            ).rowcount
            if changed and problem != row.problem:
                _report_change(conn, row, problem, now=now, actor=actor)
    return report


def product_problem(files: dict[str, str | None], products: Path) -> str | None:
    """What is wrong with a product's files (path → recorded SHA-256), or None."""
    problems = []
    for path, recorded in files.items():
        if not inside(path, products):
            problems.append(f"{path} is outside the products root {products}; not read")
            continue
        try:
            found = sha256(Path(path))
        except FileNotFoundError:
            problems.append(f"{path} is missing")
            continue
        except OSError as exc:
            problems.append(f"{path} could not be read: {exc}")
            continue
        if recorded is not None and found != recorded:
            problems.append(
                f"{path} was altered: its SHA-256 is {found[:16]}…, published as {recorded[:16]}…"
            )
    return "; ".join(problems) or None


def _recorded_files(
    published_path: str | None, checksum: str | None, companions: str | None
) -> dict[str, str | None]:
    files: dict[str, str | None] = {}
    if published_path is not None:
        files[published_path] = checksum
    if companions:
        files |= json.loads(companions)
    return files


def _report_change(
    conn: Connection, row: Row[Any], problem: str | None, *, now: datetime, actor: str
) -> None:
    if problem is None:
        message = f"published product {row.published_path} is whole again (was: {row.problem})"
        log.info("%s", message)
        kind = "product_ok"
    else:
        message = f"published product of group {row.group_id}: {problem}"
        log.warning("%s", message)
        kind = "product_problem"
    queries.record_event(conn, kind, message, at=now, group_id=row.group_id, actor=actor)
