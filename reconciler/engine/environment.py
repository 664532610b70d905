"""Environment of the child processes that run science tools."""

from __future__ import annotations

from reconciler.config import Settings
from reconciler.io.logs import rotate

#: One thread per tool: the service's parallelism comes from its workers, not from the tools.
SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def casa_child_env(settings: Settings) -> dict[str, str]:
    """CASA offline (site config pointing at casacore's measures), logging under work/ to a
    log rotated at ``retention.log_max_mb``."""
    from reconciler.io.casa import casa_environment

    log_dir = settings.paths.work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    casa_log = log_dir / "casa.log"
    retention = settings.retention
    rotate(casa_log, max_bytes=int(retention.log_max_mb * 1e6), keep=retention.log_keep)
    return {**casa_environment(casa_log), **SINGLE_THREAD}


def plain_child_env(settings: Settings) -> dict[str, str]:
    """Tools other than CASA: one thread each."""
    return dict(SINGLE_THREAD)
