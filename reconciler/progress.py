"""Following one group until it is published: progress lines for a terminal or a log."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from sqlalchemy import Engine, text

from reconciler.db.engine import reading

#: Phases after which waiting longer changes nothing without someone acting.
SETTLED = {"published", "failed", "invalid", "cancelled", "insufficient"}


@dataclass(frozen=True)
class Progress:
    """One reading of a group's row in ``mosaic_status``."""

    phase: str
    members: int
    converted: int
    calibrated: int
    imaged: int
    reason: str | None
    published_path: str | None

    def line(self, elapsed: float) -> str:
        """A one-line summary: phase, counts, and the elapsed time."""
        counts = (
            f"converted {self.converted}/{self.members}  calibrated {self.calibrated}/"
            f"{self.members}  imaged {self.imaged}/{self.members}"
        )
        return f"[{elapsed:5.0f} s] {self.phase:<11} {counts}"


def read_progress(engine: Engine, group_id: int) -> Progress | None:
    """The group's current progress, or None if there is no such group."""
    with reading(engine) as conn:
        row = conn.execute(
            text(
                "SELECT phase, members, converted, calibrated, imaged, reason, published_path "
                "FROM mosaic_status WHERE group_id = :g"
            ),
            {"g": group_id},
        ).first()
    return None if row is None else Progress(*row)


def follow(
    engine: Engine,
    group_id: int,
    *,
    timeout: float,
    keep_going: Callable[[], bool] = lambda: True,
    out: TextIO = sys.stderr,
    interval: float = 1.0,
) -> Progress:
    """Print progress until the group settles, ``timeout`` passes or ``keep_going`` fails.

    On a terminal the line is rewritten in place; otherwise a line is printed whenever it
    changes. Returns the last reading.
    """
    started = time.monotonic()
    interactive = out.isatty()
    last_line = ""
    while True:
        progress = read_progress(engine, group_id)
        if progress is None:
            raise LookupError(f"no mosaic group with id {group_id}")
        elapsed = time.monotonic() - started
        line = progress.line(elapsed)
        if interactive:
            out.write("\r" + line.ljust(len(last_line)))
            out.flush()
        elif line.split("]", 1)[1] != last_line.split("]", 1)[-1]:
            print(line, file=out, flush=True)
        last_line = line
        if progress.phase in SETTLED or elapsed >= timeout or not keep_going():
            if interactive:
                out.write("\n")
            return progress
        time.sleep(interval)
