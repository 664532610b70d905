"""The command line's arguments: one sub-command per thing a person does, with an example
each (shown by ``reconciler COMMAND --help``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reconciler.desired.centred import DEFAULT_TIMESPAN_MINUTES

EXAMPLES = {
    "init": "reconciler init",
    "run": "reconciler run            # the service, on the configured schedule\n"
    "  reconciler run --once     # one pass, then exit (status 1 if an action failed)\n"
    "  reconciler run --metrics-port 9110 --metrics-host 0.0.0.0   # Prometheus /metrics",
    "request": "reconciler request --start 2025-01-01T00:00:00 --end 2025-01-01T00:50:00\n"
    "  reconciler request --calibrator 0834+555 --timespan-minutes 50 --wait --timeout 7200\n"
    "  reconciler request --new-version 3     # re-mosaic a published group (late data)",
    "reprocess": "reconciler reprocess --start 2025-03-01 --end 2025-03-08 --dec 55.57 "
    '--reason "imaging.niter 2000 -> 5000"',
    "transits": "reconciler transits 0834+555 --start 2025-03-01 --end 2025-03-04 --json",
    "status": "reconciler status --json",
    "disk": "reconciler disk --json",
    "events": "reconciler events --group 3 --limit 20",
    "plan": "reconciler plan",
    "provenance": "reconciler provenance 3          # every version of group 3's mosaic\n"
    "  reconciler provenance dsa110_mosaic_20250301T000000_20250301T005000_dec+55.57.fits --json",
    "qa": "reconciler qa 3 --json",
    "publish": 'reconciler publish --accept 3 --reason "rms high from RFI; science use OK"',
    "lightcurve": "reconciler lightcurve 133.2 55.9 --radius 30\n"
    "  reconciler lightcurve 133.2 55.9 --png faint-1.png",
    "cone": "reconciler cone 128.729 55.573 0.5 --json\n"
    "  reconciler cone 128.729 55.573 0.5 --sql     # the same search as plain SQL",
    "coverage": "reconciler coverage --png coverage.png\n"
    "  reconciler coverage --rebuild     # footprints of mosaics published before they were kept",
    "retry": "reconciler retry 3",
    "pause": "reconciler pause 3",
    "resume": "reconciler resume 3",
    "cancel": "reconciler cancel 3",
    "config": "reconciler config --json",
    "doctor": "reconciler doctor          # exit status 1 when a check failed\n"
    "  reconciler doctor --json",
    "web": "reconciler web                  # http://127.0.0.1:8110/\n"
    "  reconciler web --host 0.0.0.0 --allow-remote --port 8110   # behind a reverse proxy",
    "demo": "reconciler demo --dir var/demo",
    "simulate": "reconciler simulate --out var/incoming --start 2025-03-01T07:30:00 "
    "--minutes 60 --dec 55.57",
    "calibrators": "reconciler calibrators list\n"
    "  reconciler calibrators add 0834+555 --ra 128.72877 --dec 55.57252 --flux-jy 8.8\n"
    "  reconciler calibrators deactivate 0834+555",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``reconciler`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="DSA-110 continuum mosaic reconciler: turns desired mosaics "
        "(rows of mosaic_groups) into published FITS mosaics.",
    )
    parser.add_argument(
        "--config", help="settings file (default: RECONCILER_CONFIG, then config/reconciler.toml)"
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="text (default: logging.format) or json: one JSON object per line",
    )
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
    run.add_argument(
        "--metrics-port", type=int, help="expose Prometheus metrics on this port (/metrics)"
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics are served on (default 127.0.0.1; 0.0.0.0 for all)",
    )
    _add_request(
        add(
            "request",
            "ask for a mosaic: of a time window (UTC), centred on a calibrator transit, "
            "or a new version of a published one",
        )
    )
    reprocess = add(
        "reprocess",
        "new versions of the published mosaics of a span, under the current settings, "
        "making again only the stages whose settings changed",
    )
    reprocess.add_argument("--start", required=True, help="span start, ISO 8601 (UTC if no zone)")
    reprocess.add_argument("--end", required=True, help="span end, ISO 8601 (UTC if no zone)")
    reprocess.add_argument(
        "--dec", type=float, help="only this dec strip (± calibration.dec_strip_tolerance_deg)"
    )
    reprocess.add_argument("--reason", help="why, kept with the request")
    reprocess.add_argument("--json", action="store_true", help="print JSON")
    transits = add("transits", "meridian transits (apparent hour angle 0) of a calibrator")
    transits.add_argument("name", help="a registered calibrator, e.g. 0834+555")
    transits.add_argument("--start", required=True, help="from, ISO 8601 (UTC if no zone)")
    transits.add_argument("--end", required=True, help="until, ISO 8601 (UTC if no zone)")
    transits.add_argument("--json", action="store_true", help="print JSON")
    status = add("status", "one line per mosaic group: phase, progress, next action, errors")
    status.add_argument("--active", action="store_true", help="hide published/cancelled groups")
    status.add_argument("--json", action="store_true", help="print JSON")
    disk = add("disk", "disk used under work/ (by part) and by published products, and free")
    disk.add_argument("--json", action="store_true", help="print JSON")
    events = add("events", "the event history, oldest first")
    events.add_argument("--group", type=int, help="only this group's events")
    events.add_argument("--limit", type=int, default=50, help="newest N events (default 50)")
    events.add_argument("--json", action="store_true", help="print JSON")
    plan = add("plan", "what the next pass would do and why; changes nothing")
    plan.add_argument("--json", action="store_true", help="print JSON")
    provenance = add(
        "provenance",
        "what made a published product: raw files and checksums, calibration, versions, settings",
    )
    provenance.add_argument(
        "product_or_group",
        metavar="PRODUCT_OR_GROUP",
        help="a mosaic group id, or a product's published path or file name",
    )
    provenance.add_argument("--json", action="store_true", help="print JSON")
    qa = add("qa", "the quality assessment of a group's mosaic: verdict, reasons, figures")
    qa.add_argument("group", type=int, help="mosaic group id")
    qa.add_argument("--json", action="store_true", help="print JSON")
    publish = add("publish", "publish a held mosaic (one that failed quality assessment)")
    publish.add_argument(
        "--accept", type=int, required=True, metavar="GROUP", help="the held group to publish"
    )
    publish.add_argument("--reason", help="why it is accepted (recorded with the override)")
    lightcurve = add(
        "lightcurve",
        "the light curve of the sky sources near a position: a flux per mosaic, detected "
        "or forced (an upper limit)",
    )
    lightcurve.add_argument("ra", type=float, metavar="RA", help="right ascension, ICRS degrees")
    lightcurve.add_argument("dec", type=float, metavar="DEC", help="declination, ICRS degrees")
    lightcurve.add_argument(
        "--radius",
        type=float,
        default=30.0,
        metavar="ARCSEC",
        help="sky sources within this many arcseconds (default 30)",
    )
    shown = lightcurve.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print JSON")
    shown.add_argument("--png", type=Path, metavar="FILE", help="plot it into FILE (PNG)")
    cone = add(
        "cone",
        "published mosaics whose footprint contains a position, and catalogue sources near it",
    )
    cone.add_argument("ra", type=float, metavar="RA", help="right ascension, deg (ICRS)")
    cone.add_argument("dec", type=float, metavar="DEC", help="declination, deg (ICRS)")
    cone.add_argument("radius", type=float, metavar="RADIUS_DEG", help="for sources, deg")
    cone.add_argument("--json", action="store_true", help="print JSON")
    cone.add_argument("--sql", action="store_true", help="print the search as plain SQL")
    coverage = add("coverage", "the sky covered by everything published (an IVOA MOC file)")
    coverage.add_argument("--png", metavar="FILE", help="also draw the coverage map into FILE")
    coverage.add_argument(
        "--rebuild",
        action="store_true",
        help="first record missing footprints and source cells, and rewrite the MOC file",
    )
    coverage.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (
        ("retry", "fresh attempts for a failed group's actions; wake a parked group"),
        ("pause", "stop starting work for a group (queued work is cancelled)"),
        ("resume", "let a paused group continue"),
        ("cancel", "give up on a group for good"),
    ):
        add(name, text).add_argument("group", type=int, help="mosaic group id")
    web = add("web", "serve the read-only web pages and JSON API over the database")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    web.add_argument("--port", type=int, default=8110, help="port (default 8110)")
    web.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding to an address other than localhost (the site has no "
        "authentication: put it behind a reverse proxy that has)",
    )
    doctor = add(
        "doctor",
        "check the configuration, database, roots and free space, CASA, the imager, "
        "calibrators, clock, leases and running services",
    )
    doctor.add_argument(
        "--no-casa", action="store_true", help="skip running CASA (the check takes seconds)"
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")
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
