"""A PostgreSQL cluster of one's own, in a directory, started and stopped at will.

Fault tests and the chaos benchmark stop and restart the database; they must never touch
the machine's shared cluster. ``initdb`` and ``pg_ctl`` from the installed PostgreSQL make
a cluster in a temporary directory, run as the ``postgres`` system user when the caller is
root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


@dataclass
class PrivatePostgres:
    """One cluster: its binaries, data directory and port (on 127.0.0.1)."""

    bin: Path
    data: Path
    port: int

    @classmethod
    def create(cls, bin_dir: Path, data: Path) -> PrivatePostgres:
        """``initdb`` a new cluster in ``data`` (created), on a free port; not started."""
        data.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
            # The postgres user must reach its data directory through the caller's ones.
            for parent in data.parents:
                if parent == Path("/") or parent.stat().st_mode & 0o001:
                    break
                parent.chmod(parent.stat().st_mode | 0o001)
        cluster = cls(bin_dir, data, _free_port())
        cluster.run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
        return cluster

    @property
    def url(self) -> str:
        """The ``postgres`` database of the cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str) -> None:
        """Run one of the cluster's tools as the user that owns it."""
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        command = [*prefix, str(self.bin / tool), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data / "server.log")
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: as an operator would; ``immediate``: as a crash)."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
