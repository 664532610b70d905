"""The project's error hierarchy.

Every error the reconciler raises on purpose derives from :class:`ReconcilerError`. Action
handlers classify their failures as :class:`TemporaryError` (retry with backoff) or
:class:`PermanentError` (give up now and record the reason), in the spirit of kopf.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Root of every error the reconciler raises deliberately."""


class ConfigError(ReconcilerError):
    """A configuration value is missing or invalid; the message names the key."""


class RequestError(ReconcilerError):
    """A desired-mosaic request is malformed (bad times, window too long, unknown name)."""


class SchemaError(ReconcilerError):
    """The database is not at the schema head this code expects."""


class NotFoundError(ReconcilerError):
    """A named row (group, action, calibrator) does not exist."""


class ActionError(ReconcilerError):
    """An action failed; subclasses say whether trying again can help."""


class TemporaryError(ActionError):
    """A failure that may clear by itself (busy disk, lock, timeout): retry with backoff.

    ``delay_seconds`` lets a handler ask for a specific wait instead of the policy's.
    """

    def __init__(self, message: str, *, delay_seconds: float | None = None) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class PermanentError(ActionError):
    """A failure that will recur on every attempt (bad input, missing calibrator)."""


def describe(exc: BaseException) -> str:
    """``Type: first line`` of an unexpected exception, for a log line or a recorded error.

    Database errors carry the statement after the first line; the driver's own error
    (``orig``) is the part that says what happened.
    """
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else '(no message)'}"
