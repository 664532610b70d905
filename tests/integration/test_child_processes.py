"""An action's child and every tool it starts end together, with the child's clean-up run
first: on time-out, on a lost lease, and when the service stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from reconciler.engine.runner import ChildLimits, Failed, Interrupted, LeaseLost, run_in_child
from reconciler.retry import FailureKind


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


def assert_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid), "the tool the child started ended with it"


@pytest.mark.parametrize("ending", ["timeout", "lease-lost", "stop"])
def test_the_whole_process_group_ends_and_the_child_cleans_up(tmp_path, ending):
    stop = threading.Event()
    started = time.monotonic()
    tool_pid = tmp_path / "tool.pid"

    def renew() -> bool:
        # The lease is lost, or the service asked to stop, once the tool is running.
        if tool_pid.exists() and time.monotonic() - started > 1.0:
            if ending == "lease-lost":
                return False
            if ending == "stop":
                stop.set()
        return True

    outcome = run_in_child(
        "tests.engine_children:spawn_and_hang",
        {"work": str(tmp_path)},
        ChildLimits(timeout_seconds=4.0 if ending == "timeout" else 120.0, heartbeat_seconds=0.3),
        renew_lease=renew,
        stop=stop,
    )

    expected = {"timeout": Failed, "lease-lost": LeaseLost, "stop": Interrupted}[ending]
    assert isinstance(outcome, expected)
    if ending == "timeout":
        assert outcome.kind is FailureKind.TIMEOUT
    assert (tmp_path / "cleaned-up").is_file(), "SIGTERM let the child's finally run"
    assert_gone(int(tool_pid.read_text()))


def test_an_error_while_supervising_stops_the_child_before_its_scratch_goes(tmp_path):
    def renew() -> bool:
        if (tmp_path / "tool.pid").exists():
            raise TimeoutError("QueuePool limit reached")
        return True

    with pytest.raises(TimeoutError):
        run_in_child(
            "tests.engine_children:spawn_and_hang",
            {"work": str(tmp_path)},
            ChildLimits(timeout_seconds=120.0, heartbeat_seconds=0.3),
            renew_lease=renew,
            stop=threading.Event(),
        )

    assert (tmp_path / "cleaned-up").is_file()
    assert_gone(int((tmp_path / "tool.pid").read_text()))


def test_a_worker_that_cannot_renew_stops_its_child_before_the_lease_can_run_out(tmp_path):
    from datetime import UTC, datetime

    from reconciler.config import Settings
    from reconciler.db.engine import make_engine
    from reconciler.engine.execute import Executor
    from reconciler.engine.registry import ActionRegistry
    from reconciler.engine.runner import KILL_GRACE_SECONDS
    from reconciler.model import ActionKey, ActionKind, ClaimedAction

    unreachable = make_engine("postgresql://reconciler@127.0.0.1:1/nowhere")
    settings = Settings()  # lease 120 s, heartbeat 20 s
    executor = Executor(
        unreachable,
        settings,
        ActionRegistry([]),
        owner="test",
        clock=lambda: datetime.now(UTC),
        jitter=lambda: 0.5,
    )
    claimed = ClaimedAction(
        1, ActionKey(ActionKind.IMAGE, "obs:x"), None, 1, "test", "token", datetime.now(UTC)
    )
    give_up = settings.lease.seconds - settings.lease.heartbeat_seconds - KILL_GRACE_SECONDS

    # A failed heartbeat is not a lost lease while the lease surely still holds ...
    assert executor._renew(claimed, [time.monotonic()]) is True
    # ... but past the margin the child is stopped, before anyone can reclaim the action.
    assert executor._renew(claimed, [time.monotonic() - give_up]) is False
    unreachable.dispose()
