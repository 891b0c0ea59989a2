"""The Prometheus alert rules of docs/prometheus/alerts.yml: promtool's own unit tests of them
pass, and every series they read is one the API or a worker really serves (scraped here from the
in-process API and a real `python -m service worker --metrics-port` process), with the labels
their selectors name.

promtool is Debian's `prometheus` package (`make test` installs it, tools/system-deps.sh).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_worker_metrics import scrape_when
from tests.support import settings as test_settings
from tests.support.ports import free_port
from tests.support.processes import Processes
from tests.support.upstream import FakeUpstream
from tests.support.wait import wait_for

RULES_DIR = Path(__file__).resolve().parents[2] / "docs" / "prometheus"
PROMTOOL = shutil.which("promtool")
# Every series of ours has one of these prefixes; anything else in an expression is PromQL.
SERIES = re.compile(r"\b(?:pgqueue|storyboard|http|process)_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b((?:pgqueue|storyboard|http)_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool: `make test` installs Debian's prometheus (as root)"
)

Labels = dict[str, set[frozenset[str]]]  # series name -> the label-name sets of its samples


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def _expressions() -> list[str]:
    # The rules file's `expr:` values (one line, or a `|` block), without promtool's YAML parse.
    text = (RULES_DIR / "alerts.yml").read_text()
    found = re.findall(r"expr: \|\n((?:\s{10}.*\n)+)|expr: (.+)", text)
    return [block or line for block, line in found]


def _labels(page: str) -> Labels:
    labels: Labels = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).add(frozenset(sample.labels))
    return labels


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


async def test_the_rules_read_series_the_service_serves(
    client: httpx.AsyncClient,
    db_url: str,
    media_dir: Path,
    upstream: FakeUpstream,
    processes: Processes,
) -> None:
    expressions = _expressions()
    assert len(expressions) >= 5, expressions
    wanted = {name for expr in expressions for name in SERIES.findall(expr)}
    assert "pgqueue_jobs_finished_total" in wanted and "pgqueue_leases_lost_total" in wanted

    port = free_port()
    env = test_settings.service_env(db_url, media_dir, upstream, **test_settings.WORKER_ENV)
    worker = processes.worker("service.jobs:registry", "--metrics-port", str(port), env=env)
    await scrape_when(port, worker, lambda samples: True, "the worker's metrics server")
    async with httpx.AsyncClient(timeout=5) as http:
        worker_page = (await http.get(f"http://127.0.0.1:{port}/metrics")).text

    async def api_page() -> str | None:
        # The breaker's series appear once the worker has set the breaker up at its start.
        text = (await client.get("/metrics")).text
        return text if "pgqueue_breaker_state{" in text else None

    api = await wait_for(api_page, timeout=20, message="the breaker's series on the API")
    served: Labels = _labels(api)
    for name, sets in _labels(worker_page).items():
        served.setdefault(name, set()).update(sets)
    assert not wanted - served.keys(), sorted(wanted - served.keys())
    for expr in expressions:
        for name, matchers in SELECTOR.findall(expr):
            for label in MATCHER.findall(matchers):
                assert any(label in names for names in served[name]), (name, label)

    # And both pages pass promtool's own lint of the exposition format.
    for page in (api, worker_page):
        linted = subprocess.run(
            [str(PROMTOOL), "check", "metrics"],
            input=page,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert linted.returncode == 0, linted.stdout + linted.stderr
    worker.stop()
    assert worker.returncode == 0, worker.tail()
