"""Parent side of out-of-process execution: start the child, keep the lease, enforce limits.

The child is a fresh Python interpreter, so a crash, a hang or a memory blow-up in a science
tool never takes the service down. While it runs, the parent renews the lease every
``heartbeat_seconds``; if renewal fails (the lease was lost) or the service is asked to
stop, the child is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.retry import FailureKind


@dataclass(frozen=True)
class Succeeded:
    """The child returned a result."""

    result: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class Failed:
    """The child reported an error, crashed, or ran out of time."""

    kind: FailureKind
    message: str
    seconds: float
    delay_seconds: float | None = None


@dataclass(frozen=True)
class LeaseLost:
    """The lease could not be renewed; someone else may hold the action now."""

    seconds: float


@dataclass(frozen=True)
class Interrupted:
    """The service was asked to stop while the child ran."""

    seconds: float


Outcome = Succeeded | Failed | LeaseLost | Interrupted

_POLL_SECONDS = 0.5

#: How long a child may take to end after SIGTERM before it is killed.
KILL_GRACE_SECONDS = 10.0

#: A child's scratch directory: ``reconciler-action-<parent pid>-<random>`` in $TMPDIR.
_SCRATCH_PREFIX = "reconciler-action-"
#: ``<prefix><pid>@<where>-<random>``; names without ``@<where>`` are from older services
#: and taken as this place's.
_SCRATCH_NAME = re.compile(rf"^{_SCRATCH_PREFIX}(\d+)(?:@([^/]+))?-")


def process_place() -> str:
    """Where this process's pid means something: the host, and its PID namespace (services
    in separate namespaces, or on hosts sharing a $TMPDIR, must not judge each other's)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}.{namespace}"


@dataclass(frozen=True)
class ChildLimits:
    """How long a child may run and how often the lease is renewed while it does."""

    timeout_seconds: float
    heartbeat_seconds: float
    env: Mapping[str, str] = field(default_factory=dict)


def run_in_child(
    function: str,
    payload: dict[str, Any],
    limits: ChildLimits,
    *,
    renew_lease: Callable[[], bool],
    stop: threading.Event,
    log_path: Path | None = None,
) -> Outcome:
    """Run ``function(payload)`` in a child process and report how it ended.

    ``renew_lease`` is called every ``limits.heartbeat_seconds``; a False return kills the
    child (``LeaseLost``). Setting ``stop`` kills it too (``Interrupted``).
    """
    started = time.monotonic()
    scratch_prefix = f"{_SCRATCH_PREFIX}{os.getpid()}@{process_place()}-"
    with tempfile.TemporaryDirectory(prefix=scratch_prefix) as scratch:
        spec_path = Path(scratch) / "spec.json"
        outcome_path = Path(scratch) / "outcome.json"
        spec = {
            "function": function,
            "payload": payload,
            "outcome": str(outcome_path),
            "parent_pid": os.getpid(),
        }
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        env.update(limits.env)
        log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            # Its own process group: ending the action ends every tool it started.
            child = subprocess.Popen(
                [sys.executable, "-m", "reconciler.engine.child", str(spec_path)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=scratch,
                start_new_session=True,
            )
            try:
                ended = _supervise(child, limits, renew_lease, stop, started)
            except BaseException:
                # Never leave the child running on a scratch directory about to be removed.
                _kill(child)
                raise
            finally:
                # Whatever the child left behind in its group dies with it.
                _signal_group(child.pid, signal.SIGKILL)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        if ended is not None:
            return ended
        return _read_outcome(outcome_path, child.returncode, time.monotonic() - started, log_path)


def remove_orphaned_scratch(directory: Path | None = None) -> list[Path]:
    """Delete the scratch directories of services that died without cleaning up.

    A service killed with SIGKILL leaves its child's scratch directory (spec, outcome, and
    whatever the science tool put in its working directory) in ``directory`` (default
    $TMPDIR). Those whose parent process is gone are removed; a live process's, and those
    of another host or PID namespace (whose pids mean nothing here), are left alone.
    Returns the directories removed.
    """
    root = Path(directory or tempfile.gettempdir())
    here = process_place()
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = _SCRATCH_NAME.match(entry.name)
        if match is None or match.group(2) not in (None, here):
            continue
        if _process_exists(int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _supervise(
    child: subprocess.Popen[bytes],
    limits: ChildLimits,
    renew_lease: Callable[[], bool],
    stop: threading.Event,
    started: float,
) -> Outcome | None:
    """Wait for the child; return an outcome only when the parent had to end it."""
    next_beat = started + limits.heartbeat_seconds
    deadline = started + limits.timeout_seconds
    while True:
        now = time.monotonic()
        # Wake at least twice a second so a stop request is honoured promptly.
        wait = max(min(next_beat, deadline, now + _POLL_SECONDS) - now, 0.01)
        try:
            child.wait(timeout=wait)
            return None
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if stop.is_set():
            _kill(child)
            return Interrupted(now - started)
        if now >= deadline:
            _kill(child)
            message = f"no result after {limits.timeout_seconds:g} s; child process killed"
            return Failed(FailureKind.TIMEOUT, message, now - started)
        if now >= next_beat:
            if not renew_lease():
                _kill(child)
                return LeaseLost(now - started)
            next_beat = now + limits.heartbeat_seconds


def _kill(child: subprocess.Popen[bytes]) -> None:
    """End the child's whole process group: SIGTERM, so its clean-up runs, then SIGKILL
    after :data:`KILL_GRACE_SECONDS`."""
    _signal_group(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _signal_group(child.pid, signal.SIGKILL)
        child.wait()


def _signal_group(leader: int, signum: signal.Signals) -> None:
    # The group may be gone already.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signum)


def _read_outcome(
    path: Path, returncode: int | None, seconds: float, log_path: Path | None
) -> Outcome:
    try:
        outcome = json.loads(path.read_text())
    except (OSError, ValueError):
        message = f"child process exited with status {returncode} and left no outcome"
        if log_path is not None:
            message += f"; its output is in {log_path}: {_last_line(log_path)}"
        return Failed(FailureKind.CRASHED, message, seconds)
    if "ok" in outcome:
        return Succeeded(outcome["ok"], seconds)
    error = outcome["error"]
    return Failed(FailureKind(error["kind"]), error["message"], seconds, error.get("delay"))


def _last_line(path: Path) -> str:
    """The last non-blank line of a log, for error messages (the log may be large)."""
    try:
        with open(path, "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - 4096, 0))
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line]
    except OSError:
        return "(unreadable)"
    return lines[-1] if lines else "(empty)"
