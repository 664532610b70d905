"""Command line: parse, call, print (a table for people, ``--json`` for programs).

Exit status: 0 success; 1 an action failed (``run --once``) or a waited-for mosaic was not
published (``request --wait``); 2 bad input or configuration; 3 ``request --wait`` timed
out.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import OperationalError

from reconciler.cli.arguments import build_parser
from reconciler.cli.commands import COMMANDS
from reconciler.config import load_settings, redact_url, scrub_password
from reconciler.errors import ReconcilerError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reconciler`` command."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        _configure_logging(
            args.log_level or settings.logging.level, args.log_format or settings.logging.format
        )
        return COMMANDS[args.command](args, settings)
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error of ours.
        sys.stderr.close()
        return 0
    except OperationalError as exc:
        raw_url = load_settings(args.config).database_url
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        reason = scrub_password(reason, raw_url)
        print(f"reconciler: cannot use database {redact_url(raw_url)}: {reason}", file=sys.stderr)
        return 2


def _configure_logging(level: str, form: str = "text") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )
    logging.Formatter.converter = time.gmtime
    if form == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ``time`` (UTC, ISO 8601), ``level``,
    ``logger``, ``message``, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)
