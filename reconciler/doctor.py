"""``reconciler doctor``: is this machine ready to run the service, and is the service well?

Each check gives a verdict (``ok``, ``warn`` or ``fail``), what it found, and, when not
``ok``, what to do. Nothing is changed, but for a file made and removed in work/ and
products/ to prove they are writable, and a tiny CASA image in a temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from reconciler.config import Settings
from reconciler.db.engine import reading
from reconciler.db.migrate import current_revision, head_revision
from reconciler.db.models import (
    Action,
    BandpassCalibrator,
    Event,
    Observation,
    RawFile,
    RegistryEntry,
)
from reconciler.io.casa import casa_environment
from reconciler.io.usage import free_bytes

#: How long the CASA check may take (CASA's first start in a fresh environment is slow).
CASA_TIMEOUT_SECONDS = 300.0
#: The database's clock and this machine's may differ by this much.
CLOCK_TOLERANCE_SECONDS = 5.0
#: Disk growth is measured over this span.
RATE_DAYS = 7.0

_GB = 1e9


@dataclass(frozen=True)
class Check:
    """One check's verdict: ``ok``, ``warn`` or ``fail``; what was found; what to do."""

    name: str
    verdict: str
    detail: str
    fix: str = ""


def run_checks(settings: Settings, engine: Engine, *, casa: bool = True) -> list[Check]:
    """Every check, in order (the CASA one, which takes seconds, unless ``casa`` is
    false); a check that raises is a failure naming the error."""
    checks: list[Check] = [
        Check("configuration", "ok", f"valid ({settings.source})"),
    ]
    database = _guard("database", lambda: _database(engine))
    checks.append(database)
    reachable = database.verdict != "fail"
    steps: list[tuple[str, Callable[[], list[Check] | Check]]] = [
        ("roots", lambda: _roots(settings, engine if reachable else None)),
        ("imaging backend", lambda: _imaging_backend(settings)),
    ]
    if casa:
        steps.insert(1, ("CASA", _casa))
    if reachable:
        steps += [
            ("calibrators", lambda: _calibrators(settings, engine)),
            ("clock", lambda: _clock(engine)),
            ("leases", lambda: _stuck_leases(engine)),
            ("services", lambda: _services(settings, engine)),
        ]
    for name, step in steps:
        found = _guard(name, step)
        checks.extend(found if isinstance(found, list) else [found])
    return checks


def _guard(name: str, step: Callable[[], Any]) -> Any:
    try:
        return step()
    except Exception as exc:  # a check that cannot run is a failed check, named
        return Check(name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}")


def _database(engine: Engine) -> Check:
    try:
        current = current_revision(engine)
    except DBAPIError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        return Check(
            "database",
            "fail",
            f"not reachable: {reason}",
            "start the database server, or correct database.url / RECONCILER_DATABASE_URL",
        )
    head = head_revision()
    if current != head:
        return Check(
            "database",
            "fail",
            f"reachable, schema at {current or 'nothing'}, the code expects {head}",
            "run `reconciler init` to migrate it",
        )
    return Check("database", "ok", f"reachable, schema at head ({head})")


def _roots(settings: Settings, engine: Engine | None) -> list[Check]:
    """incoming readable; work and products writable; free space on each, with the days
    left at the rate products and raw files grew over the last week."""
    paths = settings.paths
    checks = []
    if not paths.incoming.is_dir():
        checks.append(
            Check(
                "incoming",
                "fail",
                f"{paths.incoming} does not exist",
                "create it, or set paths.incoming",
            )
        )
    elif not os.access(paths.incoming, os.R_OK | os.X_OK):
        checks.append(
            Check(
                "incoming",
                "fail",
                f"{paths.incoming} is not readable",
                "give the service's user read access",
            )
        )
    else:
        checks.append(Check("incoming", "ok", f"{paths.incoming} is readable"))
    for name, root in (("work", paths.work), ("products", paths.products)):
        checks.append(_writable(name, root))
    growth = _growth_per_day(engine) if engine is not None else {}
    floor = settings.doctor.min_free_gb * _GB
    for name, root in (
        ("incoming", paths.incoming),
        ("work", paths.work),
        ("products", paths.products),
    ):
        free = free_bytes(root)
        if free is None:
            continue
        rate = growth.get(name)
        left = f", {free / rate:.0f} days at {rate / _GB:.2f} GB/day" if rate else ""
        detail = f"{free / _GB:.1f} GB free on the filesystem of {root}{left}"
        if free < floor:
            fix = f"free space there (the floor is doctor.min_free_gb = {floor / _GB:g} GB)"
            checks.append(Check(f"{name} space", "warn", detail, fix))
        else:
            checks.append(Check(f"{name} space", "ok", detail))
    return checks


def _writable(name: str, root: Path) -> Check:
    probe = root / f".doctor-{uuid.uuid4().hex}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"doctor")
        probe.unlink()
    except OSError as exc:
        return Check(name, "fail", f"{root} is not writable: {exc}", "fix its permissions")
    return Check(name, "ok", f"{root} is writable")


def _growth_per_day(engine: Engine) -> dict[str, float]:
    """Bytes a day published into products/ and arrived in incoming/ over the last week
    (as the database recorded them); work/ grows with them and retention shrinks it."""
    since = datetime.now(UTC) - timedelta(days=RATE_DAYS)
    with reading(engine) as conn:
        published = conn.execute(
            select(func.coalesce(func.sum(RegistryEntry.size_bytes), 0)).where(
                RegistryEntry.published_at >= since
            )
        ).scalar_one()
        arrived = conn.execute(
            select(func.coalesce(func.sum(RawFile.size_bytes), 0)).where(RawFile.seen_at >= since)
        ).scalar_one()
    # PostgreSQL sums a bigint into a numeric.
    return {"products": float(published) / RATE_DAYS, "incoming": float(arrived) / RATE_DAYS}


def _casa() -> Check:
    """A real CASA tool and task in a child process, offline (DESIGN §5)."""
    with tempfile.TemporaryDirectory(prefix="reconciler-doctor-") as scratch:
        environment = {
            **os.environ,
            **casa_environment(Path(scratch) / "casa.log"),
            "TMPDIR": scratch,
        }
        try:
            child = subprocess.run(
                [sys.executable, "-m", "reconciler.io.casa", "check",
                 json.dumps({"scratch": scratch})],
                env=environment,
                capture_output=True,
                text=True,
                timeout=CASA_TIMEOUT_SECONDS,
                cwd=scratch,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return Check(
                "CASA",
                "fail",
                f"a tiny task did not finish in {CASA_TIMEOUT_SECONDS:g} s",
                "check that nothing makes CASA wait for the network (casa_site.py)",
            )
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return Check(
            "CASA",
            "fail",
            f"a tiny task failed (exit {child.returncode}): {last}",
            "reinstall with `make setup`",
        )
    result = json.loads(lines[-1])
    return Check("CASA", "ok", f"CASA {result['casa_version']} ran imstat offline")


def _imaging_backend(settings: Settings) -> Check:
    backend = settings.imaging.backend
    if backend == "wsclean":
        found = shutil.which("wsclean")
        if found is None:
            return Check(
                "imaging backend",
                "fail",
                "imaging.backend is wsclean but no wsclean is on PATH",
                "install Debian's wsclean (make setup does), or set imaging.backend = tclean",
            )
        return Check("imaging backend", "ok", f"wsclean at {found}")
    return Check("imaging backend", "ok", "tclean (CASA)")


def _calibrators(settings: Settings, engine: Engine) -> Check:
    """Calibrators registered, and one serving every dec strip seen in the data."""
    tolerance = settings.calibration.dec_strip_tolerance_deg
    with reading(engine) as conn:
        active = conn.execute(
            select(BandpassCalibrator.name, BandpassCalibrator.dec_deg,
                   BandpassCalibrator.dec_tolerance_deg)
            .where(BandpassCalibrator.active)
        ).all()  # fmt: skip
        decs = conn.execute(select(Observation.dec_deg).distinct()).scalars().all()
    if not active:
        return Check(
            "calibrators",
            "fail",
            "no active bandpass calibrator is registered",
            "run `reconciler init` (it loads calibration.catalogue), "
            "or `reconciler calibrators add`",
        )
    strips: list[float] = []
    for dec in sorted(decs):
        if not strips or dec - strips[-1] > tolerance:
            strips.append(dec)
    uncovered = [
        dec
        for dec in strips
        if not any(abs(dec - c.dec_deg) <= c.dec_tolerance_deg for c in active)
    ]
    seen = f"{len(active)} active; {len(strips)} dec strip(s) seen in the data"
    if uncovered:
        listed = ", ".join(f"{dec:+.2f}°" for dec in uncovered)
        return Check(
            "calibrators",
            "fail",
            f"{seen}; none serves Dec {listed}",
            "register a calibrator for each (`reconciler calibrators add`)",
        )
    return Check("calibrators", "ok", f"{seen}, each served")


def _clock(engine: Engine) -> Check:
    """This machine's clock against the database server's (PostgreSQL), and the year."""
    now = datetime.now(UTC)
    if now.year < 2020:
        return Check("clock", "fail", f"the clock says {now:%Y-%m-%d}", "set the clock (NTP)")
    if engine.dialect.name != "postgresql":
        return Check("clock", "ok", f"{now:%Y-%m-%d %H:%M:%S} UTC (SQLite: no server clock)")
    with reading(engine) as conn:
        server = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    skew = abs((server - datetime.now(UTC)).total_seconds())
    if skew > CLOCK_TOLERANCE_SECONDS:
        return Check(
            "clock",
            "fail",
            f"this machine and the database server differ by {skew:.1f} s",
            "synchronise both clocks (NTP): leases are compared across them",
        )
    return Check("clock", "ok", f"within {skew:.2f} s of the database server")


def _stuck_leases(engine: Engine) -> Check:
    now = datetime.now(UTC)
    with reading(engine) as conn:
        stuck = conn.execute(
            select(Action.id, Action.kind, Action.target, Action.lease_owner).where(
                Action.state == "running", Action.lease_expires_at < now
            )
        ).all()
    if stuck:
        listed = ", ".join(f"{a.kind} {a.target} ({a.lease_owner})" for a in stuck[:5])
        return Check(
            "leases",
            "warn",
            f"{len(stuck)} lease(s) ran out and were not reclaimed yet: {listed}",
            "a running service reclaims them at its next pass; start one if none runs",
        )
    return Check("leases", "ok", "no lease has run out")


def _services(settings: Settings, engine: Engine) -> Check:
    """The services (owner, host) that wrote in the last minutes: events and heartbeats."""
    since = datetime.now(UTC) - timedelta(minutes=settings.doctor.service_seen_minutes)
    with reading(engine) as conn:
        actors = conn.execute(
            select(Event.actor, func.max(Event.at)).where(Event.at >= since).group_by(Event.actor)
        ).all()
        holders = conn.execute(
            select(Action.lease_owner, func.max(Action.heartbeat_at))
            .where(Action.state == "running", Action.heartbeat_at >= since)
            .group_by(Action.lease_owner)
        ).all()
    seen: dict[str, datetime] = {}
    for owner, at in [*actors, *holders]:
        # A service names itself host:pid:suffix; people and commands name themselves else.
        if owner and owner.count(":") == 2:
            seen[owner] = max(at, seen.get(owner, at))
    minutes = f"{settings.doctor.service_seen_minutes:g} min"
    if not seen:
        return Check(
            "services",
            "warn",
            f"no service wrote in the last {minutes}",
            "start `reconciler run` (or the systemd unit) if one should be running",
        )
    listed = ", ".join(
        f"{owner.split(':')[1]} on {owner.split(':')[0]} at {at:%H:%M:%S}"
        for owner, at in sorted(seen.items())
    )
    return Check("services", "ok", f"seen in the last {minutes}: {listed}")


def report_text(checks: list[Check]) -> str:
    """One line per check, then what to do for each that is not ok."""
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = [f"{marks[c.verdict]}  {c.name}: {c.detail}" for c in checks]
    todo = [f"  {c.name}: {c.fix}" for c in checks if c.verdict != "ok" and c.fix]
    if todo:
        lines += ["", "to do:", *todo]
    return "\n".join(lines)


def as_dicts(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(check) for check in checks]
