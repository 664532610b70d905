"""The command line against a real database: requests, status, events, plan, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli import main
from tests.world import add_observations, add_solution


def cli(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_request_status_events_and_plan(config, engine, capsys):
    keys = add_observations(engine, 3)
    add_solution(engine, keys[0])

    assert (
        cli(
            config,
            "request",
            "--start",
            "2025-03-01T00:00:00",
            "--end",
            "2025-03-01T00:15:30",
            "--json",
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["created"] is True
    assert (
        cli(
            config,
            "request",
            "--start",
            "2025-03-01 00:00:00Z",
            "--end",
            "2025-03-01T00:15:30+00:00",
        )
        == 0
    )
    assert f"already exists: {created['group_id']}" in capsys.readouterr().out

    assert cli(config, "plan", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    assert [a["target"] for a in plan["actions"]] == [f"obs:{k}" for k in keys]
    assert {a["what"] for a in plan["actions"]} == {"queue"}
    assert cli(config, "plan", "--json") == 0
    assert json.loads(capsys.readouterr().out)["actions"] == plan["actions"], "plan changes nothing"

    assert cli(config, "status", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["group_id"] == created["group_id"] and row["window_start"].startswith(
        "2025-03-01T00:00:00"
    )

    assert cli(config, "run", "--once") == 0
    capsys.readouterr()
    assert cli(config, "status") == 0
    table = capsys.readouterr().out
    imager, disk, header = table.splitlines()[:3]
    # The test actions record no imager: their tiles show as unknown.
    assert imager == "imaging backend: tclean (tiles made by: unknown 3)"
    # ... nor the size of what they publish.
    assert disk.startswith("disk: work/ ") and "products/ 1 published, 0 B (1 of unrecorded" in disk
    assert "published" in table and "group_id" in header

    assert cli(config, "disk", "--json") == 0
    usage = json.loads(capsys.readouterr().out)
    work = usage["work"]
    assert work["parts"]["logs"] > 0, "the action logs"
    assert work["bytes"] == sum(work["parts"].values()) and work["free_bytes"] > 0
    assert usage["products"]["published"] == 1 and usage["products"]["size_unknown"] == 1
    assert cli(config, "disk") == 0
    assert capsys.readouterr().out.startswith("work/ ")

    assert cli(config, "events", "--group", str(created["group_id"]), "--json") == 0
    kinds = [e["kind"] for e in json.loads(capsys.readouterr().out)]
    assert kinds[0] == "requested" and "action_done" in kinds and kinds[-1] == "phase"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["request", "--start", "2025-03-01T01:00", "--end", "2025-03-01T00:00"],
            "is not after its start",
        ),
        (["request", "--start", "2025-03-01", "--end", "2025-03-03"], "longer than 24 h"),
        (
            ["request", "--start", "yesterday", "--end", "2025-03-03"],
            "--start 'yesterday' is not an ISO time",
        ),
        (["pause", "999"], "no mosaic group with id 999"),
        (["retry", "999"], "no mosaic group with id 999"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(config, engine, capsys, args, message):
    assert cli(config, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_bad_setting_names_its_key_and_hides_the_password(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[pass]\nmax_actions = "many"\n')
    assert main(["--config", str(bad), "status"]) == 2
    assert "pass.max_actions must be int" in capsys.readouterr().err

    secret = tmp_path / "secret.toml"
    secret.write_text('[database]\nurl = "postgresql://someone:s3cr3t@127.0.0.1:1/nowhere"\n')
    assert main(["--config", str(secret), "status"]) == 2
    err = capsys.readouterr().err
    assert "s3cr3t" not in err and "cannot use database" in err and "***" in err


def test_every_command_has_help_with_an_example(capsys):
    from reconciler.cli import COMMANDS

    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert "example:" in capsys.readouterr().out, command


def test_no_piece_of_a_password_with_an_unescaped_at_reaches_the_error(tmp_path, capsys):
    # The driver splits "pa55@w0rd-tail" at the "@" and quotes the rest as a host name.
    config = tmp_path / "reconciler.toml"
    config.write_text('[database]\nurl = "postgresql://user:pa55@w0rd-tail@127.0.0.1:1/nowhere"\n')

    assert cli(config, "status") == 2

    error = capsys.readouterr().err
    assert error.startswith("reconciler: cannot use database postgresql://user:***@")
    assert "pa55" not in error and "w0rd-tail" not in error
