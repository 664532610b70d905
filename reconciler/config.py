"""One frozen :class:`Settings` object from ``config/reconciler.toml`` and the environment.

Lookup order for the file: an explicit ``--config FILE``, then ``RECONCILER_CONFIG``, then
``config/reconciler.toml`` under the current directory, then the built-in defaults (which
are the values that file documents). ``RECONCILER_DATABASE_URL``, ``RECONCILER_INCOMING``,
``RECONCILER_WORK`` and ``RECONCILER_PRODUCTS`` override the file. Relative paths are taken
from the current directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, get_type_hints

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from reconciler.errors import ConfigError
from reconciler.model import DecidePolicy, RetryPolicy, ScanPolicy, Site

DEFAULT_CONFIG = Path("config") / "reconciler.toml"
#: The configuration directory shipped with the code.
REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"

#: The databases the reconciler runs on (SQLAlchemy backend names).
SUPPORTED_DATABASES = ("sqlite", "postgresql")

ENV_OVERRIDES = {
    "RECONCILER_DATABASE_URL": ("database", "url"),
    "RECONCILER_INCOMING": ("paths", "incoming"),
    "RECONCILER_WORK": ("paths", "work"),
    "RECONCILER_PRODUCTS": ("paths", "products"),
}


@dataclass(frozen=True)
class DatabaseSettings:
    """``url`` empty means the embedded SQLite file ``<work>/reconciler.sqlite``."""

    url: str = ""
    busy_timeout_seconds: float = 30.0
    statement_timeout_seconds: float = 120.0


@dataclass(frozen=True)
class PathSettings:
    incoming: Path = Path("var/incoming")
    work: Path = Path("var/work")
    products: Path = Path("var/products")


@dataclass(frozen=True)
class ScheduleSettings:
    """A pass every ``interval_seconds``, or on ``cron`` (crontab syntax) when it is set."""

    interval_seconds: float = 60.0
    cron: str = ""
    misfire_grace_seconds: float = 300.0


@dataclass(frozen=True)
class DiscoverySettings:
    """How raw files become observations: an observation missing subbands waits
    ``grace_minutes`` after it was first seen, then proceeds with at least ``min_subbands``
    of the ``expected_subbands`` (or is marked incomplete with its reason)."""

    expected_subbands: int = 16
    min_subbands: int = 16
    grace_minutes: float = 10.0
    #: Directories whose contents changed within this many hours are looked at every pass.
    recent_hours: float = 24.0
    #: Every directory's mtime is looked at this often (a late file in an old directory).
    sweep_minutes: float = 10.0
    #: Every file is compared with its row this often (the safety net; also a service's
    #: first pass on a root no pass has resynchronised).
    resync_hours: float = 24.0
    #: Files written within this many minutes are stat'd every pass (they may be growing).
    settle_minutes: float = 30.0
    #: Use the kernel's file events (inotify) to look at touched directories at once.
    watch: bool = True

    @property
    def scan(self) -> ScanPolicy:
        """How much of the incoming tree a pass looks at, as discovery's policy value."""
        return ScanPolicy(
            recent=timedelta(hours=self.recent_hours),
            sweep=timedelta(minutes=self.sweep_minutes),
            resync=timedelta(hours=self.resync_hours),
            settle=timedelta(minutes=self.settle_minutes),
        )


@dataclass(frozen=True)
class PassSettings:
    """Caps on one pass so a backlog drains steadily instead of flooding."""

    max_actions: int = 20
    max_seconds: float = 900.0
    workers: int = 1
    claim_batch: int = 10
    #: A pass whose world did not change since a look found it settled skips observing it
    #: (:mod:`reconciler.settled`); a full look still comes at least this often, for what
    #: only files show (a product removed by hand). 0: every pass looks in full.
    resync_minutes: float = 10.0


@dataclass(frozen=True)
class LeaseSettings:
    seconds: float = 120.0
    heartbeat_seconds: float = 20.0


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    base_delay_seconds: float = 30.0
    max_delay_seconds: float = 3600.0
    jitter: float = 0.2


@dataclass(frozen=True)
class WindowSettings:
    arrival_grace_minutes: float = 30.0
    min_observations: int = 3
    max_window_hours: float = 24.0


@dataclass(frozen=True)
class CalibrationSettings:
    """Solutions serve ``validity_hours`` either side of their transit; observations within
    ``dec_strip_tolerance_deg`` of each other share a dec strip."""

    validity_hours: float = 24.0
    dec_strip_tolerance_deg: float = 1.0
    catalogue: Path = REPO_CONFIG / "calibrators.toml"


@dataclass(frozen=True)
class TilingSettings:
    """Default tiling (DESIGN §4): windows of ``size`` observations every ``stride``; a gap
    longer than ``max_gap_minutes`` (or a dec change) splits the tiling, and a run with no
    data for that long is closed. At most ``max_new_per_pass`` windows are created per pass,
    none while ``max_in_flight`` tiling windows are being worked on; published windows are
    checked for late data for ``late_lookback_hours`` after their end."""

    enabled: bool = True
    size: int = 10
    stride: int = 8
    max_gap_minutes: float = 15.0
    max_new_per_pass: int = 2
    max_in_flight: int = 10
    late_lookback_hours: float = 48.0


@dataclass(frozen=True)
class ImagingSettings:
    """Imaging of one calibrated observation into a FITS tile (``backend``: wsclean or
    tclean); the cell and image size follow from the data and ``field_of_view_deg``.
    Calibration averages channels as far as ``max_smearing_loss`` (the fraction of a point
    source's peak lost at the primary beam's half-power radius) allows."""

    backend: str = "wsclean"
    field_of_view_deg: float = 4.0
    niter: int = 2000
    threshold_jy: float = 0.01
    max_smearing_loss: float = 0.01


@dataclass(frozen=True)
class MosaicSettings:
    """The primary-beam-squared-weighted mosaic is blanked where the beam is below
    ``pb_cutoff``."""

    pb_cutoff: float = 0.2


@dataclass(frozen=True)
class CatalogueSettings:
    """The source finder (PyBDSF) on every mosaic: components grow from peaks above
    ``thresh_pix`` times the local rms into islands above ``thresh_isl`` times it. A
    component within ``association_radius_beams`` restoring-beam major axes of a known
    sky source is a detection of it (light curves)."""

    thresh_pix: float = 5.0
    thresh_isl: float = 3.0
    association_radius_beams: float = 1.0


@dataclass(frozen=True)
class QualitySettings:
    """Quality assessment of every mosaic before it is published (see README, "Quality
    assessment"). A mosaic with any ``*_fail`` limit crossed is held back, one with a
    ``*_warn`` limit crossed is published with a warning.

    The expected noise follows the radiometer equation with ``sefd_jy`` (system equivalent
    flux density of one antenna) and ``efficiency`` (correlator efficiency). Astrometry and
    flux scale are measured on the sources of ``reference_catalogue`` (CSV, FITS or VOTable
    with RA and Dec in degrees and the 1.4 GHz flux density in Jy) inside the footprint,
    matched within ``match_radius_beams`` restoring beams; their flux densities are scaled
    to the mosaic's frequency with ``reference_spectral_index``.
    """

    sefd_jy: float = 5800.0
    efficiency: float = 0.93
    reference_catalogue: Path = REPO_CONFIG / "reference_sources.csv"
    reference_spectral_index: float = -0.7
    match_radius_beams: float = 1.0
    noise_ratio_warn: float = 2.0
    noise_ratio_fail: float = 5.0
    astrometry_warn_beams: float = 0.2
    astrometry_fail_beams: float = 0.5
    flux_scale_warn: float = 0.1
    flux_scale_fail: float = 0.2
    flux_scatter_warn: float = 0.15
    flux_scatter_fail: float = 0.3
    #: A reference source this many times the local rms that is not found fails the mosaic.
    completeness_snr: float = 20.0
    dynamic_range_warn: float = 20.0
    blank_fraction_warn: float = 0.7
    blank_fraction_fail: float = 0.98
    #: The restoring beam's major axis against the diffraction limit (λ/longest baseline).
    beam_ratio_min: float = 0.5
    beam_ratio_max: float = 4.0


@dataclass(frozen=True)
class VerificationSettings:
    """Every published product's files are read and checked against their recorded SHA-256
    once per ``interval_hours`` (0: never), at most ``max_per_pass`` products per pass."""

    interval_hours: float = 24.0
    max_per_pass: int = 20


@dataclass(frozen=True)
class RetentionSettings:
    """What work/ gives back. An observation's intermediates (converted and calibrated MS,
    image tile) are removed ``keep_hours`` after every window holding it was settled
    (published, failed, insufficient, cancelled or invalid), at most ``max_per_pass`` of
    each kind a pass; ``intermediates = false`` keeps them. Action logs and the CASA log
    are rotated at ``log_max_mb`` (``log_keep`` old CASA logs kept), and action logs not
    written for ``log_days`` days are removed. Raw files and published products are never
    removed."""

    intermediates: bool = True
    keep_hours: float = 24.0
    max_per_pass: int = 100
    log_max_mb: float = 20.0
    log_keep: int = 3
    log_days: float = 30.0


@dataclass(frozen=True)
class ActionSettings:
    """``timeout_seconds`` bounds one child process running one action; ``registry`` names
    the ``"module:function"`` that returns the action handlers (the product's by default)."""

    timeout_seconds: float = 3600.0
    registry: str = "reconciler.steps:product_registry"


@dataclass(frozen=True)
class LoggingSettings:
    """``format``: ``text`` (one line for people) or ``json`` (one JSON object per line,
    for log shippers)."""

    level: str = "INFO"
    format: str = "text"


@dataclass(frozen=True)
class DoctorSettings:
    """``reconciler doctor`` warns when a root's filesystem has less than ``min_free_gb``
    free, and counts a service as seen when it wrote within ``service_seen_minutes``."""

    min_free_gb: float = 50.0
    service_seen_minutes: float = 10.0


@dataclass(frozen=True)
class Settings:
    """Every setting of the reconciler, read once and never changed."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    passes: PassSettings = field(default_factory=PassSettings)
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    windows: WindowSettings = field(default_factory=WindowSettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    tiling: TilingSettings = field(default_factory=TilingSettings)
    #: Where the array is (WGS84); transits are computed for this site. Default: DSA-110.
    site: Site = field(default_factory=Site)
    imaging: ImagingSettings = field(default_factory=ImagingSettings)
    mosaic: MosaicSettings = field(default_factory=MosaicSettings)
    catalogue: CatalogueSettings = field(default_factory=CatalogueSettings)
    qa: QualitySettings = field(default_factory=QualitySettings)
    verification: VerificationSettings = field(default_factory=VerificationSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    actions: ActionSettings = field(default_factory=ActionSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    doctor: DoctorSettings = field(default_factory=DoctorSettings)
    source: str = "built-in defaults"

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL, defaulting to the embedded SQLite file under the work dir."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.paths.work / 'reconciler.sqlite').resolve()}"

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry section as the pure core's policy value."""
        r = self.retry
        return RetryPolicy(r.max_attempts, r.base_delay_seconds, r.max_delay_seconds, r.jitter)

    @property
    def decide_policy(self) -> DecidePolicy:
        """The windows section as the pure core's policy value."""
        w = self.windows
        return DecidePolicy(
            arrival_grace=timedelta(minutes=w.arrival_grace_minutes),
            min_observations=w.min_observations,
            max_window=timedelta(hours=w.max_window_hours),
        )


#: TOML section name → Settings attribute ("pass" is a Python keyword).
_SECTIONS = {"pass": "passes"}


def load_settings(
    path: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the settings file and the environment overrides into one frozen object.

    Raises
    ------
    ConfigError
        For a missing file given explicitly, bad TOML, an unknown key, or a value of the
        wrong type or range; the message names the file and the key.
    """
    env = os.environ if environ is None else environ
    chosen = path or env.get("RECONCILER_CONFIG") or None
    if chosen is not None:
        file = Path(chosen)
        if not file.is_file():
            raise ConfigError(f"configuration file {file} does not exist")
    elif DEFAULT_CONFIG.is_file():
        file = DEFAULT_CONFIG
    else:
        file = None
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            raw.setdefault(section, {})[key] = env[var]
    label = str(file) if file is not None else "built-in defaults"
    settings = _build(raw, label)
    _validate(settings, label)
    return absolute_paths(settings)


def absolute_paths(settings: Settings) -> Settings:
    """The settings with every directory made absolute (from the current directory), so
    child processes, which run elsewhere, see the same places."""
    p = settings.paths
    paths = PathSettings(p.incoming.absolute(), p.work.absolute(), p.products.absolute())
    calibration = dataclasses.replace(
        settings.calibration, catalogue=settings.calibration.catalogue.absolute()
    )
    qa = dataclasses.replace(
        settings.qa, reference_catalogue=settings.qa.reference_catalogue.absolute()
    )
    return dataclasses.replace(settings, paths=paths, calibration=calibration, qa=qa)


def _build(raw: dict[str, Any], label: str) -> Settings:
    hints = get_type_hints(Settings)
    sections: dict[str, Any] = {}
    for name, table in raw.items():
        attr = _SECTIONS.get(name, name)
        # Only the TOML spelling names a section ("[pass]", not the attribute "passes").
        hidden = name in _SECTIONS.values() or name == "source"
        if hidden or attr not in hints or not isinstance(table, dict):
            raise ConfigError(f"{label}: unknown section [{name}]")
        sections[attr] = _build_section(hints[attr], table, name, label)
    return Settings(**sections, source=label)


def _build_section(cls: type, table: dict[str, Any], section: str, label: str) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(f"{label}: unknown key {section}.{key}")
        values[key] = _coerce(value, hints[key], f"{section}.{key}", label)
    return cls(**values)


def _coerce(value: Any, kind: type, key: str, label: str) -> Any:
    if kind is Path:
        if isinstance(value, str) and value:
            return Path(value)
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{label}: {key} must be {kind.__name__}, got {value!r}")


def _validate(s: Settings, label: str) -> None:
    positive = {
        "database.busy_timeout_seconds": s.database.busy_timeout_seconds,
        "database.statement_timeout_seconds": s.database.statement_timeout_seconds,
        "schedule.interval_seconds": s.schedule.interval_seconds,
        "discovery.expected_subbands": s.discovery.expected_subbands,
        "discovery.min_subbands": s.discovery.min_subbands,
        "discovery.recent_hours": s.discovery.recent_hours,
        "discovery.sweep_minutes": s.discovery.sweep_minutes,
        "discovery.resync_hours": s.discovery.resync_hours,
        "discovery.settle_minutes": s.discovery.settle_minutes,
        "pass.max_actions": s.passes.max_actions,
        "pass.max_seconds": s.passes.max_seconds,
        "pass.workers": s.passes.workers,
        "pass.claim_batch": s.passes.claim_batch,
        "lease.seconds": s.lease.seconds,
        "lease.heartbeat_seconds": s.lease.heartbeat_seconds,
        "retry.max_attempts": s.retry.max_attempts,
        "retry.max_delay_seconds": s.retry.max_delay_seconds,
        "windows.min_observations": s.windows.min_observations,
        "windows.max_window_hours": s.windows.max_window_hours,
        "actions.timeout_seconds": s.actions.timeout_seconds,
        "calibration.validity_hours": s.calibration.validity_hours,
        "imaging.field_of_view_deg": s.imaging.field_of_view_deg,
        "imaging.niter": s.imaging.niter,
        "calibration.dec_strip_tolerance_deg": s.calibration.dec_strip_tolerance_deg,
        "tiling.size": s.tiling.size,
        "tiling.stride": s.tiling.stride,
        "tiling.max_gap_minutes": s.tiling.max_gap_minutes,
        "tiling.max_new_per_pass": s.tiling.max_new_per_pass,
        "tiling.max_in_flight": s.tiling.max_in_flight,
        "tiling.late_lookback_hours": s.tiling.late_lookback_hours,
        "verification.max_per_pass": s.verification.max_per_pass,
        "retention.max_per_pass": s.retention.max_per_pass,
        "retention.log_max_mb": s.retention.log_max_mb,
        "retention.log_days": s.retention.log_days,
        "catalogue.thresh_pix": s.catalogue.thresh_pix,
        "catalogue.thresh_isl": s.catalogue.thresh_isl,
        **{
            f"qa.{f.name}": getattr(s.qa, f.name)
            for f in dataclasses.fields(s.qa)
            if f.name not in {"reference_catalogue", "reference_spectral_index"}
        },
        "catalogue.association_radius_beams": s.catalogue.association_radius_beams,
        "doctor.service_seen_minutes": s.doctor.service_seen_minutes,
    }
    for key, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{label}: {key} must be positive, got {value}")
    not_negative = {
        "retry.base_delay_seconds": s.retry.base_delay_seconds,
        "schedule.misfire_grace_seconds": s.schedule.misfire_grace_seconds,
        "windows.arrival_grace_minutes": s.windows.arrival_grace_minutes,
        "discovery.grace_minutes": s.discovery.grace_minutes,
        "imaging.threshold_jy": s.imaging.threshold_jy,
        "verification.interval_hours": s.verification.interval_hours,
        "retention.keep_hours": s.retention.keep_hours,
        "doctor.min_free_gb": s.doctor.min_free_gb,
        "retention.log_keep": s.retention.log_keep,
        "pass.resync_minutes": s.passes.resync_minutes,
    }
    for key, value in not_negative.items():
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{label}: {key} must be zero or more, got {value}")
    if s.discovery.min_subbands > s.discovery.expected_subbands:
        raise ConfigError(
            f"{label}: discovery.min_subbands ({s.discovery.min_subbands}) is more than "
            f"discovery.expected_subbands ({s.discovery.expected_subbands})"
        )
    if s.lease.heartbeat_seconds >= s.lease.seconds:
        raise ConfigError(
            f"{label}: lease.heartbeat_seconds ({s.lease.heartbeat_seconds}) must be shorter "
            f"than lease.seconds ({s.lease.seconds})"
        )
    if not 0 <= s.retry.jitter < 1:
        raise ConfigError(f"{label}: retry.jitter must be in [0, 1), got {s.retry.jitter}")
    if s.tiling.stride > s.tiling.size:
        raise ConfigError(
            f"{label}: tiling.stride ({s.tiling.stride}) is more than tiling.size "
            f"({s.tiling.size}): windows would leave observations out"
        )
    if s.windows.min_observations > s.tiling.size:
        raise ConfigError(
            f"{label}: windows.min_observations ({s.windows.min_observations}) is more than "
            f"tiling.size ({s.tiling.size})"
        )
    site = s.site
    if not (math.isfinite(site.latitude_deg) and -90 <= site.latitude_deg <= 90):
        raise ConfigError(f"{label}: site.latitude_deg must be in [-90, 90]")
    if not (math.isfinite(site.longitude_deg) and -180 <= site.longitude_deg <= 360):
        raise ConfigError(f"{label}: site.longitude_deg must be in [-180, 360]")
    if not (math.isfinite(site.height_m) and -500 <= site.height_m <= 10_000):
        raise ConfigError(f"{label}: site.height_m must be in [-500, 10000]")
    if s.imaging.backend not in {"tclean", "wsclean"}:
        raise ConfigError(f"{label}: imaging.backend must be tclean or wsclean")
    if not 0 <= s.imaging.max_smearing_loss < 0.5:
        raise ConfigError(f"{label}: imaging.max_smearing_loss must be in [0, 0.5)")
    if not 0 < s.mosaic.pb_cutoff < 1:
        raise ConfigError(f"{label}: mosaic.pb_cutoff must be between 0 and 1")
    if ":" not in s.actions.registry:
        raise ConfigError(f"{label}: actions.registry must look like 'package.module:function'")
    if s.logging.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"{label}: logging.level must be DEBUG, INFO, WARNING or ERROR")
    if s.logging.format not in {"text", "json"}:
        raise ConfigError(f"{label}: logging.format must be text or json")
    if s.schedule.cron:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(s.schedule.cron, timezone="UTC")
        except ValueError as exc:
            raise ConfigError(f"{label}: schedule.cron {s.schedule.cron!r}: {exc}") from exc
    if s.database.url:
        try:
            backend = make_url(s.database.url).get_backend_name()
        except (ArgumentError, ValueError) as exc:
            raise ConfigError(
                f"{label}: database.url is not a database URL ({redact_url(s.database.url)})"
            ) from exc
        if backend not in SUPPORTED_DATABASES:
            raise ConfigError(
                f"{label}: database.url names {backend!r}; the reconciler runs on "
                f"{' or '.join(SUPPORTED_DATABASES)}"
            )


def redact_url(url: str) -> str:
    """Render a database URL for logs and errors with any password masked.

    Parsed by hand rather than by SQLAlchemy: a password may hold ``@`` or ``/``, and the
    credentials end at the last ``@``, so nothing of the password can leak.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        # Not a URL at all: hide everything that could be credentials.
        return f"***@{url.rsplit('@', 1)[1]}" if "@" in url else url
    at = rest.rfind("@")
    if at < 0:
        return url
    user, colon, _password = rest[:at].partition(":")
    credentials = f"{user}:***" if colon else user
    return f"{scheme}://{credentials}@{rest[at + 1 :]}"


def scrub_password(text: str, url: str) -> str:
    """``text`` (a driver's error message, say) with every piece of the URL's password
    masked: a password holding an unescaped ``@`` is split by the driver, which may then
    quote the rest as a host name."""
    _, separator, rest = url.partition("://")
    at = rest.rfind("@")
    if not separator or at < 0:
        return text
    _, colon, password = rest[:at].partition(":")
    if not colon:
        return text
    for piece in sorted(set(re.split(r"[@:/]", password)), key=len, reverse=True):
        if len(piece) >= 3:
            text = text.replace(piece, "***")
    return text


def as_dict(settings: Settings) -> dict[str, Any]:
    """Settings as plain data (paths as strings, the URL redacted), for ``--json`` output."""
    data = dataclasses.asdict(settings)
    data["database"]["url"] = redact_url(settings.database_url)
    for section in data.values():
        if isinstance(section, dict):
            for key, value in section.items():
                if isinstance(value, Path):
                    section[key] = str(value)
    return data
