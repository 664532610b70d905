"""SQLAlchemy 2 typed models: the schema of DESIGN §3, refined.

Desired state lives in ``mosaic_groups`` (window, origin, generation, paused, cancelled);
the columns under "status" are written only by the service, like a Kubernetes object's
status. Uniqueness is enforced by constraints, never by a Python ``if``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from reconciler.db.types import UTCDateTime, UTCInstant, utcnow, window_end_after_start

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Integer primary keys that are 64-bit on PostgreSQL and rowids on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: Phases after which a group is not re-examined by every pass.
FINAL_PHASES = ("published", "cancelled", "invalid")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RawFile(Base):
    """One UVH5 subband file found under the incoming directory."""

    __tablename__ = "raw_files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    #: The directory holding the file (``path`` without its name), so the files of one
    #: changed directory are read without the rest.
    directory: Mapped[str | None] = mapped_column(Text, index=True)
    observation_id: Mapped[int | None] = mapped_column(
        ForeignKey("observations.id", ondelete="SET NULL"), index=True
    )
    subband: Mapped[int | None] = mapped_column(Integer)
    name_time: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    data_start: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    data_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    n_channels: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    #: SHA-256 of the file as it was when conversion first read it (at this ``size_bytes``
    #: and ``mtime``; discovery clears it when either moves). None until then.
    sha256: Mapped[str | None] = mapped_column(String(64))
    #: Indexed: files written lately are looked at again every pass (they may be growing).
    mtime: Mapped[float] = mapped_column(Float, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    #: When discovery found the file gone (None: on disk when last looked at). A file that
    #: comes back is read again, whatever its size and mtime.
    vanished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IncomingDirectory(Base):
    """A directory under the incoming root as discovery last listed it.

    A directory whose mtime is unchanged has gained, lost and renamed no entry since, so
    its files need not be listed again. ``mtime`` is None until a listing can be trusted
    (the directory changed too close to the listing to tell a later change apart).
    ``changed_at`` is when its listing last changed: directories changed lately are looked
    at every pass, the rest on the slower sweep.
    """

    __tablename__ = "incoming_directories"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    mtime: Mapped[float | None] = mapped_column(Float)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class DiscoveryMark(Base):
    """When an incoming root was last swept (every directory's mtime looked at) and last
    resynchronised (every file looked at), shared by every service discovering it."""

    __tablename__ = "discovery_marks"

    root: Mapped[str] = mapped_column(Text, primary_key=True)
    swept_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resynced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Observation(Base):
    """One ~5-minute observation: the 16 subband files that share a data start time."""

    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(32), unique=True)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    end_time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    dec_deg: Mapped[float] = mapped_column(Float)
    n_subbands: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    ready: Mapped[bool] = mapped_column(Boolean, server_default=false())
    problem: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    #: When the verdict changes by itself (a grace period ends); None when only a change
    #: of its files can change it. Discovery judges again only these and what files touch.
    judge_again_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


#: Intermediates whose files are still there: retention looks only at these.
_PRESENT = "removed_at IS NULL"


def _present_index(table: str) -> Index:
    return Index(
        f"ix_{table}_present",
        "id",
        postgresql_where=text(_PRESENT),
        sqlite_where=text(_PRESENT),
    )


class MeasurementSet(Base):
    """The MS converted from one observation, indexed from the MS itself."""

    __tablename__ = "measurement_sets"
    __table_args__ = (_present_index("measurement_sets"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    observation_id: Mapped[int] = mapped_column(
        ForeignKey("observations.id", ondelete="CASCADE"), unique=True
    )
    path: Mapped[str] = mapped_column(Text, unique=True)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime)
    mid_time: Mapped[datetime] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime] = mapped_column(UTCDateTime)
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float)
    n_rows: Mapped[int] = mapped_column(BigInteger)
    n_channels: Mapped[int] = mapped_column(Integer)
    #: The settings fingerprint it was made under (:mod:`reconciler.fingerprint`); None:
    #: made before fingerprints were kept.
    fingerprint: Mapped[str | None] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    #: When retention removed its files (every window needing them was settled); None while
    #: they are there. Made again, it is there again.
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BandpassCalibrator(Base):
    """A bandpass calibrator usable for dec strips within ``dec_tolerance_deg``."""

    __tablename__ = "bandpass_calibrators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float, index=True)
    flux_jy: Mapped[float] = mapped_column(Float)
    dec_tolerance_deg: Mapped[float] = mapped_column(Float, server_default=text("1.5"))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())


class CalibrationSolution(Base):
    """Tables solved on one calibrator transit; never overwritten by a later one."""

    __tablename__ = "calibration_solutions"
    __table_args__ = (UniqueConstraint("calibrator_id", "observation_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    calibrator_id: Mapped[int] = mapped_column(ForeignKey("bandpass_calibrators.id"))
    observation_id: Mapped[int] = mapped_column(ForeignKey("observations.id"), index=True)
    dec_deg: Mapped[float] = mapped_column(Float, index=True)
    transit_time: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    tables: Mapped[str] = mapped_column(Text)
    snr: Mapped[float | None] = mapped_column(Float)
    flagged_fraction: Mapped[float | None] = mapped_column(Float)
    #: The settings fingerprint it was made under (:mod:`reconciler.fingerprint`); None:
    #: made before fingerprints were kept.
    fingerprint: Mapped[str | None] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())


class CalibratedMS(Base):
    """Which solution was applied to which observation, and where the result is."""

    __tablename__ = "calibrated_ms"
    __table_args__ = (_present_index("calibrated_ms"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    observation_id: Mapped[int] = mapped_column(
        ForeignKey("observations.id", ondelete="CASCADE"), unique=True
    )
    solution_id: Mapped[int | None] = mapped_column(ForeignKey("calibration_solutions.id"))
    path: Mapped[str] = mapped_column(Text, unique=True)
    #: The settings fingerprint it was made under (:mod:`reconciler.fingerprint`); None:
    #: made before fingerprints were kept.
    fingerprint: Mapped[str | None] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    #: When retention removed its files (every window needing them was settled); None while
    #: they are there. Made again, it is there again.
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Image(Base):
    """The image tile of one calibrated observation."""

    __tablename__ = "images"
    __table_args__ = (_present_index("images"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    observation_id: Mapped[int] = mapped_column(
        ForeignKey("observations.id", ondelete="CASCADE"), unique=True
    )
    path: Mapped[str] = mapped_column(Text, unique=True)
    pb_path: Mapped[str | None] = mapped_column(Text)
    beam_major_arcsec: Mapped[float | None] = mapped_column(Float)
    beam_minor_arcsec: Mapped[float | None] = mapped_column(Float)
    beam_pa_deg: Mapped[float | None] = mapped_column(Float)
    rms_jy: Mapped[float | None] = mapped_column(Float)
    #: The imager that made it: ``tclean`` or ``wsclean`` (``imaging.backend`` then).
    backend: Mapped[str | None] = mapped_column(String(16))
    #: The settings fingerprint it was made under (:mod:`reconciler.fingerprint`); None:
    #: made before fingerprints were kept.
    fingerprint: Mapped[str | None] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    #: When retention removed its files (every window needing them was settled); None while
    #: they are there. Made again, it is there again.
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


#: The phases after which no pass changes a group: the predicate of the partial index
#: ``ix_mosaic_groups_active``.
_FINAL_PHASES = "phase NOT IN ('published', 'cancelled', 'invalid')"

#: Active groups, written exactly as the index predicate (qualified) so PostgreSQL uses it.
ACTIVE_GROUPS = text(f"mosaic_groups.{_FINAL_PHASES}")

#: The groups a pass observes: active and not parked. A group is parked while it can make
#: no progress by itself (failed, insufficient) and woken by what may change that (a retry,
#: new or changed data in its window, a cancel). The predicate of the partial index
#: ``ix_mosaic_groups_observed``.
_OBSERVED = f"{_FINAL_PHASES} AND NOT parked"

#: Observed groups, written exactly as the index predicate (qualified).
OBSERVED_GROUPS = text(f"mosaic_groups.{_FINAL_PHASES} AND NOT mosaic_groups.parked")


class MosaicGroup(Base):
    """A desired mosaic. A plain ``INSERT`` naming only the window is a complete request."""

    __tablename__ = "mosaic_groups"
    __table_args__ = (
        UniqueConstraint("window_start", "window_end"),
        CheckConstraint(window_end_after_start(), name="window_order"),
        CheckConstraint("generation >= 1", name="generation_positive"),
        Index(
            "ix_mosaic_groups_active",
            "window_start",
            postgresql_where=text(_FINAL_PHASES),
            sqlite_where=text(_FINAL_PHASES),
        ),
        Index(
            "ix_mosaic_groups_observed",
            "window_start",
            postgresql_where=text(_OBSERVED),
            sqlite_where=text(_OBSERVED),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start: Mapped[datetime | None] = mapped_column(UTCInstant)
    window_end: Mapped[datetime | None] = mapped_column(UTCInstant)
    origin: Mapped[str] = mapped_column(String(16), server_default="manual")
    calibrator_name: Mapped[str | None] = mapped_column(String(64))
    timespan_minutes: Mapped[float | None] = mapped_column(Float)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    generation: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    paused: Mapped[bool] = mapped_column(Boolean, server_default=false())
    cancelled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    # status: written by the service only
    phase: Mapped[str] = mapped_column(String(16), server_default="new")
    status_reason: Mapped[str | None] = mapped_column(Text)
    next_action: Mapped[str | None] = mapped_column(Text)
    published_path: Mapped[str | None] = mapped_column(Text)
    status_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    parked: Mapped[bool] = mapped_column(Boolean, server_default=false())
    #: The ``reprocessings`` row that asked for the current generation (None: not a
    #: reprocessing). Its members' products made under other settings are made again. No
    #: foreign key: SQLite adds none to a table in place.
    reprocessing_id: Mapped[int | None] = mapped_column(Integer)


class Reprocessing(Base):
    """A request to make new versions of the published mosaics of a span (and dec strip)
    under the current settings: who asked, why, and what came of it."""

    __tablename__ = "reprocessings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    span_start: Mapped[datetime] = mapped_column(UTCDateTime)
    span_end: Mapped[datetime] = mapped_column(UTCDateTime)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    #: The published product's fingerprint under the settings of the request.
    fingerprint: Mapped[str] = mapped_column(String(12))
    #: How many groups got a new generation from it.
    groups: Mapped[int] = mapped_column(Integer)


class MosaicGroupMember(Base):
    """Group ↔ observation, in time order: the observations of the window on its dec strip.

    ``role`` is always ``member``. The observation a member was calibrated from is not a
    member: it is found through ``calibrated_ms.solution_id`` → ``calibration_solutions``.
    """

    __tablename__ = "mosaic_group_members"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("mosaic_groups.id", ondelete="CASCADE"), primary_key=True
    )
    observation_id: Mapped[int] = mapped_column(
        ForeignKey("observations.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16), server_default="member")


class Action(Base):
    """A claimable unit of work, leased to one worker at a time and fenced by its token."""

    __tablename__ = "actions"
    __table_args__ = (
        UniqueConstraint("kind", "target", "generation"),
        Index(
            "ix_actions_claimable",
            "priority",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index(
            "ix_actions_leased",
            "lease_expires_at",
            postgresql_where=text("state = 'running'"),
            sqlite_where=text("state = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(64), index=True)
    generation: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("mosaic_groups.id", ondelete="SET NULL"), index=True
    )
    priority: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


#: Published, with its staged copy in work/ not removed yet.
_STAGED_LEFT = "status = 'published' AND stage_removed_at IS NULL"


class RegistryEntry(Base):
    """A product: staged, then published under ``published_path`` (never overwritten)."""

    __tablename__ = "data_registry"
    __table_args__ = (
        UniqueConstraint("kind", "group_id", "generation"),
        # The published products whose staged copy is still to be removed: few at a time.
        Index(
            "ix_data_registry_staged",
            "id",
            postgresql_where=text(_STAGED_LEFT),
            sqlite_where=text(_STAGED_LEFT),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("mosaic_groups.id", ondelete="SET NULL"), index=True
    )
    generation: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    stage_path: Mapped[str] = mapped_column(Text)
    published_path: Mapped[str | None] = mapped_column(Text, unique=True)
    checksum: Mapped[str | None] = mapped_column(String(64))
    #: The published companion files (weight map, preview) and their SHA-256, as JSON.
    companions: Mapped[str | None] = mapped_column(Text)
    #: Bytes of the published files (the mosaic and its companions).
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="staging")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the published files were last found to hold their checksums (or not).
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    #: What is wrong with the published files, as last verified (NULL: nothing).
    problem: Mapped[str | None] = mapped_column(Text)
    #: When the staged copy under work/ was removed, once published.
    stage_removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The settings fingerprint of the product (:func:`reconciler.fingerprint.
    #: product_fingerprint`); None: made in part under other or unknown settings.
    fingerprint: Mapped[str | None] = mapped_column(String(12))
    #: The id of the later version of the same window that replaced it as current, and when
    #: that was published; this one stays published and on disk.
    superseded_by: Mapped[int | None] = mapped_column(BigId)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SourceCatalogue(Base):
    """The source finder's catalogue and rms map of one group generation's mosaic, staged
    beside it (published with it, as companions)."""

    __tablename__ = "catalogues"
    __table_args__ = (UniqueConstraint("group_id", "generation"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("mosaic_groups.id", ondelete="SET NULL"), index=True
    )
    generation: Mapped[int] = mapped_column(Integer)
    #: The staged FITS binary table of the components.
    path: Mapped[str] = mapped_column(Text)
    #: The staged background rms map.
    rms_path: Mapped[str] = mapped_column(Text)
    finder: Mapped[str] = mapped_column(String(32))
    finder_version: Mapped[str] = mapped_column(String(32))
    n_components: Mapped[int] = mapped_column(Integer)
    median_rms_jy: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())


class Source(Base):
    """One component of a catalogue: a fitted Gaussian (positions in degrees, errors and
    sizes in arcseconds, flux densities in Jy; peak in Jy/beam)."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    catalogue_id: Mapped[int] = mapped_column(
        ForeignKey("catalogues.id", ondelete="CASCADE"), index=True
    )
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float, index=True)
    ra_err_arcsec: Mapped[float] = mapped_column(Float)
    dec_err_arcsec: Mapped[float] = mapped_column(Float)
    peak_jy: Mapped[float] = mapped_column(Float)
    peak_err_jy: Mapped[float] = mapped_column(Float)
    flux_jy: Mapped[float] = mapped_column(Float)
    flux_err_jy: Mapped[float] = mapped_column(Float)
    major_arcsec: Mapped[float] = mapped_column(Float)
    minor_arcsec: Mapped[float] = mapped_column(Float)
    pa_deg: Mapped[float] = mapped_column(Float)
    deconvolved_major_arcsec: Mapped[float] = mapped_column(Float)
    deconvolved_minor_arcsec: Mapped[float] = mapped_column(Float)
    local_rms_jy: Mapped[float] = mapped_column(Float)
    #: HEALPix cell of the position (nested, order ``skycells.SOURCE_ORDER``); None for a
    #: row recorded before cells were kept, until ``reconciler coverage --rebuild``.
    cell: Mapped[int | None] = mapped_column(BigInteger, index=True)


class QualityReport(Base):
    """The quality assessment of one group generation's mosaic, made before it is
    published: the verdict (``passed``, ``warning`` or ``failed``), every reason for it,
    the measured figures (JSON) and the QA figure staged beside the mosaic. A failed mosaic
    is held back until someone accepts it (``accepted_*``, the override recorded)."""

    __tablename__ = "quality_reports"
    __table_args__ = (UniqueConstraint("group_id", "generation"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("mosaic_groups.id", ondelete="SET NULL"), index=True
    )
    generation: Mapped[int] = mapped_column(Integer)
    quality: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    #: The measured figures, as JSON (see :class:`reconciler.quality.QualityFigures`).
    figures: Mapped[str] = mapped_column(Text)
    #: The staged QA figure (PNG).
    figure_path: Mapped[str] = mapped_column(Text)
    assessed_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by: Mapped[str | None] = mapped_column(String(64))
    accept_reason: Mapped[str | None] = mapped_column(Text)


class SkySource(Base):
    """A source on the sky, as associated across mosaics: every component found within the
    association radius of it is a detection of it. Its position is that of its first
    detection and never moves, so forced photometry and association stay where they were."""

    __tablename__ = "sky_sources"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())


class SkySourceMeasurement(Base):
    """A sky source's flux density on one catalogued mosaic: its component's peak when
    detected (``source_id``), else forced photometry at its position (``forced``: the
    beam-weighted flux there, with the local rms as its error). Peak brightness, Jy/beam."""

    __tablename__ = "sky_source_measurements"
    __table_args__ = (UniqueConstraint("sky_source_id", "catalogue_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sky_source_id: Mapped[int] = mapped_column(ForeignKey("sky_sources.id", ondelete="CASCADE"))
    #: Recording a catalogue again replaces it, and its measurements with it.
    catalogue_id: Mapped[int] = mapped_column(
        ForeignKey("catalogues.id", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), index=True
    )
    #: The middle of the mosaic's window.
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    flux_jy: Mapped[float] = mapped_column(Float)
    flux_err_jy: Mapped[float] = mapped_column(Float)
    forced: Mapped[bool] = mapped_column(Boolean)


class Event(Base):
    """Append-only history of every action outcome and state change."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_group_id_id", "group_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow(), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    group_id: Mapped[int | None] = mapped_column(Integer)
    action_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    actor: Mapped[str | None] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)


class Provenance(Base):
    """What made one product: the project's and the tools' versions and the effective
    settings; its inputs are :class:`ProvenanceInput` rows. Written in the transaction that
    publishes the product, never changed afterwards."""

    __tablename__ = "provenance"

    registry_id: Mapped[int] = mapped_column(
        ForeignKey("data_registry.id", ondelete="CASCADE"), primary_key=True
    )
    #: SHA-256 of the whole record as JSON: the ``PROVHASH`` keyword of the product's FITS.
    provenance_hash: Mapped[str] = mapped_column(String(64))
    package_version: Mapped[str] = mapped_column(String(64))
    #: The project's git commit (``+dirty`` when tracked files differed from it), when the
    #: installed project is a git checkout.
    git_commit: Mapped[str | None] = mapped_column(String(64))
    settings_json: Mapped[str] = mapped_column(Text)
    settings_hash: Mapped[str] = mapped_column(String(64))
    casa_version: Mapped[str | None] = mapped_column(String(64))
    pyuvdata_version: Mapped[str | None] = mapped_column(String(64))
    casacore_version: Mapped[str | None] = mapped_column(String(64))
    #: The source finder installed (``bdsf`` or ``AegeanTools``) and its version, if any.
    finder: Mapped[str | None] = mapped_column(String(32))
    finder_version: Mapped[str | None] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())


class ProvenanceInput(Base):
    """One input of a product: a raw file (``raw_file``: size and SHA-256) or the
    calibration solution applied (``calibration``: its tables, calibrator and transit)."""

    __tablename__ = "provenance_inputs"
    __table_args__ = (
        UniqueConstraint("registry_id", "kind", "path"),
        CheckConstraint("kind IN ('raw_file', 'calibration')", name="kind"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    registry_id: Mapped[int] = mapped_column(
        ForeignKey("provenance.registry_id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))
    #: The observation the file belongs to, or the calibrator observation solved on.
    observation_key: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    calibrator: Mapped[str | None] = mapped_column(String(64))
    transit_time: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Footprint(Base):
    """The sky footprint of a published mosaic: the HEALPix cells whose centres fall on
    its non-blank pixels (:mod:`reconciler.skycells`), kept as :class:`FootprintCell`
    rows. Recorded in the transaction that publishes the mosaic."""

    __tablename__ = "footprints"

    registry_id: Mapped[int] = mapped_column(
        ForeignKey("data_registry.id", ondelete="CASCADE"), primary_key=True
    )
    #: Cells of ``skycells.FOOTPRINT_ORDER`` in the footprint (0: nothing on the sky).
    n_cells: Mapped[int] = mapped_column(Integer)
    area_sq_deg: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())


class FootprintCell(Base):
    """One row of a footprint: a parent cell (order ``skycells.ROW_ORDER``) and the mask of
    its 64 children (order ``skycells.FOOTPRINT_ORDER``) in the footprint, bit ``i`` for
    child ``cell * 64 + i``. The primary key leads with the cell: a position's mosaics
    are one index look-up."""

    __tablename__ = "footprint_cells"
    __table_args__ = ({"sqlite_with_rowid": False},)

    cell: Mapped[int] = mapped_column(Integer, primary_key=True)
    registry_id: Mapped[int] = mapped_column(
        ForeignKey("footprints.registry_id", ondelete="CASCADE"), primary_key=True, index=True
    )
    mask: Mapped[int] = mapped_column(BigInteger)
