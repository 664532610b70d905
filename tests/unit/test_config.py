"""Tests for reconciler.config: the settings file, the environment overrides, validation."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.config import (
    PathSettings,
    Settings,
    absolute_paths,
    as_dict,
    load_settings,
    redact_url,
)
from reconciler.decide import DecidePolicy
from reconciler.errors import ConfigError
from reconciler.retry import RetryPolicy

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "reconciler.toml"
PASSWORD = "s3cret"
SECRET_URL = f"postgresql://user:{PASSWORD}@db.example.org:5432/reconciler"


@pytest.fixture
def write_config(tmp_path):
    """Write a settings file under tmp_path and return its path."""

    def write(text: str, name: str = "reconciler.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """Run from a directory without config/reconciler.toml."""
    directory = tmp_path / "cwd"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def test_shipped_file_documents_exactly_the_built_in_defaults():
    settings = load_settings(SHIPPED, environ={})

    assert settings == replace(absolute_paths(Settings()), source=str(SHIPPED))


def test_without_any_file_the_built_in_defaults_apply(empty_cwd):
    settings = load_settings(environ={})

    assert settings == absolute_paths(Settings())
    assert settings.source == "built-in defaults"


def test_the_file_under_the_current_directory_is_found(empty_cwd):
    (empty_cwd / "config").mkdir()
    (empty_cwd / "config" / "reconciler.toml").write_text("[pass]\nmax_actions = 7\n")

    settings = load_settings(environ={})

    assert settings.passes.max_actions == 7
    assert settings.source == str(Path("config") / "reconciler.toml")


def test_explicit_path_wins_over_reconciler_config(write_config, empty_cwd):
    explicit = write_config("[pass]\nmax_actions = 7\n", "explicit.toml")
    from_env = write_config("[pass]\nmax_actions = 9\n", "from_env.toml")

    settings = load_settings(explicit, environ={"RECONCILER_CONFIG": str(from_env)})

    assert settings.passes.max_actions == 7
    assert settings.source == str(explicit)


def test_reconciler_config_names_the_file_when_no_path_is_given(write_config, empty_cwd):
    from_env = write_config("[pass]\nmax_actions = 9\n", "from_env.toml")

    settings = load_settings(environ={"RECONCILER_CONFIG": str(from_env)})

    assert settings.passes.max_actions == 9
    assert settings.source == str(from_env)


def test_a_partial_file_keeps_the_defaults_of_everything_else(write_config):
    settings = load_settings(write_config("[lease]\nseconds = 300\n"), environ={})

    assert settings.lease.seconds == 300.0
    assert isinstance(settings.lease.seconds, float)
    assert settings.lease.heartbeat_seconds == 20.0
    assert settings.retry == Settings().retry


@pytest.mark.parametrize(
    ("variable", "section", "key"),
    [
        ("RECONCILER_INCOMING", "paths", "incoming"),
        ("RECONCILER_WORK", "paths", "work"),
        ("RECONCILER_PRODUCTS", "paths", "products"),
    ],
)
def test_path_environment_variables_override_the_file(write_config, variable, section, key):
    path = write_config(f'[{section}]\n{key} = "from/file"\n')

    settings = load_settings(path, environ={variable: "/data/from-env"})

    assert getattr(getattr(settings, section), key) == Path("/data/from-env")


def test_database_url_environment_variable_overrides_the_file(write_config):
    path = write_config('[database]\nurl = "sqlite:////tmp/from-file.sqlite"\n')

    settings = load_settings(path, environ={"RECONCILER_DATABASE_URL": SECRET_URL})

    assert settings.database.url == SECRET_URL
    assert settings.database_url == SECRET_URL


def test_empty_environment_variables_are_ignored(write_config):
    path = write_config('[paths]\nwork = "from/file"\n')

    settings = load_settings(path, environ={"RECONCILER_WORK": "", "RECONCILER_DATABASE_URL": ""})

    assert settings.paths.work == Path("from/file").absolute()
    assert settings.database.url == ""


def test_environment_overrides_apply_without_a_file(empty_cwd):
    settings = load_settings(environ={"RECONCILER_PRODUCTS": "/srv/products"})

    assert settings.paths.products == Path("/srv/products")
    assert settings.source == "built-in defaults"


def test_database_url_defaults_to_sqlite_under_the_work_directory(empty_cwd):
    settings = load_settings(environ={"RECONCILER_WORK": "var/work"})

    expected = (empty_cwd / "var" / "work" / "reconciler.sqlite").resolve()
    assert settings.database_url == f"sqlite:///{expected}"


def test_policies_follow_the_settings(write_config):
    path = write_config(
        "[retry]\nmax_attempts = 7\nbase_delay_seconds = 10\nmax_delay_seconds = 600\n"
        "jitter = 0.1\n[windows]\narrival_grace_minutes = 15\nmin_observations = 2\n"
        "max_window_hours = 6\n"
    )

    settings = load_settings(path, environ={})

    assert settings.retry_policy == RetryPolicy(7, 10.0, 600.0, 0.1)
    assert settings.decide_policy == DecidePolicy(
        arrival_grace=timedelta(minutes=15),
        min_observations=2,
        max_window=timedelta(hours=6),
    )


def test_logging_level_is_case_insensitive(write_config):
    settings = load_settings(write_config('[logging]\nlevel = "debug"\n'), environ={})

    assert settings.logging.level == "debug"


def test_a_valid_cron_is_accepted(write_config):
    settings = load_settings(write_config('[schedule]\ncron = "*/5 * * * *"\n'), environ={})

    assert settings.schedule.cron == "*/5 * * * *"


def test_settings_are_frozen():
    settings = Settings()

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.source = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.passes.max_actions = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.paths = PathSettings()  # type: ignore[misc]


# --- bad values ---------------------------------------------------------------------------

POSITIVE_KEYS = [
    ("database", "busy_timeout_seconds"),
    ("schedule", "interval_seconds"),
    ("pass", "max_actions"),
    ("pass", "max_seconds"),
    ("pass", "workers"),
    ("pass", "claim_batch"),
    ("lease", "seconds"),
    ("retry", "max_attempts"),
    ("retry", "max_delay_seconds"),
    ("windows", "min_observations"),
    ("windows", "max_window_hours"),
    ("actions", "timeout_seconds"),
    ("calibration", "validity_hours"),
    ("calibration", "dec_strip_tolerance_deg"),
]

BAD_FILES = [
    pytest.param("[bogus]\nx = 1\n", "unknown section [bogus]", id="unknown-section"),
    pytest.param("[source]\nx = 1\n", "unknown section [source]", id="source-is-not-a-section"),
    pytest.param("workers = 2\n", "unknown section [workers]", id="top-level-key"),
    pytest.param("[retry]\nmax_attempt = 3\n", "unknown key retry.max_attempt", id="unknown-key"),
    pytest.param(
        "[pass]\nworkers = 1.5\n", "pass.workers must be int, got 1.5", id="float-for-int"
    ),
    pytest.param(
        "[pass]\nworkers = true\n", "pass.workers must be int, got True", id="bool-for-int"
    ),
    pytest.param(
        '[schedule]\ninterval_seconds = "60"\n',
        "schedule.interval_seconds must be float, got '60'",
        id="string-for-float",
    ),
    pytest.param(
        "[lease]\nseconds = true\n", "lease.seconds must be float, got True", id="bool-for-float"
    ),
    pytest.param("[paths]\nwork = 3\n", "paths.work must be Path, got 3", id="number-for-path"),
    pytest.param('[paths]\nwork = ""\n', "paths.work must be Path, got ''", id="empty-path"),
    pytest.param("[logging]\nlevel = 10\n", "logging.level must be str, got 10", id="int-for-str"),
    pytest.param(
        "[imaging]\nmax_smearing_loss = 0.5\n",
        "imaging.max_smearing_loss must be in [0, 0.5)",
        id="smearing-budget-too-large",
    ),
    pytest.param(
        "[imaging]\nmax_smearing_loss = -0.01\n",
        "imaging.max_smearing_loss must be in [0, 0.5)",
        id="negative-smearing-budget",
    ),
    pytest.param(
        "[lease]\nseconds = 20\nheartbeat_seconds = 20\n",
        "lease.heartbeat_seconds (20.0) must be shorter than lease.seconds (20.0)",
        id="heartbeat-equals-lease",
    ),
    pytest.param(
        "[lease]\nseconds = 10\n",
        "lease.heartbeat_seconds (20.0) must be shorter than lease.seconds (10.0)",
        id="heartbeat-longer-than-lease",
    ),
    pytest.param(
        "[lease]\nheartbeat_seconds = 0\n",
        "lease.heartbeat_seconds must be positive",
        id="heartbeat-zero",
    ),
    pytest.param(
        "[retry]\njitter = -0.1\n", "retry.jitter must be in [0, 1), got -0.1", id="jitter-below"
    ),
    pytest.param(
        "[retry]\njitter = 1.0\n", "retry.jitter must be in [0, 1), got 1.0", id="jitter-one"
    ),
    pytest.param('[schedule]\ncron = "61 * * * *"\n', "schedule.cron '61 * * * *'", id="bad-cron"),
    pytest.param('[schedule]\ncron = "every day"\n', "schedule.cron 'every day'", id="cron-words"),
    pytest.param(
        '[logging]\nlevel = "verbose"\n', "logging.level must be DEBUG", id="bad-logging-level"
    ),
    pytest.param(
        '[actions]\nregistry = "reconciler.steps.product_registry"\n',
        "actions.registry must look like 'package.module:function'",
        id="registry-without-colon",
    ),
    pytest.param(
        '[database]\nurl = "not a database url"\n',
        "database.url is not a database URL",
        id="bad-database-url",
    ),
    pytest.param(
        '[database]\nurl = "mysql://user@db/reconciler"\n',
        "database.url names 'mysql'; the reconciler runs on sqlite or postgresql",
        id="unsupported-database",
    ),
    *(
        pytest.param(f"[{section}]\n{key} = {value}\n", f"{section}.{key} must be positive", id=id_)
        for section, key in POSITIVE_KEYS
        for value, id_ in [(0, f"{section}.{key}-zero"), (-1, f"{section}.{key}-negative")]
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_values_raise_config_error_naming_the_file_and_key(write_config, text, message):
    path = write_config(text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})

    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_bad_toml_names_the_file(write_config):
    path = write_config("[pass\nmax_actions = 3\n")

    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_settings(path, environ={})

    assert str(caught.value).startswith(f"{path}: ")


def test_missing_explicit_file_is_an_error(tmp_path):
    missing = tmp_path / "nowhere.toml"

    with pytest.raises(
        ConfigError, match=re.escape(f"configuration file {missing} does not exist")
    ):
        load_settings(missing, environ={})


def test_missing_file_named_by_reconciler_config_is_an_error(tmp_path, empty_cwd):
    missing = tmp_path / "nowhere.toml"

    with pytest.raises(
        ConfigError, match=re.escape(f"configuration file {missing} does not exist")
    ):
        load_settings(environ={"RECONCILER_CONFIG": str(missing)})


def test_a_directory_is_not_a_configuration_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path, environ={})


def test_bad_environment_value_is_reported_under_its_key(empty_cwd):
    with pytest.raises(ConfigError, match=r"database\.url is not a database URL"):
        load_settings(environ={"RECONCILER_DATABASE_URL": "nonsense"})


# --- the database password never shows ----------------------------------------------------


def test_redact_url_masks_the_password():
    assert redact_url(SECRET_URL) == "postgresql://user:***@db.example.org:5432/reconciler"


def test_redact_url_leaves_a_url_without_password_alone():
    assert redact_url("sqlite:////var/work/reconciler.sqlite") == (
        "sqlite:////var/work/reconciler.sqlite"
    )


def test_as_dict_masks_the_password_and_renders_paths_as_text(write_config):
    path = write_config(f'[database]\nurl = "{SECRET_URL}"\n')

    data = as_dict(load_settings(path, environ={}))

    assert PASSWORD not in repr(data)
    assert data["database"]["url"] == "postgresql://user:***@db.example.org:5432/reconciler"
    assert data["paths"] == {
        "incoming": str(Path("var/incoming").absolute()),
        "work": str(Path("var/work").absolute()),
        "products": str(Path("var/products").absolute()),
    }
    assert data["passes"]["max_actions"] == 20
    assert data["source"] == str(path)


def test_as_dict_masks_a_password_given_by_the_environment(empty_cwd):
    data = as_dict(load_settings(environ={"RECONCILER_DATABASE_URL": SECRET_URL}))

    assert PASSWORD not in repr(data)


def test_as_dict_shows_the_default_sqlite_url(empty_cwd):
    settings = load_settings(environ={})

    assert as_dict(settings)["database"]["url"] == settings.database_url


@pytest.mark.parametrize(
    "url",
    [
        f"postgres ql://user:{PASSWORD}@host/db",
        f"://user:{PASSWORD}@host/db",
        f"postgresql//user:{PASSWORD}@host/db",
        f"user:{PASSWORD}@host/db",
    ],
)
def test_unparseable_url_errors_do_not_show_the_password(write_config, url):
    path = write_config(f'[database]\nurl = "{url}"\n')

    with pytest.raises(ConfigError, match=r"database\.url is not a database URL") as caught:
        load_settings(path, environ={})

    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in redact_url(url)


def test_other_config_errors_do_not_show_the_password(write_config):
    path = write_config(f'[database]\nurl = "{SECRET_URL}"\n[retry]\njitter = 2.0\n')

    with pytest.raises(ConfigError, match=r"retry\.jitter") as caught:
        load_settings(path, environ={})

    assert PASSWORD not in str(caught.value)


# --- known bugs (see the reasons) ---------------------------------------------------------


def test_nan_is_not_a_positive_value(write_config):
    path = write_config("[schedule]\ninterval_seconds = nan\n")

    with pytest.raises(ConfigError, match=r"schedule\.interval_seconds"):
        load_settings(path, environ={})


@pytest.mark.parametrize("value", ['"--5"', '"²"'])
def test_malformed_numeric_string_is_a_config_error(write_config, value):
    path = write_config(f"[pass]\nmax_actions = {value}\n")

    with pytest.raises(ConfigError, match=r"pass\.max_actions"):
        load_settings(path, environ={})


def test_url_with_a_bad_port_is_a_config_error(empty_cwd):
    url = f"postgresql://user:{PASSWORD}@host:abc/db"

    with pytest.raises(ConfigError, match=r"database\.url") as caught:
        load_settings(environ={"RECONCILER_DATABASE_URL": url})

    assert PASSWORD not in str(caught.value)


def test_redact_url_of_a_url_with_a_bad_port():
    redacted = redact_url(f"postgresql://user:{PASSWORD}@host:abc/db")

    assert PASSWORD not in redacted


def test_redact_url_hides_a_password_containing_an_at_sign():
    redacted = redact_url("postgresql://user:p@ssw0rd@host/db")

    assert "ssw0rd" not in redacted


def test_the_python_attribute_name_is_not_a_section(write_config):
    path = write_config("[passes]\nmax_actions = 5\n")

    with pytest.raises(ConfigError, match=r"unknown section \[passes\]"):
        load_settings(path, environ={})
