"""What installs the service: the systemd units (checked by ``systemd-analyze verify``,
with this checkout standing in for /opt/dsa110-reconciler), their environment file, the
logrotate snippet, and ``--log-format json`` for log shippers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import unavailable, write_config

REPO = Path(__file__).resolve().parents[2]
UNITS = ("reconciler.service", "reconciler-web.service")
INSTALLED = "/opt/dsa110-reconciler"
ENVIRONMENT = "/etc/reconciler/reconciler.env"


def _placed(tmp_path: Path, text: str) -> str:
    """A unit as installed from this checkout: its paths pointed at this checkout and a
    copy of the environment file."""
    return text.replace(INSTALLED, str(REPO)).replace(ENVIRONMENT, str(tmp_path / "env"))


def test_the_unit_files_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is not installed")
    shutil.copy(REPO / "config" / "systemd" / "reconciler.env", tmp_path / "env")
    for unit in UNITS:
        text = (REPO / "config" / "systemd" / unit).read_text()
        assert INSTALLED in text and ENVIRONMENT in text
        assert "Restart=on-failure" in text and "KillSignal=SIGTERM" in text
        (tmp_path / unit).write_text(_placed(tmp_path, text))

    verified = subprocess.run(
        [analyze, "verify", *UNITS], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == "", verified.stderr

    # The check can fail: a unit with a mistake in it does not verify.
    broken = (tmp_path / UNITS[0]).read_text().replace("Restart=on-failure", "Restart=sometimes")
    (tmp_path / "broken.service").write_text(broken)
    refused = subprocess.run(
        [analyze, "verify", "broken.service"], cwd=tmp_path, capture_output=True, text=True
    )
    assert "sometimes" in refused.stderr


def test_the_environment_file_names_settings_the_service_reads():
    from reconciler.config import ENV_OVERRIDES

    text = (REPO / "config" / "systemd" / "reconciler.env").read_text()
    # Assignments, and commented-out ones.
    names = set(re.findall(r"^#? ?(RECONCILER_[A-Z_]+)=", text, flags=re.MULTILINE))
    assert "RECONCILER_CONFIG" in names
    assert names - {"RECONCILER_CONFIG"} <= set(ENV_OVERRIDES)


def test_the_logrotate_snippet_parses(tmp_path):
    logrotate = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin")
    if logrotate is None:
        unavailable("logrotate is not installed (make setup installs it)")
    snippet = (REPO / "config" / "logrotate" / "reconciler").read_text()
    logs = tmp_path / "logs" / "actions"
    logs.mkdir(parents=True)
    (logs / "a.log").write_text("line\n")
    local = snippet.replace("/var/lib/reconciler/work/logs", str(tmp_path / "logs"))
    local = local.replace("su reconciler reconciler", "su root root")
    (tmp_path / "conf").write_text(local)
    checked = subprocess.run(
        [logrotate, "--debug", "--state", str(tmp_path / "state"), str(tmp_path / "conf")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    assert "error" not in checked.stderr.lower(), checked.stderr


def test_json_logs_are_one_object_per_line(tmp_path, db_url):
    config = write_config(tmp_path, db_url)
    # A service started and stopped (SIGTERM) logs its start, a pass and its stop.
    service = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "--config", str(config), "--log-format",
         "json", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert service.stderr is not None
    for line in service.stderr:
        lines.append(line)
        if "pass:" in line:
            break
    service.terminate()
    rest = service.communicate(timeout=60)[1]
    lines += rest.splitlines()

    entries = [json.loads(line) for line in lines if line.strip()]
    assert entries, "no log lines"
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    messages = [e["message"] for e in entries]
    assert any(m.startswith("service ") and m.endswith("started (every 60 s)") for m in messages)
    assert any(m.startswith("pass: ") for m in messages)
    assert any(m.startswith("service ") and m.endswith(" stopped") for m in messages)
    assert service.returncode == 0
