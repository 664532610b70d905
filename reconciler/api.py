"""The Python API: ask for mosaics and wait for them, from a notebook or a script.

    from reconciler import MosaicOrchestrator

    orchestrator = MosaicOrchestrator()  # config/reconciler.toml, as the CLI reads it
    path = orchestrator.create_mosaic_centered_on_calibrator("0834+555", timespan_minutes=50)

Waiting drives the reconcile passes in this process (the product's actions, each in its
child process, as the service runs them), so it works with or without a service running;
when one runs too, the two share the work through their leases.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine

from reconciler.config import Settings, load_settings
from reconciler.db.engine import engine_for, reading
from reconciler.db.migrate import require_head
from reconciler.desired.centred import (
    DEFAULT_TIMESPAN_MINUTES,
    CentredResult,
    check_timespan,
    find_centred_window,
    lookup_calibrator,
    request_centred,
)
from reconciler.desired.tiling import earliest_incomplete_window
from reconciler.engine.registry import ActionRegistry, load_registry
from reconciler.errors import ReconcilerError
from reconciler.progress import SETTLED, Progress, follow, read_progress
from reconciler.service import Reconciler, utc_now
from reconciler.sky import TransitFinder, transit_finder
from reconciler.windows import Window

#: Seconds between passes while nothing could be done (waiting for data).
IDLE_SECONDS = 1.0


class MosaicNotPublishedError(ReconcilerError):
    """A group settled without being published (failed, insufficient, invalid, cancelled).

    ``progress`` is the group's last reading (phase, counts, reason).
    """

    def __init__(self, group_id: int, progress: Progress) -> None:
        super().__init__(
            f"mosaic group {group_id} is {progress.phase}, not published: "
            f"{progress.reason or 'no reason recorded'}"
        )
        self.group_id = group_id
        self.progress = progress


class MosaicTimeoutError(ReconcilerError):
    """The wait ran out before the group was published; it goes on at the next pass."""

    def __init__(self, group_id: int, timeout: float, progress: Progress) -> None:
        super().__init__(
            f"mosaic group {group_id} not published after {timeout:g} s: it is "
            f"{progress.phase} ({progress.reason or 'no reason recorded'})"
        )
        self.group_id = group_id
        self.progress = progress


def drive_until_settled(
    reconciler: Reconciler,
    group_id: int,
    *,
    timeout: float,
    out: TextIO,
    interval: float = IDLE_SECONDS,
) -> Progress:
    """Run passes until the group settles or ``timeout`` seconds pass; show progress.

    Passes run in a background thread while :func:`~reconciler.progress.follow` prints
    the group's phase and member counts to ``out`` (rewritten in place on a terminal).
    On timeout the running action is stopped and its claim released. Returns the group's
    last reading; a database error in the passes is raised here.
    """
    stop = threading.Event()
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            while not stop.is_set():
                report = reconciler.run_pass(stop)
                progress = read_progress(reconciler.engine, group_id)
                if progress is None or progress.phase in SETTLED:
                    return
                if not report.actions:
                    stop.wait(interval)
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=drive, name=f"drive-group-{group_id}", daemon=True)
    thread.start()
    try:
        follow(
            reconciler.engine,
            group_id,
            timeout=timeout,
            keep_going=thread.is_alive,
            out=out,
            interval=min(interval, 1.0),
        )
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]
    progress = read_progress(reconciler.engine, group_id)
    if progress is None:
        raise LookupError(f"no mosaic group with id {group_id}")
    return progress


class MosaicOrchestrator:
    """Ask for mosaics, find windows, and wait for products, against one database.

    Parameters
    ----------
    settings
        The settings to use; None reads them as the CLI does (``config_path``, then
        ``RECONCILER_CONFIG``, then ``config/reconciler.toml``, then the defaults).
    config_path
        Settings file to read when ``settings`` is None.
    engine, registry
        An engine and an action registry to use instead of those the settings name.
    clock, transits
        Injected time and transit finder (tests); default: the wall clock and the
        meridian transits at the configured site.
    progress
        Where waiting prints its progress lines; None prints nothing.

    Raises
    ------
    ConfigError
        For bad settings.
    SchemaError
        If the database is not at the schema this code expects (run ``reconciler init``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        config_path: str | Path | None = None,
        *,
        engine: Engine | None = None,
        registry: ActionRegistry | None = None,
        clock: Callable[[], datetime] = utc_now,
        transits: TransitFinder | None = None,
        progress: TextIO | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings(config_path)
        self.engine = engine or engine_for(self.settings)
        require_head(self.engine)
        self._registry = registry
        self.clock = clock
        self.transits = transits or transit_finder(self.settings.site)
        self.progress = progress

    @property
    def registry(self) -> ActionRegistry:
        """The action registry passes perform (``actions.registry``), loaded when needed."""
        if self._registry is None:
            self._registry = load_registry(self.settings)
        return self._registry

    def find_transit_centered_window(
        self, calibrator_name: str, timespan_minutes: float = DEFAULT_TIMESPAN_MINUTES
    ) -> CentredResult:
        """The window centred on the earliest transit of a calibrator that has data.

        Creates nothing.

        Parameters
        ----------
        calibrator_name
            A registered calibrator, e.g. ``"0834+555"``.
        timespan_minutes
            Length of the window, centred on the transit.

        Returns
        -------
        TransitWindow
            ``.window`` (members, state: complete, short where data run out, or open),
            ``.transit``, and the group bounds ``.start`` / ``.end``.
        WindowRefusal or NoTransitData
            Why there is none yet; ``.reason`` says what is missing.

        Raises
        ------
        NotFoundError
            For an unknown calibrator; the message lists the closest names.
        RequestError
            For a timespan that is not positive or too long.
        """
        timespan = check_timespan(timespan_minutes, self.settings)
        with reading(self.engine) as conn:
            calibrator = lookup_calibrator(conn, calibrator_name)
            return find_centred_window(
                conn, calibrator, timespan, self.settings, transits=self.transits, now=self.clock()
            )

    def create_mosaic_centered_on_calibrator(
        self,
        calibrator_name: str,
        timespan_minutes: float = DEFAULT_TIMESPAN_MINUTES,
        *,
        wait_for_published: bool = True,
        timeout: float = 3600.0,
    ) -> str | int:
        """Ask for the mosaic centred on the earliest transit of a calibrator with data.

        Parameters
        ----------
        calibrator_name, timespan_minutes
            As for :meth:`find_transit_centered_window`.
        wait_for_published
            Drive the passes until the mosaic is published (see :meth:`wait_for_published`).
        timeout
            Seconds to wait at most.

        Returns
        -------
        str or int
            The published path when waiting, else the group id (an identical earlier
            request returns its group).

        Raises
        ------
        NotFoundError, RequestError
            For an unknown calibrator, a bad timespan, or no transit with enough data (the
            message says what is missing).
        MosaicNotPublishedError, MosaicTimeoutError
            As :meth:`wait_for_published`.
        """
        result, _ = request_centred(
            self.engine,
            self.settings,
            calibrator_name,
            timespan_minutes,
            transits=self.transits,
            now=self.clock(),
            actor="api",
        )
        if not wait_for_published:
            return result.group_id
        return self.wait_for_published(result.group_id, timeout)

    def find_earliest_incomplete_window(self, dec_deg: float | None = None) -> Window | None:
        """The earliest default-tiling window without a published mosaic.

        Parameters
        ----------
        dec_deg
            Only windows on this dec strip (within ``calibration.dec_strip_tolerance_deg``);
            None for any strip.

        Returns
        -------
        Window or None
            An existing tiling window not yet published, else the next one the tiling
            will create (``OPEN`` while its data are still arriving); None when every
            window of the data is published. Creates nothing.
        """
        return earliest_incomplete_window(
            self.engine, self.settings, now=self.clock(), dec_deg=dec_deg
        )

    def wait_for_published(self, group_id: int, timeout: float = 3600.0) -> str:
        """Run reconcile passes in this process until the group is published.

        Parameters
        ----------
        group_id
            The mosaic group.
        timeout
            Seconds to wait at most.

        Returns
        -------
        str
            The published path of the mosaic.

        Raises
        ------
        MosaicNotPublishedError
            If the group settles otherwise (failed, insufficient, invalid, cancelled).
        MosaicTimeoutError
            If ``timeout`` passes first; the work goes on at the next pass.
        LookupError
            If there is no such group.
        """
        reconciler = Reconciler(
            self.engine,
            self.settings,
            self.registry,
            clock=self.clock,
            transits=self.transits,
        )
        out = self.progress if self.progress is not None else io.StringIO()
        progress = drive_until_settled(reconciler, group_id, timeout=timeout, out=out)
        return published_or_raise(group_id, progress, timeout)


def published_or_raise(group_id: int, progress: Progress, timeout: float) -> str:
    """The published path of a settled reading; the matching error otherwise."""
    if progress.phase == "published" and progress.published_path:
        return progress.published_path
    if progress.phase in SETTLED:
        raise MosaicNotPublishedError(group_id, progress)
    raise MosaicTimeoutError(group_id, timeout, progress)


__all__ = [
    "MosaicNotPublishedError",
    "MosaicOrchestrator",
    "MosaicTimeoutError",
    "drive_until_settled",
]
