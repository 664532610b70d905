"""Prometheus metrics: a real ``reconciler run --metrics-port`` scraped during real passes,
on both backends; the values move as the work is done."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from reconciler.db.engine import make_engine
from tests.integration.test_workers import (
    published,
    service_config,
    setup_window,
    start_worker,
    wait_for,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_during_real_passes(db_url, tmp_path):
    engine = make_engine(db_url)
    keys, group = setup_window(engine, 3)
    config = service_config(tmp_path, db_url)
    # Convert is slow enough to be caught running, and one fails once and is retried.
    (tmp_path / "work" / "behaviour.json").write_text(
        json.dumps(
            {
                "convert": {"sleep": 1.5},
                f"convert obs:{keys[1]}": {"sleep": 1.5, "fail": "temporary", "fail_times": 1},
            }
        )
    )
    port = _free_port()
    service = start_worker(config, "--metrics-port", str(port))
    try:
        wait_for(lambda: _answers(port), timeout=60, what="the metrics endpoint")
        first = scrape(port)
        assert value(first, "reconciler_database_up") == 1.0
        assert value(first, "reconciler_lag_seconds") > 0
        wait_for(lambda: _leases(port) >= 1, timeout=60, what="an action under lease")
        wait_for(lambda: published(engine, group), timeout=120, what="the mosaic published")
        wait_for(
            lambda: (
                value(scrape(port), "reconciler_actions_total", kind="publish", outcome="done") == 1
            ),
            timeout=30,
            what="the publish counted",
        )
        last = scrape(port)
    finally:
        service.send_signal(signal.SIGTERM)
        output = service.communicate(timeout=60)[0].decode()
        engine.dispose()
    assert service.returncode == 0, output

    assert value(last, "reconciler_actions_total", kind="convert", outcome="done") == 3
    assert value(last, "reconciler_actions_total", kind="convert", outcome="retry") == 1
    assert value(last, "reconciler_action_duration_seconds_count", kind="convert") == 4
    assert value(last, "reconciler_action_duration_seconds_sum", kind="convert") >= 4 * 1.5
    assert value(last, "reconciler_pass_duration_seconds_count") > value(
        first, "reconciler_pass_duration_seconds_count"
    )
    assert value(last, "reconciler_last_pass_end_timestamp_seconds") > 0
    assert value(last, "reconciler_mosaic_groups", phase="published") == 1
    assert value(last, "reconciler_lag_seconds") == 0
    assert value(last, "reconciler_queue_actions", state="failed") == 0
    assert value(last, "reconciler_queue_actions", state="running") == 0


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def _leases(port: int) -> float:
    """Actions under lease, summed over the workers."""
    return sum(v for (name, _), v in scrape(port).items() if name == "reconciler_leases_held")
