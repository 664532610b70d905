"""Command line: parse, call, print (a table for people, ``--json`` for programs).

Exit status: 0 success; 1 an action failed (``run --once``) or a waited-for mosaic was not
published (``request --wait``); 2 bad input or configuration; 3 ``request --wait`` timed
out.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from reconciler import groups, wanting
from reconciler.api import drive_until_settled
from reconciler.catalogue import Calibrator, load_calibrators
from reconciler.config import Settings, as_dict, load_settings, redact_url
from reconciler.db import calibrators
from reconciler.db.engine import make_engine, reading, writing
from reconciler.db.migrate import current_revision, head_revision, require_head, upgrade
from reconciler.errors import ReconcilerError, RequestError
from reconciler.observe import transit_finder
from reconciler.progress import SETTLED
from reconciler.service import Reconciler, serve
from reconciler.status import (
    STATUS_COLUMNS,
    event_rows,
    jsonable,
    plan_rows,
    render_table,
    status_rows,
)
from reconciler.steps import load_registry
from reconciler.wanting import DEFAULT_TIMESPAN_MINUTES

EXAMPLES = {
    "init": "reconciler init",
    "run": "reconciler run            # the service, on the configured schedule\n"
    "  reconciler run --once     # one pass, then exit (status 1 if an action failed)",
    "request": "reconciler request --start 2025-01-01T00:00:00 --end 2025-01-01T00:50:00\n"
    "  reconciler request --calibrator 0834+555 --timespan-minutes 50 --wait --timeout 7200\n"
    "  reconciler request --new-version 3     # re-mosaic a published group (late data)",
    "transits": "reconciler transits 0834+555 --start 2025-03-01 --end 2025-03-04 --json",
    "status": "reconciler status --json",
    "events": "reconciler events --group 3 --limit 20",
    "plan": "reconciler plan",
    "retry": "reconciler retry 3",
    "pause": "reconciler pause 3",
    "resume": "reconciler resume 3",
    "cancel": "reconciler cancel 3",
    "config": "reconciler config --json",
    "demo": "reconciler demo --dir var/demo",
    "simulate": "reconciler simulate --out var/incoming --start 2025-03-01T07:30:00 "
    "--minutes 60 --dec 55.57",
    "calibrators": "reconciler calibrators list\n"
    "  reconciler calibrators add 0834+555 --ra 128.72877 --dec 55.57252 --flux-jy 8.8\n"
    "  reconciler calibrators deactivate 0834+555",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="DSA-110 continuum mosaic reconciler: turns desired mosaics "
        "(rows of mosaic_groups) into published FITS mosaics.",
    )
    parser.add_argument(
        "--config", help="settings file (default: RECONCILER_CONFIG, then config/reconciler.toml)"
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=f"{help_text}\n\nexample:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    add("init", "create or migrate the database to the current schema (safe to repeat)")
    run = add("run", "run the reconcile service (APScheduler) until SIGTERM/SIGINT")
    run.add_argument("--once", action="store_true", help="run one pass and exit")
    run.add_argument("--workers", type=int, help="actions performed at once (default: config)")
    _add_request(
        add(
            "request",
            "ask for a mosaic: of a time window (UTC), centred on a calibrator transit, "
            "or a new version of a published one",
        )
    )
    transits = add("transits", "meridian transits (apparent hour angle 0) of a calibrator")
    transits.add_argument("name", help="a registered calibrator, e.g. 0834+555")
    transits.add_argument("--start", required=True, help="from, ISO 8601 (UTC if no zone)")
    transits.add_argument("--end", required=True, help="until, ISO 8601 (UTC if no zone)")
    transits.add_argument("--json", action="store_true", help="print JSON")
    status = add("status", "one line per mosaic group: phase, progress, next action, errors")
    status.add_argument("--active", action="store_true", help="hide published/cancelled groups")
    status.add_argument("--json", action="store_true", help="print JSON")
    events = add("events", "the event history, oldest first")
    events.add_argument("--group", type=int, help="only this group's events")
    events.add_argument("--limit", type=int, default=50, help="newest N events (default 50)")
    events.add_argument("--json", action="store_true", help="print JSON")
    plan = add("plan", "what the next pass would do and why; changes nothing")
    plan.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (
        ("retry", "give a failed group's actions a fresh set of attempts"),
        ("pause", "stop starting work for a group (queued work is cancelled)"),
        ("resume", "let a paused group continue"),
        ("cancel", "give up on a group for good"),
    ):
        add(name, text).add_argument("group", type=int, help="mosaic group id")
    config = add("config", "print the effective settings (password hidden)")
    config.add_argument("--json", action="store_true", help="print JSON")
    demo = add("demo", "simulate an hour around a 0834+555 transit and publish its mosaic")
    demo.add_argument("--dir", default="var/demo", help="where everything goes")
    _add_simulate(add("simulate", "write simulated DSA-110 raw UVH5 files with known sources"))
    _add_calibrators(add("calibrators", "list, register or deactivate bandpass calibrators"))
    return parser


def _add_request(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", help="window start, ISO 8601 (UTC if no zone)")
    parser.add_argument("--end", help="window end, ISO 8601 (UTC if no zone)")
    parser.add_argument(
        "--calibrator",
        metavar="NAME",
        help="centre the window on the earliest transit of NAME that has data",
    )
    parser.add_argument(
        "--timespan-minutes",
        type=float,
        default=DEFAULT_TIMESPAN_MINUTES,
        help=f"length of a calibrator-centred window (default {DEFAULT_TIMESPAN_MINUTES:g})",
    )
    parser.add_argument(
        "--new-version",
        type=int,
        metavar="GROUP",
        help="make a new version of published group GROUP (e.g. after late data)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="run the passes here until the mosaic is published; exit 0 published, "
        "1 not published (failed ...), 3 timed out",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def _add_simulate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for the raw files")
    parser.add_argument("--start", required=True, help="data start, ISO 8601 (UTC)")
    parser.add_argument("--minutes", type=float, required=True, help="length of sky to cover")
    parser.add_argument("--dec", type=float, required=True, help="pointing declination, deg")
    parser.add_argument("--subbands", type=int, default=4, help="subbands per observation")
    parser.add_argument("--antennas", type=int, default=10, help="number of antennas")
    parser.add_argument(
        "--array-scale",
        type=float,
        default=1.0,
        help="array size relative to DSA-110's 2.5 km x 1.5 km (smaller images faster)",
    )
    parser.add_argument(
        "--channels-per-subband", type=int, default=8, help="channels in each subband"
    )
    parser.add_argument(
        "--sources",
        help="TOML file of [[source]] tables (name, ra_deg, dec_deg, flux_jy, "
        "spectral_index); default: 0834+555 and two fainter field sources",
    )
    parser.add_argument("--noise-jy", type=float, default=0.05, help="noise per visibility")
    parser.add_argument("--seed", type=int, default=0, help="random seed (gains, noise)")


def _add_calibrators(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="the registered calibrators")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add = verbs.add_parser("add", help="register a calibrator, or update its figures")
    add.add_argument("name")
    add.add_argument("--ra", type=float, required=True, help="J2000 RA, degrees")
    add.add_argument("--dec", type=float, required=True, help="J2000 Dec, degrees")
    add.add_argument("--flux-jy", type=float, required=True, help="flux density at 20 cm")
    add.add_argument(
        "--dec-tolerance", type=float, default=1.5, help="dec strips it serves: ± degrees"
    )
    deactivate = verbs.add_parser("deactivate", help="never choose this calibrator again")
    deactivate.add_argument("name")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reconciler`` command."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        _configure_logging(args.log_level or settings.logging.level)
        return COMMANDS[args.command](args, settings)
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error of ours.
        sys.stderr.close()
        return 0
    except OperationalError as exc:
        url = redact_url(load_settings(args.config).database_url)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(f"reconciler: cannot use database {url}: {reason}", file=sys.stderr)
        return 2


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )
    logging.Formatter.converter = time.gmtime
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _engine(settings: Settings) -> Engine:
    return make_engine(
        settings.database_url, busy_timeout_seconds=settings.database.busy_timeout_seconds
    )


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
    require_head(engine)
    reconciler = Reconciler(engine, settings, load_registry(settings))
    if not args.once:
        serve(reconciler)
        return 0
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
        result, found = wanting.request_centred(
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
        generation = wanting.new_generation(engine, args.new_version)
        data = {"group_id": args.new_version, "created": False, "generation": generation}
    else:
        if args.start is None or args.end is None:
            raise RequestError("a window needs both --start and --end")
        start = groups.parse_time(args.start, what="--start")
        end = groups.parse_time(args.end, what="--end")
        result = groups.request_window(
            engine, start, end, max_window=settings.decide_policy.max_window
        )
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


def cmd_transits(args: argparse.Namespace, settings: Settings) -> int:
    start = groups.parse_time(args.start, what="--start")
    end = groups.parse_time(args.end, what="--end")
    if end <= start:
        raise RequestError("--end must be after --start")
    if end - start > timedelta(days=3660):
        raise RequestError("--start to --end spans more than ten years")
    engine = _engine(settings)
    require_head(engine)
    with reading(engine) as conn:
        calibrator = wanting.lookup_calibrator(conn, args.name)
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
    _print(rows, args.json, lambda: render_table(rows, STATUS_COLUMNS))
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


def _group_command(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    require_head(engine)
    group_id = args.group
    if args.command == "retry":
        snapshot = Reconciler(engine, settings, load_registry(settings)).snapshot([group_id])
        count = groups.retry(engine, snapshot, group_id)
        print(f"group {group_id}: {count} failed action(s) will be tried again")
    elif args.command in {"pause", "resume"}:
        count = groups.set_paused(engine, group_id, args.command == "pause")
        print(f"group {group_id} {args.command}d ({count} queued action(s) cancelled)")
    else:
        count = groups.cancel(engine, group_id)
        print(f"group {group_id} cancelled ({count} queued action(s) cancelled)")
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
        groups.parse_time(args.start, what="--start"),
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
    "transits": cmd_transits,
    "status": cmd_status,
    "events": cmd_events,
    "plan": cmd_plan,
    "retry": _group_command,
    "pause": _group_command,
    "resume": _group_command,
    "cancel": _group_command,
    "config": cmd_config,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "calibrators": cmd_calibrators,
}


if __name__ == "__main__":
    sys.exit(main())
