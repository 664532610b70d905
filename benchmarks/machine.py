"""What a benchmark says about the machine it ran on, so figures of different days compare.

The machine is shared and its speed varies from day to day by a factor of several; a fixed
pure-Python loop timed beside the figures says how fast it was when they were taken.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

#: Iterations of the reference loop: about 0.1 s on an unloaded core of this machine class.
_REFERENCE_ITERATIONS = 2_000_000


def reference_loop_ms(repeats: int = 5) -> float:
    """Median milliseconds of a fixed pure-Python loop (lower is a faster machine)."""
    took = []
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(_REFERENCE_ITERATIONS):
            total += i
        took.append(time.perf_counter() - started)
    return round(1000 * statistics.median(took), 1)


def machine_facts() -> dict[str, Any]:
    """CPU count, Python version, load average and the reference loop, for the JSON line."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "reference_loop_ms": reference_loop_ms(),
    }
