"""Versions of the project and of the science tools installed beside it, for provenance.

Read from the installed distributions' metadata, never by importing the tools: importing
CASA in the service would start its logger and look for measures data.
"""

from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

#: The distribution of this project.
PROJECT = "dsa110-reconciler"
#: The distributions whose versions a product records, by what they are.
TOOLS = {"casa": "casatools", "pyuvdata": "pyuvdata", "casacore": "python-casacore"}
#: Source finders, in order of preference; the first installed one is recorded.
FINDERS = ("bdsf", "AegeanTools")
_GIT_TIMEOUT_SECONDS = 10.0


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@cache
def project_version() -> tuple[str, str | None]:
    """(package version, git commit) of the running project; the commit is None unless the
    package is imported from a git checkout, and ends in ``+dirty`` when tracked files
    differ from it. Read once per process."""
    version = installed_version(PROJECT) or "unknown"
    source = Path(__file__).resolve().parents[2]
    # An installed copy in site-packages may sit inside some other work tree (a virtual
    # environment in a checkout): only a checkout of the project itself names its commit.
    top = _git(source, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != source:
        return version, None
    commit = _git(source, "rev-parse", "HEAD")
    if commit is not None and _git(source, "status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return version, commit


def tool_versions() -> dict[str, str | None]:
    """Versions of CASA (``casatools``), pyuvdata and python-casacore, and the source finder
    installed (``finder``, ``finder_version``; both None when there is none)."""
    versions: dict[str, str | None] = {
        name: installed_version(distribution) for name, distribution in TOOLS.items()
    }
    versions["finder"] = versions["finder_version"] = None
    for finder in FINDERS:
        found = installed_version(finder)
        if found is not None:
            versions["finder"], versions["finder_version"] = finder, found
            break
    return versions


def _git(directory: Path, *arguments: str) -> str | None:
    """Output of ``git -C directory ARGUMENTS``, stripped; None if git is missing, fails,
    or ``directory`` is not in a work tree."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *arguments],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip()
