"""Pure retry policy: attempts so far and the kind of failure in, a decision value out."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from reconciler.model import RetryPolicy


class FailureKind(enum.StrEnum):
    """How an attempt ended badly."""

    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    TIMEOUT = "timeout"
    LEASE_EXPIRED = "lease_expired"
    CRASHED = "crashed"


@dataclass(frozen=True)
class RetryLater:
    """Try again no sooner than ``delay_seconds`` from now."""

    delay_seconds: float
    reason: str


@dataclass(frozen=True)
class GiveUp:
    """Stop trying; the action becomes ``failed`` with ``reason``."""

    reason: str


def after_failure(
    policy: RetryPolicy,
    *,
    attempts: int,
    kind: FailureKind,
    message: str,
    jitter_draw: float,
    requested_delay: float | None = None,
) -> RetryLater | GiveUp:
    """Decide what follows a failed attempt.

    Parameters
    ----------
    policy
        The configured limits.
    attempts
        Attempts made so far, including the one that just failed (at least 1).
    kind
        How it failed; permanent failures are never retried.
    message
        The error text, carried into the decision's reason.
    jitter_draw
        A number in [0, 1) from the caller's random source (the core has none of its own),
        spreading retries of many actions over ``±jitter`` of the delay.
    requested_delay
        A delay the handler asked for; it replaces the exponential one (still capped).
    """
    if kind is FailureKind.PERMANENT:
        return GiveUp(f"permanent error: {message}")
    if attempts >= policy.max_attempts:
        return GiveUp(f"gave up after {attempts} attempts; last {kind}: {message}")
    if requested_delay is not None:
        delay = requested_delay
    else:
        # The exponent is bounded so a huge attempt count cannot overflow a float.
        delay = policy.base_delay_seconds * 2.0 ** min(max(attempts - 1, 0), 64)
    delay = min(delay, policy.max_delay_seconds)
    spread = 1.0 + policy.jitter * (2.0 * jitter_draw - 1.0)
    return RetryLater(delay_seconds=max(delay * spread, 0.0), reason=f"{kind}: {message}")


def decision_text(decision: RetryLater | GiveUp) -> str:
    """The decision as the tail of an event message: ``retry in N s`` or ``failed: why``."""
    if isinstance(decision, RetryLater):
        return f"retry in {decision.delay_seconds:.0f} s"
    return f"failed: {decision.reason}"
