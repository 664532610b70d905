"""The read-only site of ``reconciler web``: the overview (timeline, phases, queue, lag),
one page per mosaic, the failures page, the published files, and the same data as JSON
under ``/api/``.

Nothing here writes: every route is a GET, and each reads the database in one read
transaction. Published files are served only from the products root: a path that
resolves anywhere else (a ``..``, a symlink out) is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine

from reconciler.config import Settings
from reconciler.db.engine import reading
from reconciler.db.provenance import product_provenance
from reconciler.io.confine import inside
from reconciler.io.timeline_plot import OBSERVATION_COLOURS, phase_colour, timeline_png
from reconciler.model import Phase
from reconciler.status import jsonable, lag, queue
from reconciler.web import data
from reconciler.web.data import Filters

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))

#: The longest span a view may ask for, in days.
MAX_DAYS = 3660.0


def filters(
    days: Annotated[float, Query(gt=0, le=MAX_DAYS)] = data.DEFAULT_DAYS,
    end: str | None = None,
    dec: str | None = None,
    phase: str | None = None,
) -> Filters:
    """The view asked for by the query parameters (``days``; ``end``, ISO 8601, UTC if no
    zone; ``dec``, degrees; ``phase``). An empty one (as a form sends it) is left out; a
    bad one is a 422 that names it."""
    moment = None
    if end:
        try:
            moment = datetime.fromisoformat(end)
        except ValueError:
            raise HTTPException(422, f"end={end!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    strip = None
    if dec:
        try:
            strip = float(dec)
        except ValueError:
            raise HTTPException(422, f"dec={dec!r} is not a number of degrees") from None
        if not -90.0 <= strip <= 90.0:
            raise HTTPException(422, f"dec={dec} is not within ±90°")
    if phase and phase not in {str(p) for p in Phase}:
        raise HTTPException(422, f"unknown phase {phase!r}")
    return Filters(days=days, end=moment, dec=strip, phase=phase or None)


#: A route's view, from its query parameters.
View = Annotated[Filters, Depends(filters)]


def create_app(engine: Engine, settings: Settings) -> FastAPI:
    """The site over ``engine``'s database, serving products from ``settings``' root."""
    app = FastAPI(
        title="DSA-110 continuum mosaics",
        description="Read-only view of the reconciler's database.",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    tolerance = settings.calibration.dec_strip_tolerance_deg
    products_root = settings.paths.products

    def overview_data(view: Filters) -> dict[str, Any]:
        now = datetime.now(UTC)
        with reading(engine) as conn:
            span = data.span_of(conn, view)
            return {
                "span": {"start": span.start, "end": span.end},
                "counts": data.phase_counts(conn, view, span, tolerance),
                "lag": lag(conn, now),
                "queue": queue(conn, now),
                "status": data.status(conn, view, span, tolerance),
                "strips": data.strips(conn, span, tolerance),
            }

    def timeline_data(view: Filters) -> dict[str, Any]:
        with reading(engine) as conn:
            return data.timeline(conn, view, data.span_of(conn, view), tolerance)

    def group_data(group_id: int) -> dict[str, Any]:
        with reading(engine) as conn:
            found = data.group(conn, group_id, products_root, settings.paths.work)
            if found is None:
                raise HTTPException(404, f"no mosaic group {group_id}")
            found["provenance"] = product_provenance(conn, group_id=group_id)
        return found

    def failures_data() -> list[dict[str, Any]]:
        with reading(engine) as conn:
            return data.failures(conn, datetime.now(UTC))

    def page(request: Request, template: str, **context: Any) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, template, context)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request, view: View) -> HTMLResponse:
        return page(
            request,
            "overview.html",
            view=view,
            query=urlencode(view.query()),
            phases=[str(p) for p in data.PHASE_ORDER],
            colour=phase_colour,
            states=OBSERVATION_COLOURS,
            **overview_data(view),
        )

    @app.get("/timeline.png")
    def timeline_image(view: View) -> Response:
        png = timeline_png(timeline_data(view))
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/groups/{group_id}", response_class=HTMLResponse)
    def group_page(request: Request, group_id: int) -> HTMLResponse:
        found = group_data(group_id)
        current = found["products"][0] if found["products"] else None
        quicklooks = [] if current is None else [f for f in current["files"] if _quicklook(f)]
        return page(request, "group.html", group=found, quicklooks=quicklooks, colour=phase_colour)

    @app.get("/groups/{group_id}/qa/{generation}.png")
    def qa_figure(group_id: int, generation: int) -> FileResponse:
        with reading(engine) as conn:
            path = data.qa_figure(conn, group_id, generation, [products_root, settings.paths.work])
        if path is None:
            raise HTTPException(404, "no such QA figure")
        return FileResponse(path.resolve(), media_type="image/png")

    @app.get("/failures", response_class=HTMLResponse)
    def failures_page(request: Request) -> HTMLResponse:
        return page(request, "failures.html", failures=failures_data())

    @app.get("/files/{path:path}")
    def published_file(path: str) -> FileResponse:
        candidate = products_root / path
        if not inside(candidate, products_root) or not candidate.is_file():
            raise HTTPException(404, "no such published file")
        return FileResponse(candidate.resolve())

    @app.get("/api/status")
    def api_status(view: View) -> JSONResponse:
        with reading(engine) as conn:
            return _json(data.status(conn, view, data.span_of(conn, view), tolerance))

    @app.get("/api/overview")
    def api_overview(view: View) -> JSONResponse:
        return _json(overview_data(view))

    @app.get("/api/timeline")
    def api_timeline(view: View) -> JSONResponse:
        return _json(timeline_data(view))

    @app.get("/api/queue")
    def api_queue() -> JSONResponse:
        with reading(engine) as conn:
            return _json(queue(conn, datetime.now(UTC)))

    @app.get("/api/events")
    def api_events(
        group: int | None = None, limit: Annotated[int, Query(gt=0, le=1000)] = 100
    ) -> JSONResponse:
        with reading(engine) as conn:
            return _json(data.events(conn, group, limit))

    @app.get("/api/groups/{group_id}")
    def api_group(group_id: int) -> JSONResponse:
        return _json(group_data(group_id))

    @app.get("/api/failures")
    def api_failures() -> JSONResponse:
        return _json(failures_data())

    return app


def _json(value: Any) -> JSONResponse:
    return JSONResponse(jsonable(value))


def _quicklook(file: dict[str, Any]) -> bool:
    """The quicklook PNG beside a mosaic (not its QA figure)."""
    name = file["path"]
    return file["url"] is not None and name.endswith(".png") and not name.endswith(".qa.png")
