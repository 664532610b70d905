"""The background service: passes on the configured schedule (APScheduler) until a signal,
one pass at a time, with lasting conditions logged once."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from sqlalchemy.exc import DBAPIError

from reconciler.conditions import RepeatedCondition
from reconciler.config import Settings
from reconciler.db.migrate import require_head
from reconciler.errors import describe
from reconciler.metrics import ServiceMetrics
from reconciler.service import Reconciler

log = logging.getLogger("reconciler")


def serve(
    reconciler: Reconciler,
    *,
    install_signals: bool = True,
    metrics: ServiceMetrics | None = None,
) -> None:
    """Run passes on the configured schedule until SIGTERM/SIGINT; one pass at a time.

    Missed runs are coalesced into one, and a pass never overlaps the previous one. On a
    signal the current action's child is stopped and its claim released before exiting.
    Each pass's report is counted in ``metrics`` when given.
    """
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    settings = reconciler.settings
    stop = threading.Event()
    if settings.schedule.cron:
        trigger = CronTrigger.from_crontab(settings.schedule.cron, timezone=UTC)
    else:
        trigger = IntervalTrigger(seconds=settings.schedule.interval_seconds, timezone=UTC)

    trouble = RepeatedCondition(log)
    overrun = RepeatedCondition(log)
    skipped_runs = _SkippedRuns(overrun)
    logging.getLogger("apscheduler.scheduler").addFilter(skipped_runs)

    def one_pass() -> None:
        overrun.clear("the long pass ended; passes run on schedule again")
        try:
            report = reconciler.run_pass(stop)
        except Exception as exc:
            # The next pass tries again; a condition that persists is logged once.
            trouble.report(
                f"pass failed: {describe(exc)}", traceback=not isinstance(exc, DBAPIError)
            )
            return
        trouble.clear("passes run again")
        if metrics is not None:
            metrics.observe_pass(report)
        log.info(
            "pass: %d action(s), %d failed, %d queued, %d lease(s) reclaimed, %.1f s",
            len(report.actions),
            sum(a.failed for a in report.actions),
            report.enqueued,
            report.reclaimed,
            report.seconds,
        )

    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(settings.schedule.misfire_grace_seconds),
        },
    )
    scheduler.add_job(one_pass, trigger, id="reconcile", next_run_time=datetime.now(UTC))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing", signal.Signals(signum).name)
        stop.set()

    if install_signals:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    if not _wait_for_database(reconciler, stop, trouble):
        return
    log.info("service %s started (%s)", reconciler.owner, _schedule_text(settings))
    reconciler.watch_incoming()
    scheduler.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        scheduler.shutdown(wait=True)
        reconciler.stop_watching()
        logging.getLogger("apscheduler.scheduler").removeFilter(skipped_runs)
        log.info("service %s stopped", reconciler.owner)


#: Seconds between attempts to reach a database that is down when the service starts.
_DATABASE_RETRY_SECONDS = 5.0


def _wait_for_database(
    reconciler: Reconciler, stop: threading.Event, trouble: RepeatedCondition
) -> bool:
    """Wait until the database answers (saying so once); False if stopped meanwhile.

    Raises
    ------
    SchemaError
        When it answers with a schema other than this code's: waiting will not help.
    """
    while not stop.is_set():
        try:
            require_head(reconciler.engine)
        except DBAPIError as exc:
            trouble.report(f"waiting for the database: {describe(exc)}")
            stop.wait(_DATABASE_RETRY_SECONDS)
            continue
        trouble.clear("the database answers")
        return True
    return False


class _SkippedRuns(logging.Filter):
    """APScheduler warns at every interval that passes while a long pass runs; say it once."""

    def __init__(self, condition: RepeatedCondition) -> None:
        super().__init__()
        self._condition = condition

    def filter(self, record: logging.LogRecord) -> bool:
        if "maximum number of running instances reached" not in record.getMessage():
            return True
        self._condition.report(
            "a pass is still running: scheduled passes wait for it", level=logging.INFO
        )
        return False


def _schedule_text(settings: Settings) -> str:
    if settings.schedule.cron:
        return f"cron {settings.schedule.cron!r} UTC"
    return f"every {settings.schedule.interval_seconds:g} s"
