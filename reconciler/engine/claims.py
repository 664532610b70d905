"""One worker's claims: one action at a time, or a small batch when many short ones wait.

A claim costs a round trip or more; for an action of minutes that is nothing, for a no-op
it is most of the work. So a worker leases up to ``batch`` actions in one claim, under one
token, but only while

* the actions it performs are short (the last one took under
  :data:`SHORT_ACTION_SECONDS`): the rest of a batch waits for the one running, and a long
  one must not hold the earliest windows back;
* the queue is long (at least :data:`LONG_QUEUE_BATCHES` batches runnable, counted by the
  claim itself): a batch never takes work that another worker could start now.

The actions of a batch not started yet stay leased to this worker: the heartbeat of the
running one renews them all (they share its token), every write about one of them is fenced
by that token like any claim's, and :meth:`Claims.release` gives them back untouched when
the worker stops, or as soon as an action turns out long.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy import Engine

from reconciler.db import queries
from reconciler.db.engine import writing_one
from reconciler.model import ActionKind, ClaimedAction

#: Under this, an action is short: the queue's own cost is a fair part of it.
SHORT_ACTION_SECONDS = 1.0
#: A batch is leased only while at least this many batches' worth of actions are runnable.
LONG_QUEUE_BATCHES = 4


class Claims:
    """Leases actions for one worker and hands them out one at a time, earliest first.

    Not shared between threads: each worker thread has its own.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str,
        kinds: Iterable[ActionKind],
        lease_seconds: float,
        batch: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.kinds = tuple(kinds)
        self.lease_seconds = lease_seconds
        self.batch = max(batch, 1)
        self.clock = clock
        self._held: deque[ClaimedAction] = deque()
        #: Whether the last action performed was short; a worker starts one at a time.
        self._short = False

    @property
    def holding(self) -> bool:
        """True while actions of a batch wait here to be started."""
        return bool(self._held)

    def next(self) -> ClaimedAction | None:
        """The next action this worker holds, else a new claim; None when nothing is
        runnable. On PostgreSQL the claim is one statement and one round trip."""
        if self._held:
            return self._held.popleft()
        limit = self.batch if self._short else 1
        with writing_one(self.engine) as conn:
            claimed = queries.claim(
                conn,
                owner=self.owner,
                kinds=self.kinds,
                now=self.clock(),
                lease_seconds=self.lease_seconds,
                limit=limit,
                long_queue=LONG_QUEUE_BATCHES * limit,
            )
        if not claimed:
            return None
        self._held.extend(claimed[1:])
        return claimed[0]

    def performed(self, seconds: float) -> None:
        """Note how long the action just performed took; after a long one the rest of the
        batch goes back to the queue at once, and claims are single until actions are
        short again."""
        self._short = seconds < SHORT_ACTION_SECONDS
        if not self._short:
            self.release()

    def release(self) -> int:
        """Give back every held action not started (pending again, attempt not counted);
        returns how many were still held."""
        if not self._held:
            return 0
        held = list(self._held)
        self._held.clear()
        with writing_one(self.engine) as conn:
            return queries.release_unstarted(conn, held)
