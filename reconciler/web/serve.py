"""Serving the site with uvicorn: localhost unless told otherwise."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from sqlalchemy import Engine

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


@contextmanager
def site_in_background(
    engine: Engine, settings: Settings, *, port: int = 8110
) -> Iterator[str | None]:
    """Serve the site on localhost from a thread while the block runs; yields its URL (on
    ``port``, or a free port when that one is taken), or None when it could not start."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(engine, settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/" if server.started else None
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
