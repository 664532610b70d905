"""Serving the site with uvicorn: localhost unless told otherwise."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from reconciler.config import Settings
from reconciler.db.engine import engine_for
from reconciler.db.migrate import require_head
from reconciler.errors import ReconcilerError
from reconciler.web.app import create_app

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_web(settings: Settings, *, host: str, port: int, allow_remote: bool) -> None:
    """Serve the site on ``host``:``port`` until interrupted.

    Raises
    ------
    ReconcilerError
        When ``host`` is not a loopback address and ``allow_remote`` is not given: the site
        has no authentication of its own.
    """
    if not is_loopback(host) and not allow_remote:
        raise ReconcilerError(
            f"--host {host} would serve the site beyond this machine, and it has no "
            "authentication: give --allow-remote, behind a reverse proxy that authenticates"
        )
    engine = engine_for(settings)
    require_head(engine)
    log.info("web: serving http://%s:%d/", host, port)
    uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="warning")
