"""Initial schema: the tables of DESIGN §3, the status views and SQLite time triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 01:16:36.226506
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import reconciler.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bandpass_calibrators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ra_deg", sa.Float(), nullable=False),
        sa.Column("dec_deg", sa.Float(), nullable=False),
        sa.Column("flux_jy", sa.Float(), nullable=False),
        sa.Column("dec_tolerance_deg", sa.Float(), server_default=sa.text("1.5"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column(
            "updated_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bandpass_calibrators")),
        sa.UniqueConstraint("name", name=op.f("uq_bandpass_calibrators_name")),
    )
    with op.batch_alter_table("bandpass_calibrators", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bandpass_calibrators_dec_deg"), ["dec_deg"], unique=False
        )

    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("action_id", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_action_id"), ["action_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_at"), ["at"], unique=False)
        batch_op.create_index("ix_events_group_id_id", ["group_id", "id"], unique=False)

    op.create_table(
        "mosaic_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("window_start", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("window_end", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("origin", sa.String(length=16), server_default="manual", nullable=False),
        sa.Column("calibrator_name", sa.String(length=64), nullable=True),
        sa.Column("timespan_minutes", sa.Float(), nullable=True),
        sa.Column("dec_deg", sa.Float(), nullable=True),
        sa.Column("generation", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "created_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.Column("phase", sa.String(length=16), server_default="new", nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("next_action", sa.Text(), nullable=True),
        sa.Column("published_path", sa.Text(), nullable=True),
        sa.Column("status_updated_at", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.CheckConstraint("generation >= 1", name=op.f("ck_mosaic_groups_generation_positive")),
        sa.CheckConstraint(
            reconciler.db.types.window_end_after_start(), name=op.f("ck_mosaic_groups_window_order")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mosaic_groups")),
        sa.UniqueConstraint(
            "window_start", "window_end", name=op.f("uq_mosaic_groups_window_start_window_end")
        ),
    )
    with op.batch_alter_table("mosaic_groups", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mosaic_groups_active",
            ["window_start"],
            unique=False,
            postgresql_where=sa.text("phase NOT IN ('published', 'cancelled', 'invalid')"),
            sqlite_where=sa.text("phase NOT IN ('published', 'cancelled', 'invalid')"),
        )

    op.create_table(
        "observations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("start_time", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("end_time", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("dec_deg", sa.Float(), nullable=False),
        sa.Column("n_subbands", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("ready", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column(
            "first_seen_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observations")),
        sa.UniqueConstraint("key", name=op.f("uq_observations_key")),
    )
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_observations_end_time"), ["end_time"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_observations_start_time"), ["start_time"], unique=False
        )

    op.create_table(
        "actions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("priority", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("not_before", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_token", sa.String(length=36), nullable=True),
        sa.Column("lease_expires_at", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(length=16), nullable=True),
        sa.Column(
            "created_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.Column("started_at", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("finished_at", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["mosaic_groups.id"],
            name=op.f("fk_actions_group_id_mosaic_groups"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actions")),
        sa.UniqueConstraint(
            "kind", "target", "generation", name=op.f("uq_actions_kind_target_generation")
        ),
    )
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_actions_claimable",
            ["priority", "id"],
            unique=False,
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )
        batch_op.create_index(batch_op.f("ix_actions_group_id"), ["group_id"], unique=False)
        batch_op.create_index(
            "ix_actions_leased",
            ["lease_expires_at"],
            unique=False,
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        )
        batch_op.create_index(batch_op.f("ix_actions_target"), ["target"], unique=False)

    op.create_table(
        "calibration_solutions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("calibrator_id", sa.Integer(), nullable=False),
        sa.Column(
            "observation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("dec_deg", sa.Float(), nullable=False),
        sa.Column("transit_time", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("valid_from", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("valid_until", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("tables", sa.Text(), nullable=False),
        sa.Column("snr", sa.Float(), nullable=True),
        sa.Column("flagged_fraction", sa.Float(), nullable=True),
        sa.Column(
            "created_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["calibrator_id"],
            ["bandpass_calibrators.id"],
            name=op.f("fk_calibration_solutions_calibrator_id_bandpass_calibrators"),
        ),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observations.id"],
            name=op.f("fk_calibration_solutions_observation_id_observations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calibration_solutions")),
        sa.UniqueConstraint(
            "calibrator_id",
            "observation_id",
            name=op.f("uq_calibration_solutions_calibrator_id_observation_id"),
        ),
    )
    with op.batch_alter_table("calibration_solutions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_calibration_solutions_dec_deg"), ["dec_deg"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_calibration_solutions_observation_id"), ["observation_id"], unique=False
        )

    op.create_table(
        "data_registry",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("generation", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("stage_path", sa.Text(), nullable=False),
        sa.Column("published_path", sa.Text(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="staging", nullable=False),
        sa.Column(
            "created_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.Column("published_at", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["mosaic_groups.id"],
            name=op.f("fk_data_registry_group_id_mosaic_groups"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_registry")),
        sa.UniqueConstraint(
            "kind", "group_id", "generation", name=op.f("uq_data_registry_kind_group_id_generation")
        ),
        sa.UniqueConstraint("published_path", name=op.f("uq_data_registry_published_path")),
    )
    with op.batch_alter_table("data_registry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_data_registry_group_id"), ["group_id"], unique=False)

    op.create_table(
        "images",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "observation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("pb_path", sa.Text(), nullable=True),
        sa.Column("beam_major_arcsec", sa.Float(), nullable=True),
        sa.Column("beam_minor_arcsec", sa.Float(), nullable=True),
        sa.Column("beam_pa_deg", sa.Float(), nullable=True),
        sa.Column("rms_jy", sa.Float(), nullable=True),
        sa.Column(
            "created_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observations.id"],
            name=op.f("fk_images_observation_id_observations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("observation_id", name=op.f("uq_images_observation_id")),
        sa.UniqueConstraint("path", name=op.f("uq_images_path")),
    )
    op.create_table(
        "measurement_sets",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "observation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("start_time", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("mid_time", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("end_time", reconciler.db.types.UTCDateTime(), nullable=False),
        sa.Column("ra_deg", sa.Float(), nullable=False),
        sa.Column("dec_deg", sa.Float(), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=False),
        sa.Column("n_channels", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observations.id"],
            name=op.f("fk_measurement_sets_observation_id_observations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurement_sets")),
        sa.UniqueConstraint("observation_id", name=op.f("uq_measurement_sets_observation_id")),
        sa.UniqueConstraint("path", name=op.f("uq_measurement_sets_path")),
    )
    op.create_table(
        "mosaic_group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column(
            "observation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), server_default="member", nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["mosaic_groups.id"],
            name=op.f("fk_mosaic_group_members_group_id_mosaic_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observations.id"],
            name=op.f("fk_mosaic_group_members_observation_id_observations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "observation_id", name=op.f("pk_mosaic_group_members")),
    )
    with op.batch_alter_table("mosaic_group_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mosaic_group_members_observation_id"), ["observation_id"], unique=False
        )

    op.create_table(
        "raw_files",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column(
            "observation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("subband", sa.Integer(), nullable=True),
        sa.Column("name_time", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("data_start", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("data_end", reconciler.db.types.UTCDateTime(), nullable=True),
        sa.Column("dec_deg", sa.Float(), nullable=True),
        sa.Column("n_channels", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "seen_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observations.id"],
            name=op.f("fk_raw_files_observation_id_observations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_files")),
        sa.UniqueConstraint("path", name=op.f("uq_raw_files_path")),
    )
    with op.batch_alter_table("raw_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_raw_files_data_start"), ["data_start"], unique=False)
        batch_op.create_index(batch_op.f("ix_raw_files_name_time"), ["name_time"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_raw_files_observation_id"), ["observation_id"], unique=False
        )

    op.create_table(
        "calibrated_ms",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "observation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "solution_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            reconciler.db.types.UTCDateTime(),
            server_default=reconciler.db.types.utcnow(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observations.id"],
            name=op.f("fk_calibrated_ms_observation_id_observations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["solution_id"],
            ["calibration_solutions.id"],
            name=op.f("fk_calibrated_ms_solution_id_calibration_solutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calibrated_ms")),
        sa.UniqueConstraint("observation_id", name=op.f("uq_calibrated_ms_observation_id")),
        sa.UniqueConstraint("path", name=op.f("uq_calibrated_ms_path")),
    )
    _create_sqlite_triggers()
    _create_views()


def downgrade() -> None:
    _drop_views()
    _drop_sqlite_triggers()
    op.drop_table("calibrated_ms")
    with op.batch_alter_table("raw_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_files_observation_id"))
        batch_op.drop_index(batch_op.f("ix_raw_files_data_start"))
        batch_op.drop_index(batch_op.f("ix_raw_files_name_time"))

    op.drop_table("raw_files")
    with op.batch_alter_table("mosaic_group_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mosaic_group_members_observation_id"))

    op.drop_table("mosaic_group_members")
    op.drop_table("measurement_sets")
    op.drop_table("images")
    with op.batch_alter_table("data_registry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_registry_group_id"))

    op.drop_table("data_registry")
    with op.batch_alter_table("calibration_solutions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calibration_solutions_observation_id"))
        batch_op.drop_index(batch_op.f("ix_calibration_solutions_dec_deg"))

    op.drop_table("calibration_solutions")
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_actions_target"))
        batch_op.drop_index(
            "ix_actions_leased",
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        )
        batch_op.drop_index(batch_op.f("ix_actions_group_id"))
        batch_op.drop_index(
            "ix_actions_claimable",
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )

    op.drop_table("actions")
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_observations_start_time"))
        batch_op.drop_index(batch_op.f("ix_observations_end_time"))

    op.drop_table("observations")
    with op.batch_alter_table("mosaic_groups", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_mosaic_groups_active",
            postgresql_where=sa.text("phase NOT IN ('published', 'cancelled', 'invalid')"),
            sqlite_where=sa.text("phase NOT IN ('published', 'cancelled', 'invalid')"),
        )

    op.drop_table("mosaic_groups")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_group_id_id")
        batch_op.drop_index(batch_op.f("ix_events_at"))
        batch_op.drop_index(batch_op.f("ix_events_action_id"))

    op.drop_table("events")
    with op.batch_alter_table("bandpass_calibrators", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bandpass_calibrators_dec_deg"))

    op.drop_table("bandpass_calibrators")


VIEWS = ("mosaic_status", "coverage_gaps", "pipeline_throughput")

#: Gaps between consecutive observations longer than this are listed by coverage_gaps.
GAP_SECONDS = 60


def _sql(dialect: str) -> dict[str, str]:
    """The few expressions whose spelling differs between PostgreSQL and SQLite."""
    if dialect == "postgresql":
        return {
            "gap_minutes": "EXTRACT(EPOCH FROM (start_time - prev_end)) / 60.0",
            "gap_seconds": "EXTRACT(EPOCH FROM (start_time - prev_end))",
            "hour": "date_trunc('hour', finished_at)",
            "duration": "EXTRACT(EPOCH FROM (finished_at - started_at))",
        }
    return {
        "gap_minutes": "(julianday(start_time) - julianday(prev_end)) * 1440.0",
        "gap_seconds": "(julianday(start_time) - julianday(prev_end)) * 86400.0",
        "hour": "strftime('%Y-%m-%d %H:00:00', finished_at)",
        "duration": "(julianday(finished_at) - julianday(started_at)) * 86400.0",
    }


def _create_views() -> None:
    sql = _sql(op.get_bind().dialect.name)
    op.execute(
        """
        CREATE VIEW mosaic_status AS
        SELECT
            g.id AS group_id,
            g.window_start,
            g.window_end,
            g.origin,
            g.calibrator_name,
            g.dec_deg,
            g.generation,
            g.phase,
            g.next_action,
            g.status_reason AS reason,
            COALESCE(m.members, 0) AS members,
            COALESCE(m.present, 0) AS present,
            COALESCE(m.converted, 0) AS converted,
            COALESCE(m.calibrated, 0) AS calibrated,
            COALESCE(m.imaged, 0) AS imaged,
            (SELECT COALESCE(MAX(a.attempts), 0) FROM actions a
              WHERE a.state <> 'done'
                AND (a.target = 'group:' || g.id
                     OR a.target IN (SELECT 'obs:' || o.key
                                       FROM mosaic_group_members gm
                                       JOIN observations o ON o.id = gm.observation_id
                                      WHERE gm.group_id = g.id))) AS attempts,
            (SELECT a.last_error FROM actions a
              WHERE a.last_error IS NOT NULL AND a.state <> 'done'
                AND (a.target = 'group:' || g.id
                     OR a.target IN (SELECT 'obs:' || o.key
                                       FROM mosaic_group_members gm
                                       JOIN observations o ON o.id = gm.observation_id
                                      WHERE gm.group_id = g.id))
              ORDER BY a.finished_at DESC LIMIT 1) AS last_error,
            g.published_path,
            g.paused,
            g.cancelled,
            g.status_updated_at
        FROM mosaic_groups g
        LEFT JOIN (
            SELECT gm.group_id,
                   COUNT(*) AS members,
                   SUM(CASE WHEN o.ready THEN 1 ELSE 0 END) AS present,
                   COUNT(ms.id) AS converted,
                   COUNT(c.id) AS calibrated,
                   COUNT(i.id) AS imaged
              FROM mosaic_group_members gm
              JOIN observations o ON o.id = gm.observation_id
              LEFT JOIN measurement_sets ms ON ms.observation_id = o.id
              LEFT JOIN calibrated_ms c ON c.observation_id = o.id
              LEFT JOIN images i ON i.observation_id = o.id
             WHERE gm.role = 'member'
             GROUP BY gm.group_id
        ) m ON m.group_id = g.id
        """
    )
    op.execute(
        f"""
        CREATE VIEW coverage_gaps AS
        SELECT prev_end AS gap_start,
               start_time AS gap_end,
               prev_dec_deg AS dec_before,
               dec_deg AS dec_after,
               {sql["gap_minutes"]} AS gap_minutes
          FROM (SELECT start_time,
                       dec_deg,
                       LAG(end_time) OVER (ORDER BY start_time) AS prev_end,
                       LAG(dec_deg) OVER (ORDER BY start_time) AS prev_dec_deg
                  FROM observations) s
         WHERE prev_end IS NOT NULL AND {sql["gap_seconds"]} > {GAP_SECONDS}
        """
    )
    op.execute(
        f"""
        CREATE VIEW pipeline_throughput AS
        SELECT {sql["hour"]} AS hour,
               kind,
               SUM(CASE WHEN state = 'done' THEN 1 ELSE 0 END) AS completed,
               SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed,
               AVG({sql["duration"]}) AS mean_seconds,
               MAX({sql["duration"]}) AS max_seconds
          FROM actions
         WHERE finished_at IS NOT NULL AND state IN ('done', 'failed')
         GROUP BY {sql["hour"]}, kind
        """
    )


def _drop_views() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")


#: SQLite keeps times as text: a hand-written INSERT may spell them any ISO way, so these
#: triggers refuse what is not a time and rewrite the rest into the one sortable spelling
#: SQLAlchemy uses ('YYYY-MM-DD HH:MM:SS.ffffff').
_CANONICAL = "strftime('%Y-%m-%d %H:%M:%f000', {})"
_SQLITE_TRIGGERS = {
    "mosaic_groups_window_check_insert": "BEFORE INSERT",
    "mosaic_groups_window_check_update": "BEFORE UPDATE OF window_start, window_end",
    "mosaic_groups_window_canonical_insert": "AFTER INSERT",
    "mosaic_groups_window_canonical_update": "AFTER UPDATE OF window_start, window_end",
}


def _create_sqlite_triggers() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    start, end = _CANONICAL.format("NEW.window_start"), _CANONICAL.format("NEW.window_end")
    for name, when in _SQLITE_TRIGGERS.items():
        if when.startswith("BEFORE"):
            body = (
                "SELECT RAISE(ABORT, 'mosaic_groups: window_start and window_end must be UTC "
                "times such as 2025-01-01 00:00:00');"
            )
            condition = (
                f"(NEW.window_start IS NOT NULL AND {start} IS NULL) "
                f"OR (NEW.window_end IS NOT NULL AND {end} IS NULL)"
            )
        else:
            body = (
                f"UPDATE mosaic_groups SET window_start = {start}, window_end = {end} "
                "WHERE id = NEW.id;"
            )
            condition = f"NEW.window_start IS NOT {start} OR NEW.window_end IS NOT {end}"
        op.execute(
            f"CREATE TRIGGER {name} {when} ON mosaic_groups WHEN {condition} BEGIN {body} END"
        )


def _drop_sqlite_triggers() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in _SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
