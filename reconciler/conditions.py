"""Conditions that last (a database outage, a long pass) are logged once, and their end once."""

from __future__ import annotations

import logging


class RepeatedCondition:
    """Logs a condition once while it lasts, and once when it ends: a database outage is
    one line, not one line per pass."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._current: str | None = None

    def report(self, message: str, *, traceback: bool = False, level: int = logging.ERROR) -> None:
        """Log ``message`` (at ``level``) unless it is what was logged last."""
        if message != self._current:
            self._current = message
            self._log.log(level, "%s", message, exc_info=traceback)

    def clear(self, message: str) -> None:
        """The condition ended: say so once."""
        if self._current is not None:
            self._current = None
            self._log.info("%s", message)
