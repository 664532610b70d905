"""The sub-commands: each parses nothing itself, calls the library, and prints."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import tomllib
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from reconciler.api import drive_until_settled
from reconciler.catalogue import Calibrator, load_calibrators
from reconciler.config import Settings, as_dict, redact_url
from reconciler.coverage import (
    cone_search,
    cone_text,
    coverage_report,
    coverage_text,
    draw_coverage_map,
    rebuild_coverage,
)
from reconciler.daemon import serve
from reconciler.db import calibrators
from reconciler.db.cone import cone_sql
from reconciler.db.engine import engine_for, reading, writing
from reconciler.db.lightcurves import light_curves
from reconciler.db.migrate import current_revision, head_revision, require_head, upgrade
from reconciler.db.provenance import product_provenance
from reconciler.desired import commands
from reconciler.desired.centred import lookup_calibrator, request_centred
from reconciler.desired.explicit import parse_time, request_window
from reconciler.desired.late import new_generation
from reconciler.desired.reprocess import reprocess
from reconciler.engine.registry import load_registry
from reconciler.errors import ReconcilerError, RequestError
from reconciler.io.lightcurve_plot import write_light_curve_png
from reconciler.progress import SETTLED
from reconciler.service import Reconciler
from reconciler.sky import transit_finder
from reconciler.status import (
    STATUS_COLUMNS,
    disk_line,
    disk_report,
    disk_usage,
    event_rows,
    images_by_backend,
    jsonable,
    light_curve_report,
    plan_rows,
    provenance_report,
    quality_reports,
    quality_text,
    render_table,
    status_rows,
)


def _engine(settings: Settings) -> Engine:
    return engine_for(settings)


def _actor() -> str:
    """Who runs this command, as events and overrides record it: ``cli:<user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _print(data: Any, as_json: bool, table: Callable[[], str]) -> None:
    print(json.dumps(jsonable(data), indent=2) if as_json else table())


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    before = current_revision(engine)
    upgrade(engine)
    for path in (settings.paths.incoming, settings.paths.work, settings.paths.products):
        path.mkdir(parents=True, exist_ok=True)
    where = redact_url(settings.database_url)
    if before == head_revision():
        print(f"database {where} already at schema {before}")
    else:
        print(f"database {where} migrated from {before or 'empty'} to {head_revision()}")
    catalogue = load_calibrators(settings.calibration.catalogue)
    with writing(engine) as conn:
        added = calibrators.upsert_calibrators(conn, catalogue, overwrite=False)
    print(f"calibrators: {added} of {len(catalogue)} from {settings.calibration.catalogue} added")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers is not None:
        if args.workers < 1:
            raise ReconcilerError("--workers must be at least 1")
        settings = replace(settings, passes=replace(settings.passes, workers=args.workers))
    engine = _engine(settings)
    reconciler = Reconciler(engine, settings, load_registry(settings))
    if not args.once:
        metrics = None
        if args.metrics_port is not None:
            from reconciler.metrics import ServiceMetrics

            metrics = ServiceMetrics(engine)
            metrics.serve(args.metrics_port, args.metrics_host)
        serve(reconciler, metrics=metrics)  # waits for the database if it is down
        return 0
    require_head(engine)
    report = reconciler.run_pass()
    failed = [a for a in report.actions if a.failed]
    print(
        f"pass: {len(report.actions)} action(s), {len(failed)} failed, "
        f"{report.enqueued} queued, {report.reclaimed} lease(s) reclaimed, {report.seconds:.1f} s"
    )
    return 1 if failed else 0


def cmd_request(args: argparse.Namespace, settings: Settings) -> int:
    window = args.start is not None or args.end is not None
    forms = [window, args.calibrator is not None, args.new_version is not None]
    if sum(forms) != 1:
        raise RequestError(
            "give exactly one of --start and --end, --calibrator NAME, or --new-version GROUP"
        )
    engine = _engine(settings)
    require_head(engine)
    if args.calibrator is not None:
        result, found = request_centred(
            engine,
            settings,
            args.calibrator,
            args.timespan_minutes,
            transits=transit_finder(settings.site),
            now=datetime.now(UTC),
        )
        data: dict[str, Any] = {
            "group_id": result.group_id,
            "created": result.created,
            "calibrator": found.calibrator,
            "transit": found.transit,
            "window_start": found.start,
            "window_end": found.end,
            "dec_deg": found.dec_deg,
            "observations": len(found.window.members),
            "state": str(found.window.state),
        }
    elif args.new_version is not None:
        generation = new_generation(engine, args.new_version)
        data = {"group_id": args.new_version, "created": False, "generation": generation}
    else:
        if args.start is None or args.end is None:
            raise RequestError("a window needs both --start and --end")
        start = parse_time(args.start, what="--start")
        end = parse_time(args.end, what="--end")
        result = request_window(engine, start, end, max_window=settings.decide_policy.max_window)
        data = {"group_id": result.group_id, "created": result.created}
    if not args.wait:
        _print(data, args.json, lambda: _request_text(data))
        return 0
    if not args.json:
        print(_request_text(data), flush=True)
    reconciler = Reconciler(engine, settings, load_registry(settings))
    progress = drive_until_settled(
        reconciler, data["group_id"], timeout=args.timeout, out=sys.stderr
    )
    data |= {
        "phase": progress.phase,
        "reason": progress.reason,
        "published_path": progress.published_path if progress.phase == "published" else None,
    }
    if args.json:
        print(json.dumps(jsonable(data), indent=2))
    elif data["published_path"]:
        print(f"published {data['published_path']}")
    else:
        print(f"group {data['group_id']} is {progress.phase}: {progress.reason}")
    if data["published_path"]:
        return 0
    return 1 if progress.phase in SETTLED else 3


def _request_text(data: dict[str, Any]) -> str:
    if "generation" in data:
        return f"mosaic group {data['group_id']}: generation {data['generation']} requested"
    verb = "created" if data["created"] else "already exists:"
    text = f"mosaic group {verb} {data['group_id']}"
    if "transit" in data:
        text += (
            f" ({data['window_start']:%Y-%m-%d %H:%M:%S} – {data['window_end']:%Y-%m-%d %H:%M:%S}"
            f", centred on the transit of {data['calibrator']} at "
            f"{data['transit']:%Y-%m-%d %H:%M:%S}; {data['observations']} observation(s), "
            f"{data['state']})"
        )
    return text


def cmd_reprocess(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    done = reprocess(
        engine,
        settings,
        start=parse_time(args.start, what="--start"),
        end=parse_time(args.end, what="--end"),
        dec_deg=args.dec,
        reason=args.reason,
    )

    def text() -> str:
        lines = [
            f"reprocessing {done.id} (settings {done.fingerprint}): "
            f"{len(done.started)} new version(s), {len(done.skipped)} group(s) skipped"
        ]
        lines += [f"  group {group_id}: new version asked for" for group_id in done.started]
        lines += [f"  group {group_id}: skipped, {why}" for group_id, why in done.skipped.items()]
        if not done.started and not done.skipped:
            lines.append("  no mosaic group has its window in the span")
        return "\n".join(lines)

    _print(asdict(done), args.json, text)
    return 0


def cmd_transits(args: argparse.Namespace, settings: Settings) -> int:
    start = parse_time(args.start, what="--start")
    end = parse_time(args.end, what="--end")
    if end <= start:
        raise RequestError("--end must be after --start")
    if end - start > timedelta(days=3660):
        raise RequestError("--start to --end spans more than ten years")
    engine = _engine(settings)
    require_head(engine)
    with reading(engine) as conn:
        calibrator = lookup_calibrator(conn, args.name)
    moments = transit_finder(settings.site)(calibrator.ra_deg, calibrator.dec_deg, start, end)
    moments = [t for t in moments if t < end]
    data = {
        "calibrator": calibrator.name,
        "ra_deg": calibrator.ra_deg,
        "dec_deg": calibrator.dec_deg,
        "site": asdict(settings.site),
        "transits": moments,
    }

    def table() -> str:
        site = settings.site
        head = (
            f"meridian transits of {calibrator.name} (RA {calibrator.ra_deg:.5f}, Dec "
            f"{calibrator.dec_deg:.5f}) at lat {site.latitude_deg:g}, lon "
            f"{site.longitude_deg:g}, {site.height_m:g} m, UTC:"
        )
        return "\n".join([head, *(f"  {t.isoformat(timespec='milliseconds')}" for t in moments)])

    _print(data, args.json, table)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    with reading(engine) as conn:
        rows = status_rows(conn, include_final=not args.active)
        made = images_by_backend(conn)
        usage = None if args.json else disk_usage(conn, settings)

    def table() -> str:
        tiles = ", ".join(f"{backend} {count}" for backend, count in made.items()) or "none yet"
        imager = f"imaging backend: {settings.imaging.backend} (tiles made by: {tiles})"
        assert usage is not None
        return f"{imager}\n{disk_line(usage)}\n{render_table(rows, STATUS_COLUMNS)}"

    _print(rows, args.json, table)
    return 0


def cmd_disk(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    with reading(engine) as conn:
        usage = disk_usage(conn, settings)
    _print(usage, args.json, lambda: disk_report(usage))
    return 0


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    with reading(engine) as conn:
        rows = event_rows(conn, group_id=args.group, limit=args.limit)
    columns = ("id", "at", "kind", "group_id", "actor", "message")
    _print(rows, args.json, lambda: render_table(rows, columns, width=120))
    return 0


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    snapshot, plan = Reconciler(engine, settings, load_registry(settings)).plan()
    data = plan_rows(snapshot, plan)

    def table() -> str:
        group_table = render_table(data["groups"], ("group_id", "phase", "next_action", "reason"))
        action_table = render_table(
            data["actions"], ("priority", "kind", "target", "group_id", "what")
        )
        return f"groups:\n{group_table}\n\nactions, in the order they would run:\n{action_table}"

    _print(data, args.json, table)
    return 0


def cmd_provenance(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    wanted = args.product_or_group
    with reading(engine) as conn:
        if wanted.isdigit():
            products = product_provenance(conn, group_id=int(wanted))
        else:
            products = product_provenance(conn, product=wanted)
    if not products:
        raise RequestError(f"no product with provenance matches {wanted!r}")
    _print(products, args.json, lambda: provenance_report(products))
    return 0


def cmd_qa(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    with reading(engine) as conn:
        reports = quality_reports(conn, args.group)
    if not reports:
        raise RequestError(f"group {args.group} has no quality assessment (yet)")
    _print(reports, args.json, lambda: quality_text(reports))
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    print(commands.accept(engine, args.accept, reason=args.reason, actor=_actor()))
    return 0


def cmd_lightcurve(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    with reading(engine) as conn:
        curves = light_curves(conn, args.ra, args.dec, args.radius)
    if not curves:
        raise RequestError(f"no sky source within {args.radius:g}″ of {args.ra:g} {args.dec:+g}")
    if args.png is not None:
        write_light_curve_png(curves, args.png)
        print(f"light curve of {len(curves)} sky source(s) written to {args.png}")
        return 0
    _print(curves, args.json, lambda: light_curve_report(curves))
    return 0


def cmd_cone(args: argparse.Namespace, settings: Settings) -> int:
    if args.sql:
        print("\n\n".join(cone_sql(args.ra % 360.0, args.dec, args.radius)))
        return 0
    engine = _engine(settings)
    require_head(engine)
    found = cone_search(engine, args.ra, args.dec, args.radius)
    _print(found, args.json, lambda: cone_text(found))
    return 0


def cmd_coverage(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    rebuilt = rebuild_coverage(engine, settings) if args.rebuild else None
    report = coverage_report(engine, settings)
    if args.png:
        draw_coverage_map(settings, Path(args.png))
    if rebuilt is not None:
        report = {**report, "rebuilt": rebuilt}
    _print(report, args.json, lambda: coverage_text(report))
    return 0


def _group_command(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    group_id = args.group
    if args.command == "retry":
        snapshot = Reconciler(engine, settings, load_registry(settings)).snapshot([group_id])
        count = commands.retry(
            engine, snapshot, group_id, max_window=settings.decide_policy.max_window
        )
        print(f"group {group_id}: {count} failed action(s) will be tried again")
    elif args.command in {"pause", "resume"}:
        count = commands.set_paused(engine, group_id, args.command == "pause")
        print(f"group {group_id} {args.command}d ({count} queued action(s) cancelled)")
    else:
        count = commands.cancel(engine, group_id)
        print(f"group {group_id} cancelled ({count} queued action(s) cancelled)")
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.doctor import as_dicts, report_text, run_checks

    checks = run_checks(settings, _engine(settings), casa=not args.no_casa)
    _print(as_dicts(checks), args.json, lambda: report_text(checks))
    return 1 if any(check.verdict == "fail" for check in checks) else 0


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.web.serve import serve_web

    serve_web(settings, host=args.host, port=args.port, allow_remote=args.allow_remote)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.demo import run_demo

    return run_demo(Path(args.dir), settings)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from reconciler.io.simulator import PointSource, calibrator_field_sources, simulate_observations

    if args.sources:
        sources = tuple(PointSource(**entry) for entry in _read_sources(Path(args.sources)))
    else:
        sources = calibrator_field_sources()
    truth = simulate_observations(
        Path(args.out),
        parse_time(args.start, what="--start"),
        args.minutes,
        args.dec,
        sources=sources,
        n_subbands=args.subbands,
        n_antennas=args.antennas,
        array_scale=args.array_scale,
        channels_per_subband=args.channels_per_subband,
        noise_jy=args.noise_jy,
        seed=args.seed,
    )
    print(
        f"wrote {len(truth.files)} raw files ({len(truth.observation_starts)} observations) "
        f"to {args.out}; truth in {Path(args.out) / 'truth.json'}"
    )
    return 0


def _read_sources(path: Path) -> list[dict[str, Any]]:
    try:
        entries = tomllib.loads(path.read_text()).get("source", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RequestError(f"{path}: cannot read sources: {exc}") from exc
    required = {"name", "ra_deg", "dec_deg", "flux_jy"}
    for number, entry in enumerate(entries, start=1):
        missing = required - set(entry)
        if missing:
            raise RequestError(f"{path}: [[source]] {number} lacks {', '.join(sorted(missing))}")
    return entries


def cmd_calibrators(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    if args.verb == "list":
        with reading(engine) as conn:
            rows = [asdict(c) for c in calibrators.all_calibrators(conn)]
        columns = ("name", "ra_deg", "dec_deg", "flux_jy", "dec_tolerance_deg", "active")
        _print(rows, args.json, lambda: render_table(rows, columns))
        return 0
    with writing(engine) as conn:
        if args.verb == "add":
            entry = Calibrator(args.name, args.ra, args.dec, args.flux_jy, args.dec_tolerance)
            calibrators.upsert_calibrators(conn, [entry], overwrite=True)
            print(f"calibrator {args.name} registered")
        else:
            calibrators.set_active(conn, args.name, False)
            print(f"calibrator {args.name} deactivated")
    return 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    data = as_dict(settings)
    _print(data, args.json, lambda: json.dumps(jsonable(data), indent=2))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "init": cmd_init,
    "run": cmd_run,
    "request": cmd_request,
    "reprocess": cmd_reprocess,
    "transits": cmd_transits,
    "status": cmd_status,
    "disk": cmd_disk,
    "events": cmd_events,
    "plan": cmd_plan,
    "provenance": cmd_provenance,
    "qa": cmd_qa,
    "publish": cmd_publish,
    "lightcurve": cmd_lightcurve,
    "cone": cmd_cone,
    "coverage": cmd_coverage,
    "retry": _group_command,
    "pause": _group_command,
    "resume": _group_command,
    "cancel": _group_command,
    "config": cmd_config,
    "web": cmd_web,
    "doctor": cmd_doctor,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "calibrators": cmd_calibrators,
}
