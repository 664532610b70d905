"""Processes that run science tools die with the process that started them.

The service runs each action in a child; a child may start tools of its own (tclean in a
CASA child, WSClean). Each asks Linux to kill it when its parent dies, even by SIGKILL, so a
killed service or child never leaves a tool running that writes into work/ beside the retry.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have this process SIGKILLed when its parent dies; exit now if it already has.

    ``parent_pid`` is the parent's pid as the parent saw it, to close the race where the
    parent dies before the request takes effect.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def dying_with_this_process() -> Callable[[], None]:
    """A ``preexec_fn`` for :mod:`subprocess`: the started tool dies with the caller."""
    parent = os.getpid()
    return lambda: die_with_parent(parent)
