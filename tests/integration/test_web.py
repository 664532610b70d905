"""The read-only web site (``reconciler web``) on both backends: its JSON against ``status
--json``, filters, queue and leases, failures with their commands, published files served
only from the products root, nothing that writes; and the pages in a real headless
Chromium against a real ``reconciler web`` process, with screenshots under
``build/screenshots/`` (and ``docs/`` when ``UPDATE_DOCS_SCREENSHOTS=1``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from matplotlib.image import imread
from sqlalchemy import func, insert, select

from reconciler.cli import main
from reconciler.db.engine import make_engine, reading, writing
from reconciler.db.models import Event, MosaicGroup, QualityReport
from reconciler.web.app import create_app
from reconciler.web.serve import is_loopback
from tests.conftest import BACKENDS, fresh_database_url, write_config
from tests.integration.web_world import WebWorld, build_world

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: A span reaching back over the whole world (its data are from 2025).
ALL = {"days": "3660"}


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> WebWorld:
    root = tmp_path_factory.mktemp(f"web-{request.param}")
    return build_world(fresh_database_url(request.param, request, root), root)


@pytest.fixture(scope="module")
def client(world: WebWorld) -> Iterator[TestClient]:
    engine = make_engine(world.url)
    with TestClient(create_app(engine, world.settings)) as client:
        yield client
    engine.dispose()


def cli_json(world: WebWorld, *args: str) -> object:
    config = write_config(world.settings.paths.work.parent, world.url)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--config", str(config), *args]) == 0
    return json.loads(out.getvalue())


def test_api_status_gives_the_rows_and_fields_of_status_json(world, client):
    response = client.get("/api/status", params=ALL)

    assert response.status_code == 200
    assert response.json() == cli_json(world, "status", "--json")


def test_overview_counts_every_phase_and_filters_by_query_parameters(world, client):
    overview = client.get("/api/overview", params=ALL).json()
    assert overview["counts"] == {
        "failed": 1,
        "held": 1,
        "insufficient": 1,
        "waiting": 1,
        "imaging": 2,
        "publishing": 1,
        "published": 1,
    }
    # The default span: the week up to the newest data, not up to today.
    default = client.get("/api/overview").json()
    assert default["counts"] == overview["counts"]
    assert default["span"]["end"] >= "2025-03-01"

    failed = client.get("/api/status", params={**ALL, "phase": "failed"}).json()
    assert [row["group_id"] for row in failed] == [world.groups["failed"]]
    assert client.get("/api/status", params={**ALL, "dec": "-30"}).json() == []
    assert len(client.get("/api/status", params={**ALL, "dec": "55.6"}).json()) == 8
    assert client.get("/", params={"phase": "nonsense"}).status_code == 422
    assert client.get("/api/status", params={"days": "0"}).status_code == 422
    assert client.get("/api/status", params={"end": "yesterday"}).status_code == 422
    # A form sends the fields it leaves empty: they are left out.
    empty = client.get("/api/status", params={**ALL, "dec": "", "end": "", "phase": ""})
    assert len(empty.json()) == 8


def test_overview_shows_the_queue_the_leases_and_the_lag(world, client):
    overview = client.get("/api/overview", params=ALL).json()

    queue = overview["queue"]
    assert (queue["pending"], queue["backing_off"], queue["running"], queue["failed"]) == (
        0,
        1,
        1,
        1,
    )
    assert [lease["owner"] for lease in queue["leases"]] == ["worker-a@host-1"]
    lag = overview["lag"]
    # Published up to the end of observation 3 of 24: 21 observations (of 309.24 s) behind.
    assert lag["lag_seconds"] == pytest.approx(21 * 309.24, abs=1.0)
    assert client.get("/api/queue").json() == queue


def test_timeline_has_each_observation_state_and_window_phase(world, client):
    timeline = client.get("/api/timeline", params=ALL).json()

    (strip,) = timeline["strips"]
    assert strip["dec_deg"] == pytest.approx(55.57)
    states = [o["state"] for o in strip["observations"]]
    assert states[:3] == ["imaged"] * 3 and "present" in states
    phases = {w["group_id"]: w["phase"] for w in strip["windows"]}
    assert phases[world.groups["held"]] == "held"
    assert phases[world.groups["published"]] == "published"

    png = client.get("/timeline.png", params=ALL)
    assert png.headers["content-type"] == "image/png"
    height, width, _ = imread(io.BytesIO(png.content)).shape
    assert width > 500 and height > 100


def test_mosaic_page_data_has_members_products_and_events(world, client):
    group = world.groups["published"]
    found = client.get(f"/api/groups/{group}").json()

    assert found["status"]["phase"] == "published"
    assert [m["state"] for m in found["members"]] == ["imaged"] * 3
    (product,) = found["products"]
    names = [Path(f["path"]).name for f in product["files"]]
    assert names[0].endswith(".fits") and any(n.endswith(".png") for n in names)
    assert all(f["url"].startswith("/files/") for f in product["files"])
    assert any(e["message"].startswith("publishing → published") for e in found["events"])
    assert client.get("/api/groups/99999").status_code == 404


def test_a_held_mosaics_staged_qa_figure_is_shown(world, client):
    held = world.groups["held"]
    (report,) = client.get(f"/api/groups/{held}").json()["quality"]
    assert report["quality"] == "failed"
    assert report["figure_url"] == f"/groups/{held}/qa/1.png"

    figure = client.get(report["figure_url"])
    assert figure.headers["content-type"] == "image/png"
    assert imread(io.BytesIO(figure.content)).shape[0] > 100
    assert f'src="/groups/{held}/qa/1.png"' in client.get(f"/groups/{held}").text
    assert client.get(f"/groups/{held}/qa/2.png").status_code == 404
    assert client.get(f"/groups/{world.groups['failed']}/qa/1.png").status_code == 404

    # A report whose figure lies outside the roots is never served.
    outside = world.settings.paths.work.parent / "elsewhere.png"
    shutil.copy(world.settings.paths.work / "staging" / "held" / "mosaic.qa.png", outside)
    other = world.groups["insufficient"]
    engine = make_engine(world.url)
    with writing(engine) as conn:
        conn.execute(
            insert(QualityReport).values(
                group_id=other, generation=1, quality="failed", summary="-", figures="{}",
                figure_path=str(outside),
            )
        )  # fmt: skip
    engine.dispose()
    assert client.get(f"/api/groups/{other}").json()["quality"][0]["figure_url"] is None
    assert client.get(f"/groups/{other}/qa/1.png").status_code == 404


def test_published_files_are_served_only_from_the_products_root(world, client):
    group = world.groups["published"]
    (product,) = client.get(f"/api/groups/{group}").json()["products"]
    mosaic = product["files"][0]

    served = client.get(mosaic["url"])
    assert served.status_code == 200
    assert served.content == Path(mosaic["path"]).read_bytes()

    products = world.settings.paths.products
    secret = products.parent / "secret.txt"
    secret.write_text("not a product")
    link = products / "mosaics" / "link-out.txt"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    for path in ("/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/mosaics/link-out.txt",
                 "/files/mosaics/nothing.fits", "/files/mosaics"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"not a product" not in response.content


def test_failures_list_each_failure_newest_first_with_its_command(world, client):
    failures = client.get("/api/failures").json()

    by_state = {(f["what"], f["state"]): f for f in failures}
    failed_group = world.groups["failed"]
    assert by_state["action", "failed"]["command"] == f"reconciler retry {failed_group}"
    assert "broken for good" in by_state["action", "failed"]["reason"]
    held = world.groups["held"]
    assert by_state["group", "held"]["command"] == f"reconciler publish --accept {held}"
    assert by_state["group", "failed"]["group_id"] == failed_group
    moments = [f["at"] for f in failures]
    assert moments == sorted(moments, reverse=True)
    page = client.get("/failures").text
    assert f"reconciler retry {failed_group}" in page


def test_the_site_never_writes(world, client):
    engine = make_engine(world.url)

    def counts() -> tuple[int, int, list]:
        with reading(engine) as conn:
            events = conn.execute(select(func.count()).select_from(Event)).scalar_one()
            groups = conn.execute(select(MosaicGroup.id, MosaicGroup.phase)).all()
        return events, len(groups), sorted(groups)

    before = counts()
    routes = ["/", "/failures", "/timeline.png", f"/groups/{world.groups['failed']}"]
    routes += [
        r.path for r in client.app.routes if r.path.startswith("/api/") and "{" not in r.path
    ]
    for route in routes:
        assert client.get(route, params=ALL).status_code == 200, route
        for method in ("post", "put", "patch", "delete"):
            assert getattr(client, method)(route).status_code == 405, (method, route)
    assert counts() == before
    engine.dispose()


def test_web_binds_beyond_localhost_only_when_told(world, capsys):
    config = write_config(world.settings.paths.work.parent, world.url)

    assert main(["--config", str(config), "web", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.5") and not is_loopback("example.org")


# --- in a real browser -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def site(world: WebWorld) -> Iterator[str]:
    """A real ``reconciler web`` process over the world; its base URL."""
    config = write_config(world.settings.paths.work.parent, world.url)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "--config", str(config), "web", "--port",
         str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                output = server.communicate(timeout=5)[0].decode() if server.poll() else ""
                server.kill()
                pytest.fail(f"reconciler web did not start: {output}")
            time.sleep(0.2)
    yield base
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        from tests.conftest import unavailable

        unavailable(f"no chromium at {CHROMIUM} (make setup installs it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _image_loaded(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def _screenshot(page, name: str, backend: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{backend}.png"), full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1" and (name, backend) == (
        "overview",
        "sqlite",
    ):
        page.screenshot(path=str(REPO / "docs" / f"web-{name}.png"), full_page=True)


def test_pages_in_a_real_browser(world, site, browser):
    backend = "sqlite" if world.url.startswith("sqlite") else "postgresql"
    page = browser.new_page(viewport={"width": 1300, "height": 900})

    page.goto(f"{site}/?days=30")
    assert page.title().startswith("Overview")
    for phase, count in {"published": 1, "failed": 1, "held": 1, "waiting": 1}.items():
        card = page.locator(f".phase-count[data-phase='{phase}'] .n")
        assert card.inner_text() == str(count), phase
    assert page.locator("#status tr[data-phase]").count() == 8
    assert "worker-a@host-1" in page.locator("#leases").inner_text()
    assert _image_loaded(page, "#timeline")
    _screenshot(page, "overview", backend)

    page.select_option("select[name=phase]", "failed")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "phase=failed" in page.url
    assert page.locator("#status tr[data-phase]").count() == 1

    page.goto(f"{site}/?days=30")
    page.click(f"#status a[href='/groups/{world.groups['published']}']")
    page.wait_for_load_state()
    assert page.url.endswith(f"/groups/{world.groups['published']}")
    assert "published" in page.locator("h1").inner_text()
    assert _image_loaded(page, "img.figure")
    assert page.locator("#members tr[data-state='imaged']").count() == 3
    download = page.locator("ul.files a").first.get_attribute("href")
    assert download.startswith("/files/") and download.endswith(".fits")
    _screenshot(page, "mosaic", backend)

    page.goto(f"{site}/groups/{world.groups['held']}")
    assert "held" in page.locator("h1").inner_text()
    assert _image_loaded(page, "img.qa")

    page.click("header a[href='/failures']")
    page.wait_for_load_state()
    text = page.locator("#failures").inner_text()
    assert f"reconciler retry {world.groups['failed']}" in text
    assert f"reconciler publish --accept {world.groups['held']}" in text
    _screenshot(page, "failures", backend)
    page.close()
