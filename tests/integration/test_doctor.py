"""``reconciler doctor`` on both backends: every check passes on a ready machine (CASA run
for real), and each problem it looks for is found, named, and given something to do."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from reconciler.cli import main
from reconciler.db.engine import make_engine, writing
from reconciler.db.models import Action, Event, RegistryEntry
from reconciler.doctor import run_checks
from tests.conftest import make_settings, write_config
from tests.world import add_calibrator, add_observations


def doctor(config: Path, capsys, *args: str) -> tuple[int, dict[str, dict]]:
    code = main(["--config", str(config), "doctor", "--json", *args])
    checks = json.loads(capsys.readouterr().out)
    return code, {check["name"]: check for check in checks}


def ready(tmp_path: Path, db_url: str) -> Path:
    """A configured machine: roots there, the calibrators loaded, a day of data."""
    for root in ("incoming", "work", "products"):
        (tmp_path / root).mkdir(exist_ok=True)
    engine = make_engine(db_url)
    add_calibrator(engine)
    add_observations(engine, 2)
    engine.dispose()
    return write_config(tmp_path, db_url, '[imaging]\nbackend = "tclean"\n')


def test_a_ready_machine_passes_every_check_with_casa_run_for_real(db_url, tmp_path, capsys):
    code, checks = doctor(ready(tmp_path, db_url), capsys)

    assert code == 0, [c for c in checks.values() if c["verdict"] == "fail"]
    expected = {"configuration", "database", "incoming", "work", "products", "CASA",
                "imaging backend", "calibrators", "clock", "leases", "services"}  # fmt: skip
    assert expected <= set(checks)
    assert all(c["verdict"] == "ok" for n, c in checks.items() if n != "services"), checks
    assert checks["CASA"]["detail"].startswith("CASA 6.")
    assert "1 dec strip(s) seen in the data, each served" in checks["calibrators"]["detail"]
    # Nothing runs the service here.
    assert checks["services"]["verdict"] == "warn"
    assert "reconciler run" in checks["services"]["fix"]


def test_problems_are_found_named_and_given_a_fix(db_url, tmp_path, capsys):
    config = ready(tmp_path, db_url)
    engine = make_engine(db_url)
    add_observations(engine, 1, start=datetime(2025, 6, 1, tzinfo=UTC), dec_deg=-75.0)
    now = datetime.now(UTC)
    with writing(engine) as conn:
        conn.execute(
            insert(Action).values(
                kind="image",
                target="obs:2025-03-01T00:00:00",
                priority=now,
                state="running",
                lease_owner="gone-host:4242:abcdef",
                lease_token="t",
                lease_expires_at=now - timedelta(minutes=5),
                heartbeat_at=now - timedelta(minutes=6),
            )
        )
        # 7 GB published in the last week: 1 GB a day.
        conn.execute(
            insert(RegistryEntry).values(
                kind="mosaic", stage_path="/staged.fits", status="published",
                published_at=now - timedelta(days=1), size_bytes=7_000_000_000,
            )
        )  # fmt: skip
        conn.execute(
            insert(Event).values(
                kind="pass", message="a pass", actor="dsa-host-2:1234:0a1b2c", at=now
            )
        )
    engine.dispose()
    products = tmp_path / "products"
    products.rmdir()
    products.write_text("a file where the products directory should be")
    config.write_text(config.read_text() + "[doctor]\nmin_free_gb = 1000000.0\n")

    code, checks = doctor(config, capsys, "--no-casa")

    assert code == 1
    assert "CASA" not in checks
    assert checks["products"]["verdict"] == "fail"
    assert str(products) in checks["products"]["detail"]
    assert checks["calibrators"]["verdict"] == "fail"
    assert "-75.00°" in checks["calibrators"]["detail"]
    assert "calibrators add" in checks["calibrators"]["fix"]
    assert checks["leases"]["verdict"] == "warn"
    assert "gone-host:4242:abcdef" in checks["leases"]["detail"]
    assert checks["work space"]["verdict"] == "warn"
    assert "doctor.min_free_gb" in checks["work space"]["fix"]
    assert "days at 1.00 GB/day" in checks["products space"]["detail"]
    assert checks["services"]["verdict"] == "ok"
    assert "1234 on dsa-host-2" in checks["services"]["detail"]


def test_an_unreachable_or_old_database_fails_with_what_to_do(empty_db_url, tmp_path, capsys):
    config = write_config(tmp_path, empty_db_url)

    code, checks = doctor(config, capsys, "--no-casa")

    assert code == 1
    assert checks["database"]["verdict"] == "fail"
    assert "reconciler init" in checks["database"]["fix"]
    # The checks that need the schema are not run against a database without it.
    assert "calibrators" not in checks and "leases" not in checks

    down = make_settings(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    (found,) = [c for c in run_checks(down, make_engine(down.database_url), casa=False)
                if c.name == "database"]  # fmt: skip
    assert found.verdict == "fail" and "not reachable" in found.detail


def test_a_missing_wsclean_fails_the_imaging_backend(db_url, tmp_path, capsys, monkeypatch):
    config = ready(tmp_path, db_url)
    config.write_text(config.read_text().replace('backend = "tclean"', 'backend = "wsclean"'))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))

    code, checks = doctor(config, capsys, "--no-casa")

    assert code == 1
    assert checks["imaging backend"]["verdict"] == "fail"
    assert "wsclean" in checks["imaging backend"]["fix"]
