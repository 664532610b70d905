"""Read-only reports for people: the status table, the event history, the plan, the disk,
the provenance of products, their quality assessments, the queue and the lag behind the
array."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select, text, type_coerce

from reconciler.config import Settings
from reconciler.db.models import (
    Action,
    Event,
    Image,
    MosaicGroup,
    Observation,
    QualityReport,
    RegistryEntry,
)
from reconciler.db.types import UTCDateTime
from reconciler.io.usage import free_bytes, tree_bytes
from reconciler.model import Phase, Plan
from reconciler.naming import quality_figure_of
from reconciler.observe import Snapshot

STATUS_COLUMNS = (
    "group_id",
    "window_start",
    "window_end",
    "origin",
    "dec_deg",
    "generation",
    "phase",
    "members",
    "present",
    "converted",
    "calibrated",
    "imaged",
    "attempts",
    "next_action",
    "reason",
    "last_error",
    "published_path",
    "product_problem",
    "qa_status",
    "qa_summary",
)


def status_rows(conn: Connection, *, include_final: bool = True) -> list[dict[str, Any]]:
    """Rows of the ``mosaic_status`` view, earliest window first."""
    where = "" if include_final else "WHERE phase NOT IN ('published', 'cancelled', 'invalid')"
    sql = text(
        f"SELECT {', '.join(STATUS_COLUMNS)} FROM mosaic_status {where} "
        "ORDER BY window_start, group_id"
    ).columns(window_start=UTCDateTime(), window_end=UTCDateTime())
    return [dict(row._mapping) for row in conn.execute(sql)]


def images_by_backend(conn: Connection) -> dict[str, int]:
    """How many image tiles each imager made (``unknown``: recorded before it was kept)."""
    rows = conn.execute(select(Image.backend, func.count()).group_by(Image.backend))
    return {backend or "unknown": count for backend, count in sorted(rows, key=str)}


#: The parts of work/ reported apart: what the steps write there.
WORK_PARTS = ("ms", "calibrated", "caltables", "images", "staging", "logs")


def disk_usage(conn: Connection, settings: Settings) -> dict[str, Any]:
    """Bytes used under work/ (by part; walked, and kept small by retention) and in the
    published products (from the registry: what publish recorded), and bytes free on each
    root's filesystem."""
    work = settings.paths.work
    parts = {part: tree_bytes(work / part) for part in WORK_PARTS}
    total = tree_bytes(work)
    published = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(RegistryEntry.size_bytes), 0),
            func.count(RegistryEntry.size_bytes),
        ).where(RegistryEntry.status == "published")
    ).one()
    return {
        "work": {
            "path": str(work),
            "bytes": total,
            "parts": {**parts, "other": total - sum(parts.values())},
            "free_bytes": free_bytes(work),
        },
        "products": {
            "path": str(settings.paths.products),
            "published": published[0],
            "published_bytes": int(published[1]),
            "size_unknown": published[0] - published[2],
            "free_bytes": free_bytes(settings.paths.products),
        },
    }


def disk_line(usage: dict[str, Any]) -> str:
    """One line of :func:`disk_usage` for the status header."""
    work, products = usage["work"], usage["products"]
    parts = ", ".join(f"{name} {_size(n)}" for name, n in work["parts"].items() if n)
    unknown = (
        f" ({products['size_unknown']} of unrecorded size)" if products["size_unknown"] else ""
    )
    return (
        f"disk: work/ {_size(work['bytes'])}{f' ({parts})' if parts else ''}, "
        f"{_size(work['free_bytes'])} free; products/ {products['published']} published, "
        f"{_size(products['published_bytes'])}{unknown}, {_size(products['free_bytes'])} free"
    )


def disk_report(usage: dict[str, Any]) -> str:
    """:func:`disk_usage` as a few lines."""
    work, products = usage["work"], usage["products"]
    lines = [
        f"work/      {work['path']}: {_size(work['bytes'])} used, {_size(work['free_bytes'])} free"
    ]
    lines += [f"  {name:<12}{_size(n):>10}" for name, n in work["parts"].items()]
    unknown = products["size_unknown"]
    lines.append(
        f"products/  {products['path']}: {products['published']} published, "
        f"{_size(products['published_bytes'])}"
        + (f" ({unknown} of unrecorded size)" if unknown else "")
        + f", {_size(products['free_bytes'])} free"
    )
    return "\n".join(lines)


def _size(n: float | None) -> str:
    """Bytes for people: 1.2 GB."""
    if n is None:
        return "?"
    units = ("B", "kB", "MB", "GB", "TB")
    power = 0
    while n >= 1000 and power < len(units) - 1:
        n, power = n / 1000, power + 1
    return f"{n:.0f} B" if power == 0 else f"{n:.1f} {units[power]}"


def event_rows(
    conn: Connection, *, group_id: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest ``limit`` events (of one group, if given), oldest first."""
    stmt = select(
        Event.id, Event.at, Event.kind, Event.group_id, Event.action_id, Event.actor, Event.message
    )
    if group_id is not None:
        stmt = stmt.where(Event.group_id == group_id)
    stmt = stmt.order_by(Event.id.desc()).limit(limit)
    return [dict(row._mapping) for row in reversed(list(conn.execute(stmt)))]


def plan_rows(snapshot: Snapshot, plan: Plan) -> dict[str, Any]:
    """The plan as plain data: per group, its phase and why; then the ordered actions."""
    status = {a.key: a for g in snapshot.observed for a in g.actions.values()}
    groups = [
        {
            "group_id": d.group_id,
            "phase": str(d.phase),
            "reason": d.reason,
            "next_action": d.next_action,
        }
        for d in plan.decisions
    ]
    actions = []
    for spec in plan.actions:
        known = status.get(spec.key)
        if known is None:
            verb = "queue"
        elif spec.redo_version is not None:
            verb = "queue again"
        else:
            verb = f"already {known.state}"
        actions.append(
            {
                "kind": str(spec.key.kind),
                "target": spec.key.target,
                "generation": spec.key.generation,
                "group_id": spec.group_id,
                "priority": spec.priority,
                "what": verb,
            }
        )
    return {"at": snapshot.at, "groups": groups, "actions": actions}


def render_table(rows: list[dict[str, Any]], columns: tuple[str, ...], *, width: int = 60) -> str:
    """A plain-text table; long cells are cut to ``width`` characters."""
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c), width) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: object, width: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.2f}"
    text_value = str(value)
    return text_value if len(text_value) <= width else text_value[: width - 1] + "…"


def jsonable(value: Any) -> Any:
    """Make rows JSON-serialisable: times as ISO strings."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def provenance_report(products: list[dict[str, Any]]) -> str:
    """What made each product (as :func:`reconciler.db.provenance.product_provenance` gives
    it), as text: current or superseded, versions and settings hash, then its inputs."""
    blocks = []
    for product in products:
        commit = product["git_commit"] or "not a git checkout"
        finder = f"{product['finder']} {product['finder_version']}" if product["finder"] else "none"
        current = "current"
        if product["superseded_by"] is not None:
            current = (
                f"superseded by product {product['superseded_by']} at "
                f"{_iso(product['superseded_at'])}"
            )
        lines = [
            f"product {product['product_id']}: group {product['group_id']} generation "
            f"{product['generation']}, {product['status']}, {current}",
            f"  published:  {product['published_path'] or '-'}",
            f"  sha256:     {product['checksum'] or '-'}",
            f"  made by:    dsa110-reconciler {product['package_version']} ({commit})",
            f"  tools:      CASA {product['casa_version']}, pyuvdata "
            f"{product['pyuvdata_version']}, python-casacore {product['casacore_version']}, "
            f"source finder {finder}",
            f"  settings:   sha256 {product['settings_hash']} "
            f"(stages: {product['fingerprint'] or 'in part other or unknown settings'})",
            f"  record:     sha256 {product['provenance_hash']} (FITS PROVHASH)",
        ]
        calibration = [i for i in product["inputs"] if i["kind"] == "calibration"]
        raw = [i for i in product["inputs"] if i["kind"] == "raw_file"]
        lines.append(f"  calibration tables ({len(calibration)}):")
        lines += [
            f"    {i['calibrator']} transit {_iso(i['transit_time'])} "
            f"(observation {i['observation_key']}): {i['path']}"
            for i in calibration
        ]
        total = sum(i["size_bytes"] or 0 for i in raw)
        lines.append(f"  raw files ({len(raw)}, {total} bytes):")
        lines += [
            f"    {i['path']}  {i['size_bytes']} bytes  sha256 {i['sha256'] or 'unknown'}"
            for i in raw
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "-"


def quality_reports(conn: Connection, group_id: int) -> list[dict[str, Any]]:
    """The quality assessments of a group's mosaics, newest generation first, with the
    measured figures (``figures``) as plain data. ``figure_path`` is the published QA
    figure once the mosaic is published (the staged one is removed), else the staged one."""
    published = (
        select(RegistryEntry.published_path)
        .where(
            RegistryEntry.group_id == QualityReport.group_id,
            RegistryEntry.generation == QualityReport.generation,
            RegistryEntry.kind == "mosaic",
            RegistryEntry.status == "published",
        )
        .scalar_subquery()
    )
    rows = conn.execute(
        select(QualityReport.__table__, published.label("published_path"))
        .where(QualityReport.group_id == group_id)
        .order_by(QualityReport.generation.desc())
    )
    return [
        {
            "group_id": row.group_id,
            "generation": row.generation,
            "quality": row.quality,
            "summary": row.summary,
            "figure_path": str(quality_figure_of(Path(row.published_path)))
            if row.published_path
            else row.figure_path,
            "assessed_at": row.assessed_at,
            "accepted_at": row.accepted_at,
            "accepted_by": row.accepted_by,
            "accept_reason": row.accept_reason,
            "figures": json.loads(row.figures),
        }
        for row in rows
    ]


def quality_text(reports: list[dict[str, Any]]) -> str:
    """The quality assessments as text: the verdict and its reasons, then the figures."""
    blocks = []
    for report in reports:
        f = report["figures"]
        accepted = (
            f"  accepted:   {_iso(report['accepted_at'])} by {report['accepted_by']}"
            f" ({report['accept_reason'] or 'no reason given'})"
            if report["accepted_at"] is not None
            else None
        )
        lines = [
            f"group {report['group_id']} generation {report['generation']}: "
            f"{report['quality'].upper()}",
            *(f"  - {reason}" for reason in report["summary"].split("; ")),
            *([accepted] if accepted else []),
            f"  noise:      rms {_mjy(f['rms_jy'])} mJy/beam, expected {_mjy(f['expected_rms_jy'])}"
            f" (ratio {_num(f['noise_ratio'])})",
            f'  astrometry: median dRA {_num(f["median_d_ra_arcsec"])}", dDec '
            f'{_num(f["median_d_dec_arcsec"])}", scatter {_num(f["astrometry_scatter_arcsec"])}"'
            f" ({len(f['matches'])} reference sources matched, {len(f['missed'])} missed)",
            f"  flux scale: {_num(f['flux_scale'])} (scatter {_num(f['flux_scatter'])})",
            f"  dynamic range {_num(f['dynamic_range'])}, blank fraction "
            f'{_num(f["blank_fraction"])}, beam {_num(f["beam_major_arcsec"])}" x '
            f'{_num(f["beam_minor_arcsec"])}" ({_num(f["beam_ratio"])} x diffraction limit)',
            f"  figure:     {report['figure_path']}",
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _mjy(value: float | None) -> str:
    return "unknown" if value is None else f"{value * 1e3:.3g}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


LIGHT_CURVE_COLUMNS = ("time", "flux_jy", "error_jy", "kind", "group", "mosaic")


def light_curve_report(curves: list[dict[str, Any]]) -> str:
    """Each sky source (as :func:`reconciler.db.lightcurves.light_curves` gives them) and
    its measurements, one line each: forced ones as upper limits."""
    blocks = []
    for curve in curves:
        rows = [
            {
                "time": m["observed_at"],
                "flux_jy": f"{m['flux_jy']:.4g}",
                "error_jy": f"{m['flux_err_jy']:.2g}",
                "kind": f"< {m['upper_limit_jy']:.3g} (forced)" if m["forced"] else "detected",
                "group": f"{m['group_id']}.{m['generation']}",
                "mosaic": m["mosaic"],
            }
            for m in curve["measurements"]
        ]
        blocks.append(
            f"sky source {curve['sky_source_id']} at RA {curve['ra_deg']:.5f} Dec "
            f"{curve['dec_deg']:+.5f} ({curve['separation_arcsec']:.1f}″ away), "
            f"{len(rows)} measurement(s)\n" + render_table(rows, LIGHT_CURVE_COLUMNS, width=120)
        )
    return "\n\n".join(blocks)


def queue(conn: Connection, now: datetime) -> dict[str, Any]:
    """The action queue: counts of pending (ready now), backing off (pending, not before a
    later time), running and failed actions; the age in seconds of the oldest action ready
    to run; the workers holding leases and the running actions."""
    backing_off = and_(Action.state == "pending", Action.not_before > now)
    state = case((backing_off, "backing_off"), else_=Action.state)
    counts = dict(
        conn.execute(
            select(state, func.count())
            .where(Action.state.in_(("pending", "running", "failed")))
            .group_by(state)
        ).all()
    )
    ready_since = func.coalesce(Action.not_before, Action.created_at)
    oldest = conn.execute(
        select(type_coerce(func.min(ready_since), UTCDateTime())).where(
            Action.state == "pending", or_(Action.not_before.is_(None), Action.not_before <= now)
        )
    ).scalar()
    leases = [
        dict(row._mapping)
        for row in conn.execute(
            select(
                Action.lease_owner.label("owner"),
                func.count().label("actions"),
                func.min(Action.lease_expires_at).label("first_expiry"),
                func.max(Action.heartbeat_at).label("last_heartbeat"),
            )
            .where(Action.state == "running")
            .group_by(Action.lease_owner)
            .order_by(Action.lease_owner)
        )
    ]
    running = [
        dict(row._mapping)
        for row in conn.execute(
            select(
                Action.id,
                Action.kind,
                Action.target,
                Action.group_id,
                Action.attempts,
                Action.lease_owner,
                Action.started_at,
                Action.lease_expires_at,
            )
            .where(Action.state == "running")
            .order_by(Action.started_at)
        )
    ]
    return {
        "pending": counts.get("pending", 0),
        "oldest_pending_age_seconds": None if oldest is None else (now - oldest).total_seconds(),
        "backing_off": counts.get("backing_off", 0),
        "running": counts.get("running", 0),
        "failed": counts.get("failed", 0),
        "leases": leases,
        "running_actions": running,
    }


def lag(conn: Connection, now: datetime) -> dict[str, Any]:
    """How far the published mosaics are behind the array: the end of the newest
    observation, of the newest published window, the difference in seconds, and the age
    of the newest observation."""
    newest_data = conn.execute(select(func.max(Observation.end_time))).scalar()
    newest_published = conn.execute(
        select(func.max(MosaicGroup.window_end)).where(MosaicGroup.phase == Phase.PUBLISHED)
    ).scalar()
    behind = None
    if newest_data is not None:
        # Nothing published yet: behind by all the data there is.
        since = newest_published or conn.execute(select(func.min(Observation.start_time))).scalar()
        behind = max((newest_data - since).total_seconds(), 0.0)
    return {
        "newest_observation_end": newest_data,
        "newest_published_window_end": newest_published,
        "lag_seconds": behind,
        "newest_observation_age_seconds": (
            None if newest_data is None else (now - newest_data).total_seconds()
        ),
    }
