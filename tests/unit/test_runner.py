"""Scratch directories a dead service left behind are removed; nobody else's are."""

from __future__ import annotations

import os
import subprocess
import sys

from reconciler.engine.runner import process_place, remove_orphaned_scratch


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_the_scratch_of_dead_services_is_removed(tmp_path):
    orphan = tmp_path / f"reconciler-action-{dead_pid()}-k2j4"
    (orphan / "TempLattice").mkdir(parents=True)
    (orphan / "spec.json").write_text("{}")
    ours = tmp_path / f"reconciler-action-{os.getpid()}-a8d1"
    ours.mkdir()
    init = tmp_path / "reconciler-action-1-x1"  # pid 1 is always alive
    init.mkdir()
    unrelated = tmp_path / "reconciler-casa.log"
    unrelated.write_text("log")

    assert remove_orphaned_scratch(tmp_path) == [orphan]
    assert not orphan.exists()
    assert ours.is_dir() and init.is_dir() and unrelated.is_file()


def test_a_missing_temporary_directory_is_not_an_error(tmp_path):
    assert remove_orphaned_scratch(tmp_path / "absent") == []


def test_scratch_of_another_host_or_pid_namespace_is_left_alone(tmp_path):
    pid = dead_pid()
    ours = tmp_path / f"reconciler-action-{pid}@{process_place()}-k2j4"
    ours.mkdir()
    theirs = tmp_path / f"reconciler-action-{pid}@other-host.4026531836-x9z1"
    theirs.mkdir()

    assert remove_orphaned_scratch(tmp_path) == [ours]
    assert theirs.is_dir(), "a pid of another host says nothing about its process here"
