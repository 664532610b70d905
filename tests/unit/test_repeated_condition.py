"""A condition that lasts (a database outage) is one log line, and one more when it ends."""

from __future__ import annotations

import logging

from reconciler.conditions import RepeatedCondition


def test_a_lasting_condition_is_logged_once_and_its_end_once(caplog):
    logger = logging.getLogger("test.repeated")
    condition = RepeatedCondition(logger)

    with caplog.at_level(logging.INFO, logger="test.repeated"):
        for _ in range(5):
            condition.report("pass failed: OperationalError: connection refused")
        condition.clear("passes run again")
        condition.clear("passes run again")
        condition.report("pass failed: OperationalError: connection refused")

    assert [r.getMessage() for r in caplog.records] == [
        "pass failed: OperationalError: connection refused",
        "passes run again",
        "pass failed: OperationalError: connection refused",
    ]


def test_a_different_condition_is_logged_at_once():
    logger = logging.getLogger("test.repeated.other")
    lines = []
    logger.addHandler(handler := logging.Handler())
    handler.emit = lambda record: lines.append(record.getMessage())
    condition = RepeatedCondition(logger)

    condition.report("pass failed: OperationalError: connection refused")
    condition.report("pass failed: OverflowError: date value out of range")

    assert lines == [
        "pass failed: OperationalError: connection refused",
        "pass failed: OverflowError: date value out of range",
    ]


def test_skipped_scheduled_runs_are_said_once_while_a_pass_lasts():
    from reconciler.daemon import _SkippedRuns

    lines = []
    logger = logging.getLogger("test.repeated.skipped")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler := logging.Handler())
    handler.emit = lambda record: lines.append((record.levelname, record.getMessage()))
    skipped = _SkippedRuns(RepeatedCondition(logger))
    warning = logging.LogRecord(
        "apscheduler.scheduler",
        logging.WARNING,
        __file__,
        1,
        'Execution of job "one_pass" skipped: maximum number of running instances reached (1)',
        None,
        None,
    )

    shown = [skipped.filter(warning) for _ in range(50)]

    assert shown == [False] * 50, "APScheduler's own line is never shown"
    # A long pass is no error: one line at INFO.
    assert lines == [("INFO", "a pass is still running: scheduled passes wait for it")]
