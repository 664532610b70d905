"""Prometheus metrics of the service (``reconciler run --metrics-port``).

Two kinds: what this service did, counted from its pass reports as they end (actions by
kind and outcome, their durations, pass durations, the time of the last pass, discovery's
files), and the state of the database, read at each scrape (the queue by state, the age of
the oldest action ready to run, leases held, lag behind the array, published mosaics, QA
verdicts). A scrape while the database is down answers ``reconciler_database_up 0``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from reconciler.db.engine import reading
from reconciler.db.models import MosaicGroup, QualityReport, RegistryEntry
from reconciler.service import PassReport
from reconciler.status import lag, queue

log = logging.getLogger(__name__)

#: Action durations span a second (a short step) to an hour (a full-shape image).
ACTION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600)


class ServiceMetrics:
    """The metrics of one service: its own registry, fed by :meth:`observe_pass`."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.actions = Counter(
            "reconciler_actions",
            "Action attempts ended, by kind and outcome (done, retry: failed and retried "
            "later, failed: failed for good, other outcomes as the engine names them).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.action_seconds = Histogram(
            "reconciler_action_duration_seconds",
            "Wall time of action attempts, by kind.",
            ["kind"],
            buckets=ACTION_BUCKETS,
            registry=self.registry,
        )
        self.pass_seconds = Histogram(
            "reconciler_pass_duration_seconds",
            "Wall time of passes.",
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.last_pass = Gauge(
            "reconciler_last_pass_end_timestamp_seconds",
            "Unix time the last pass of this service ended.",
            registry=self.registry,
        )
        self.files = Counter(
            "reconciler_discovery_files",
            "Raw files discovery found, by change (new, changed, vanished, unreadable).",
            ["change"],
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(engine))

    def observe_pass(self, report: PassReport) -> None:
        """Count what one pass did."""
        for action in report.actions:
            kind = action.label.split(" ", 1)[0]
            self.actions.labels(kind, action.outcome).inc()
            self.action_seconds.labels(kind).observe(action.seconds)
        self.pass_seconds.observe(report.seconds)
        self.last_pass.set(time.time())
        found = report.discovery
        if found is not None:
            self.files.labels("new").inc(len(found.new_files))
            self.files.labels("changed").inc(len(found.changed_files))
            self.files.labels("vanished").inc(len(found.vanished_files))
            self.files.labels("unreadable").inc(len(found.errors))

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` on ``host``:``port`` from a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)


class DatabaseCollector(Collector):
    """The state of the database at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "reconciler_database_up", "1 when the database answered this scrape."
        )
        try:
            families = list(self._read())
        except DBAPIError as exc:
            log.warning("metrics: the database did not answer: %s", exc.orig or exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[GaugeMetricFamily]:
        now = datetime.now(UTC)
        with reading(self.engine) as conn:
            waiting = queue(conn, now)
            behind = lag(conn, now)
            published = conn.execute(
                select(func.count())
                .select_from(RegistryEntry)
                .where(RegistryEntry.kind == "mosaic", RegistryEntry.status == "published")
            ).scalar_one()
            phases = conn.execute(
                select(MosaicGroup.phase, func.count()).group_by(MosaicGroup.phase)
            ).all()
            verdicts = conn.execute(
                select(QualityReport.quality, func.count()).group_by(QualityReport.quality)
            ).all()
        depth = GaugeMetricFamily(
            "reconciler_queue_actions", "Actions in the queue, by state.", labels=["state"]
        )
        for state in ("pending", "backing_off", "running", "failed"):
            depth.add_metric([state], waiting[state])
        yield depth
        yield _gauge(
            "reconciler_oldest_pending_action_age_seconds",
            "Seconds the oldest action ready to run has waited (0: none waits).",
            waiting["oldest_pending_age_seconds"] or 0.0,
        )
        leases = GaugeMetricFamily(
            "reconciler_leases_held", "Actions leased, by worker.", labels=["owner"]
        )
        for lease in waiting["leases"]:
            leases.add_metric([lease["owner"] or ""], lease["actions"])
        yield leases
        yield _gauge(
            "reconciler_lag_seconds",
            "The end of the newest observation less the end of the newest published window.",
            behind["lag_seconds"] or 0.0,
        )
        yield _gauge(
            "reconciler_newest_observation_age_seconds",
            "Seconds since the end of the newest observation (NaN: none yet).",
            behind["newest_observation_age_seconds"],
        )
        yield _gauge(
            "reconciler_published_mosaics", "Published mosaic products (every version).", published
        )
        groups = GaugeMetricFamily(
            "reconciler_mosaic_groups", "Mosaic groups, by phase.", labels=["phase"]
        )
        for phase, count in phases:
            groups.add_metric([phase], count)
        yield groups
        quality = GaugeMetricFamily(
            "reconciler_qa_reports", "Quality assessments, by verdict.", labels=["quality"]
        )
        for verdict, count in verdicts:
            quality.add_metric([verdict], count)
        yield quality


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float("nan") if value is None else value)
