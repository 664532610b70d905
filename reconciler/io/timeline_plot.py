"""The data timeline as a PNG: per dec strip, one lane of observations coloured by their
furthest step and one lane of mosaic windows coloured by phase, with the gaps in the data
shaded. Agg canvas, no pyplot state."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import date2num
from matplotlib.figure import Figure
from matplotlib.patches import Patch

#: Colours of an observation's furthest step.
OBSERVATION_COLOURS = {
    "problem": "#d62728",
    "arriving": "#c7c7c7",
    "present": "#9ecae1",
    "converted": "#6baed6",
    "calibrated": "#3182bd",
    "imaged": "#08519c",
}

#: Colours of a mosaic window's phase; phases not named here are "in progress".
PHASE_COLOURS = {
    "published": "#2ca02c",
    "waiting": "#bcbd22",
    "new": "#bcbd22",
    "failed": "#d62728",
    "held": "#ff7f0e",
    "insufficient": "#8c564b",
    "blocked": "#e377c2",
    "paused": "#7f7f7f",
    "cancelled": "#c7c7c7",
    "invalid": "#c7c7c7",
}
IN_PROGRESS = "#17becf"


def phase_colour(phase: str) -> str:
    """The colour a window in ``phase`` is drawn in."""
    return PHASE_COLOURS.get(phase, IN_PROGRESS)


def timeline_png(timeline: dict[str, Any]) -> bytes:
    """Draw ``timeline`` (as :func:`reconciler.web.data.timeline` gives it) and return the
    PNG bytes. The time axis spans the data inside the timeline's span (the whole span when
    there are none), so an hour of data in a week's view is not a sliver."""
    strips = timeline["strips"]
    figure = Figure(figsize=(11.0, 1.6 + 0.9 * max(len(strips), 1)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    start, end = _extent(timeline)
    for row, strip in enumerate(strips):
        base = row * 2.0
        for gap in strip["gaps"]:
            axes.axvspan(*_span(gap["start"], gap["end"]), color="#f0f0f0", zorder=0)
        _lane(
            axes,
            base + 1.0,
            *_runs(
                [(o["start_time"], o["end_time"]) for o in strip["observations"]],
                [OBSERVATION_COLOURS[o["state"]] for o in strip["observations"]],
            ),
        )
        _lane(
            axes,
            base,
            [(w["window_start"], w["window_end"]) for w in strip["windows"]],
            [phase_colour(w["phase"]) for w in strip["windows"]],
        )
    axes.set_xlim(start, end)
    axes.set_ylim(-0.2, 2.0 * max(len(strips), 1))
    axes.set_yticks(
        [row * 2.0 + offset for row in range(len(strips)) for offset in (0.4, 1.4)],
        [
            label
            for strip in strips
            for label in (f"Dec {strip['dec_deg']:+.1f}° mosaics", "observations")
        ],
    )
    axes.xaxis_date()
    axes.grid(axis="x", alpha=0.3)
    if not strips:
        axes.text(0.5, 0.5, "no data in this span", transform=axes.transAxes, ha="center")
    used_phases = sorted({w["phase"] for s in strips for w in s["windows"]})
    used_states = [
        state
        for state in OBSERVATION_COLOURS
        if any(o["state"] == state for s in strips for o in s["observations"])
    ]
    handles = [Patch(color=OBSERVATION_COLOURS[s], label=s) for s in used_states] + [
        Patch(color=phase_colour(p), label=f"mosaic {p}") for p in used_phases
    ]
    if handles:
        axes.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            frameon=False,
        )
    figure.autofmt_xdate()
    figure.subplots_adjust(left=0.15, right=0.8, bottom=0.9 / figure.get_figheight())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _extent(timeline: dict[str, Any]) -> tuple[float, float]:
    """The time axis: the data inside the span, padded by 2 %; the span without data."""
    span = _span(timeline["start"], timeline["end"])
    moments = [
        moment
        for strip in timeline["strips"]
        for o in strip["observations"]
        for moment in (o["start_time"], o["end_time"])
    ] + [
        moment
        for strip in timeline["strips"]
        for w in strip["windows"]
        for moment in (w["window_start"], w["window_end"])
    ]
    if not moments:
        return span
    first, last = _span(min(moments), max(moments))
    first, last = max(first, span[0]), min(last, span[1])
    pad = 0.02 * (last - first)
    return first - pad, last + pad


#: Matplotlib's date number of the Unix epoch: a date number is this plus days since it
#: (one subtraction instead of matplotlib's conversion of each datetime).
_EPOCH_NUM = float(date2num(datetime(1970, 1, 1, tzinfo=UTC)))


def _num(moment: datetime) -> float:
    return _EPOCH_NUM + moment.timestamp() / 86_400.0


def _span(start: datetime, end: datetime) -> tuple[float, float]:
    return _num(start), _num(end)


#: Spans this close are drawn as one.
_JOIN = timedelta(seconds=2)


def _runs(
    spans: list[tuple[datetime, datetime]], colours: list[str]
) -> tuple[list[tuple[datetime, datetime]], list[str]]:
    """Back-to-back spans of one colour (apart by at most ``_JOIN``) joined into one: a
    week is ~2,000 observations."""
    joined: list[tuple[datetime, datetime]] = []
    joined_colours: list[str] = []
    for (start, end), colour in zip(spans, colours, strict=True):
        if joined and joined_colours[-1] == colour and start <= joined[-1][1] + _JOIN:
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
            joined_colours.append(colour)
    return joined, joined_colours


def _lane(axes: Any, y: float, spans: list[tuple[datetime, datetime]], colours: list[str]) -> None:
    """Bars from each span's start to its end at height ``y``."""
    if not spans:
        return
    bars = [(lo, hi - lo) for lo, hi in (_span(a, b) for a, b in spans)]
    axes.broken_barh(bars, (y, 0.8), facecolors=colours, edgecolors="white", linewidth=0.3)
