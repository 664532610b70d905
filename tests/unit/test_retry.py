"""Tests for reconciler.retry: the pure decision after a failed attempt."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.retry import FailureKind, GiveUp, RetryLater, RetryPolicy, after_failure

#: No jitter, so delays are exact.
EXACT = RetryPolicy(max_attempts=10, base_delay_seconds=30.0, max_delay_seconds=3600.0, jitter=0.0)
#: A draw in the middle of [0, 1) leaves the delay unchanged whatever the jitter.
MIDDLE = 0.5
#: The largest float below 1: the top of the jitter draw's range.
TOP_DRAW = math.nextafter(1.0, 0.0)
RETRIED_KINDS = [k for k in FailureKind if k is not FailureKind.PERMANENT]


def fail(policy: RetryPolicy = EXACT, **overrides) -> RetryLater | GiveUp:
    arguments = {
        "attempts": 1,
        "kind": FailureKind.TEMPORARY,
        "message": "disk busy",
        "jitter_draw": MIDDLE,
    }
    arguments.update(overrides)
    return after_failure(policy, **arguments)


@pytest.mark.parametrize("attempts", [1, 3, 10, 50])
def test_permanent_failure_gives_up_at_once(attempts):
    decision = fail(attempts=attempts, kind=FailureKind.PERMANENT, message="no such calibrator")

    assert decision == GiveUp("permanent error: no such calibrator")


@pytest.mark.parametrize("kind", RETRIED_KINDS)
@pytest.mark.parametrize("attempts", [10, 11, 100])
def test_gives_up_after_max_attempts_with_the_count(kind, attempts):
    decision = fail(attempts=attempts, kind=kind, message="child exited 137")

    assert decision == GiveUp(f"gave up after {attempts} attempts; last {kind}: child exited 137")


@pytest.mark.parametrize("kind", RETRIED_KINDS)
def test_retries_while_attempts_are_below_max(kind):
    decision = fail(attempts=EXACT.max_attempts - 1, kind=kind, message="timed out")

    assert isinstance(decision, RetryLater)
    assert decision.reason == f"{kind}: timed out"


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, 30.0), (2, 60.0), (3, 120.0), (4, 240.0), (5, 480.0), (7, 1920.0)],
)
def test_delay_doubles_with_each_attempt(attempts, delay):
    assert fail(attempts=attempts) == RetryLater(delay, "temporary: disk busy")


@pytest.mark.parametrize("attempts", [8, 9])
def test_delay_is_capped(attempts):
    assert fail(attempts=attempts).delay_seconds == EXACT.max_delay_seconds


@pytest.mark.parametrize(
    ("draw", "factor"),
    [(0.0, 0.8), (MIDDLE, 1.0), (0.75, 1.1), (TOP_DRAW, 1.2)],
)
def test_jitter_spreads_the_delay_by_plus_or_minus_jitter(draw, factor):
    policy = RetryPolicy(max_attempts=5, base_delay_seconds=100.0, jitter=0.2)

    decision = fail(policy, attempts=2, jitter_draw=draw)

    assert decision.delay_seconds == pytest.approx(200.0 * factor)


def test_jitter_applies_after_the_cap():
    policy = RetryPolicy(max_attempts=20, base_delay_seconds=30.0, max_delay_seconds=60.0)

    low = fail(policy, attempts=10, jitter_draw=0.0)
    high = fail(policy, attempts=10, jitter_draw=TOP_DRAW)

    assert low.delay_seconds == pytest.approx(48.0)
    assert high.delay_seconds == pytest.approx(72.0)


@pytest.mark.parametrize(
    ("requested", "delay"),
    [(5.0, 5.0), (0.0, 0.0), (3600.0, 3600.0), (7200.0, 3600.0)],
)
def test_requested_delay_replaces_the_exponential_one_and_is_capped(requested, delay):
    decision = fail(attempts=4, requested_delay=requested)

    assert decision == RetryLater(delay, "temporary: disk busy")


def test_requested_delay_does_not_override_giving_up():
    assert isinstance(fail(attempts=10, requested_delay=1.0), GiveUp)
    permanent = fail(kind=FailureKind.PERMANENT, requested_delay=1.0)
    assert isinstance(permanent, GiveUp)


def test_zero_base_delay_retries_immediately():
    policy = RetryPolicy(max_attempts=3, base_delay_seconds=0.0, jitter=0.2)

    assert fail(policy, attempts=2, jitter_draw=0.0) == RetryLater(0.0, "temporary: disk busy")


@settings(max_examples=200, deadline=None)
@given(
    attempts=st.integers(min_value=1, max_value=60),
    base=st.floats(min_value=0.0, max_value=1e4),
    cap=st.floats(min_value=1e-3, max_value=1e6),
    jitter=st.floats(min_value=0.0, max_value=0.99),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    kind=st.sampled_from(RETRIED_KINDS),
)
def test_retry_delay_stays_within_the_jittered_cap(attempts, base, cap, jitter, draw, kind):
    policy = RetryPolicy(
        max_attempts=61, base_delay_seconds=base, max_delay_seconds=cap, jitter=jitter
    )

    decision = fail(policy, attempts=attempts, kind=kind, jitter_draw=draw)

    assert isinstance(decision, RetryLater)
    nominal = min(base * 2 ** (attempts - 1), cap)
    slack = 1e-9 * nominal  # rounding of the product, not a tolerance of the policy
    assert nominal * (1 - jitter) - slack <= decision.delay_seconds
    assert decision.delay_seconds <= nominal * (1 + jitter) + slack


def test_many_attempts_still_give_the_capped_delay():
    policy = RetryPolicy(max_attempts=5000, max_delay_seconds=3600.0, jitter=0.0)

    assert fail(policy, attempts=1500).delay_seconds == 3600.0
