"""A worker's memory of a settled world, so an idle pass need not observe it again.

A full look (observe every active group, decide, write back) that writes nothing finds the
world settled: the database holds every action wanted and every status as decided. Another
look would find the same until one of three things happens:

- **the data change**: the change counter (:mod:`reconciler.db.changes`) moves with every
  write to what a pass observes, by any service, the CLI or plain SQL;
- **the clock turns**: a moment the look named comes (an arrival deadline, the end of a
  backoff or of an arriving observation's grace time);
- **the resync** is due (``pass.resync_minutes``): files are the one input no counter
  sees, so a product removed by hand is found by the first look after it.

Until then a pass skips the look, as a Kubernetes controller works from its informer's
cache and resyncs on a schedule. Level-triggered all the same: nothing is remembered but
that the last look found nothing to do, and any doubt means another full look.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime


class SettledWorld:
    """Whether the world is still as the last full look found it settled.

    ``resync_seconds`` 0 means every pass looks in full. ``monotonic`` measures the resync
    and the counter's age (injectable for tests). Thread-safe: the worker threads of a pass
    share one.
    """

    def __init__(
        self, resync_seconds: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.resync_seconds = resync_seconds
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._counter: int | None = None
        #: When (monotonic) this worker first read the counter at its present value.
        self._counter_read_at = 0.0
        self._settled = False
        #: The clock turns here (a moment the settled look named); None: it never does.
        self._turns_at: datetime | None = None
        self._resync_at = 0.0

    def holds(self, counter: int, now: datetime, *, read_at: float) -> bool:
        """True when a look now would find what the last one found; else a look is due.
        ``counter`` was read at ``read_at`` (monotonic)."""
        with self._lock:
            if counter != self._counter:
                self._counter, self._counter_read_at = counter, read_at
                self._settled = False
                return False
            return (
                self._settled
                and (self._turns_at is None or now < self._turns_at)
                and self.monotonic() < self._resync_at
            )

    def looked(
        self,
        counter: int,
        *,
        started: float,
        racy_seconds: float,
        wrote: bool,
        turns_at: datetime | None,
    ) -> None:
        """Record a full look that read ``counter`` when it ``started`` (monotonic).

        It settles the world only when it wrote nothing, and when it started at least
        ``racy_seconds`` after the counter last moved, so it saw every change counted.
        """
        with self._lock:
            self._settled = (
                self.resync_seconds > 0
                and not wrote
                and counter == self._counter
                and started >= self._counter_read_at + racy_seconds
            )
            self._turns_at = turns_at
            self._resync_at = started + self.resync_seconds
