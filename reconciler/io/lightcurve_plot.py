"""A light curve as a PNG: detections with their errors, forced measurements as upper
limits. Agg canvas, no pyplot state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def write_light_curve_png(curves: list[dict[str, Any]], path: Path) -> None:
    """Plot each sky source of ``curves`` (as :func:`reconciler.db.lightcurves.light_curves`
    gives them) on one time axis and write ``path``."""
    figure = Figure(figsize=(9.0, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for curve in curves:
        label = (
            f"sky source {curve['sky_source_id']} ({curve['ra_deg']:.4f}, {curve['dec_deg']:+.4f})"
        )
        measured = curve["measurements"]
        detected = [m for m in measured if not m["forced"]]
        forced = [m for m in measured if m["forced"]]
        line = axes.errorbar(
            [m["observed_at"] for m in detected],
            [m["flux_jy"] for m in detected],
            yerr=[m["flux_err_jy"] for m in detected],
            fmt="o",
            capsize=3,
            label=label,
        )
        axes.plot(
            [m["observed_at"] for m in forced],
            [m["upper_limit_jy"] for m in forced],
            "v",
            color=line[0].get_color(),
            label=f"{label}: upper limits (3σ)" if forced else None,
        )
    axes.set_xlabel("time (UTC, middle of the mosaic's window)")
    axes.set_ylabel("peak flux density (Jy/beam)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.autofmt_xdate()
    figure.savefig(path, format="png", dpi=100)
