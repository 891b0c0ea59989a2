"""`python -m pgqueue.worker MODULE:ATTR --metrics-port P`: a real worker process, scraped over
HTTP; and prometheus-client stays optional for the queue alone.

The worker's registry is this module's `registry` (a child process imports it).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgqueue import DoNotRetry, JobContext, JobSpec, Queue, Registry, Worker
from tests.support import settings
from tests.support.ports import free_port
from tests.support.processes import Process, Processes, completed, python_command
from tests.support.wait import wait_for

REGISTRY = f"{__name__}:registry"
registry = Registry()


@registry.handler("metrics.noop")
async def noop(ctx: JobContext) -> None:
    return None


@registry.handler("metrics.refuse")
async def refuse(ctx: JobContext) -> None:
    raise DoNotRetry("refused on purpose")


@registry.handler("metrics.flaky")
async def flaky(ctx: JobContext) -> str:
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return "second attempt"


@registry.handler("metrics.hold")
async def hold(ctx: JobContext) -> str:
    # The first attempt waits to be taken away (its lease stolen by the test); the retry the
    # reaper schedules then succeeds.
    if ctx.attempt == 1:
        await asyncio.sleep(60)
    return "held"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text page, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the page has no such sample."""
    return samples.get((name, frozenset(labels.items())))


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def start_worker(processes: Processes, db_url: str, port: int, *args: str) -> Process:
    return processes.worker(
        REGISTRY,
        "--metrics-port",
        str(port),
        *args,
        env={**settings.WORKER_ENV, "DATABASE_URL": db_url},
    )


async def scrape_when(
    port: int, process: Process, condition: Callable[[Samples], bool], what: str
) -> Samples:
    """Scrape until `condition` holds (the worker must stay alive meanwhile)."""

    async def check() -> Samples | None:
        process.check_alive()
        try:
            samples = await scrape(port)
        except httpx.TransportError:
            return None  # not listening yet
        return samples if condition(samples) else None

    return await wait_for(check, timeout=20, message=what)


async def test_worker_serves_its_outcomes_by_kind(
    queue: Queue, db_url: str, processes: Processes
) -> None:
    specs = [JobSpec(kind="metrics.noop") for _ in range(5)]
    specs += [JobSpec(kind="metrics.refuse"), JobSpec(kind="metrics.flaky", max_attempts=3)]
    await queue.enqueue_many(specs)
    port = free_port()
    worker = start_worker(processes, db_url, port, "--concurrency", "4")

    def settled(samples: Samples) -> bool:
        finished = value(
            samples, "pgqueue_attempts_finished_total", queue="default", kind="metrics.flaky",
            outcome="succeeded",
        )  # fmt: skip
        noops = value(
            samples, "pgqueue_attempts_finished_total", queue="default", kind="metrics.noop",
            outcome="succeeded",
        )  # fmt: skip
        return finished == 1 and noops == 5

    samples = await scrape_when(port, worker, settled, "every job's outcome counted")
    labels = {"queue": "default"}
    assert value(samples, "pgqueue_attempts_started_total", **labels, kind="metrics.noop") == 5
    assert value(samples, "pgqueue_attempts_started_total", **labels, kind="metrics.flaky") == 2
    assert value(samples, "pgqueue_attempts_started_total", **labels, kind="metrics.refuse") == 1
    finished = "pgqueue_attempts_finished_total"
    assert value(samples, finished, **labels, kind="metrics.refuse", outcome="failed") == 1
    assert value(samples, finished, **labels, kind="metrics.flaky", outcome="retried") == 1
    # Every attempt that ended has a duration: 5 noops, 1 refusal, 2 flaky attempts.
    counts = {
        kind: value(samples, "pgqueue_attempt_duration_seconds_count", **labels, kind=kind)
        for kind in ("metrics.noop", "metrics.refuse", "metrics.flaky")
    }
    assert counts == {"metrics.noop": 5, "metrics.refuse": 1, "metrics.flaky": 2}
    noop_sum = value(samples, "pgqueue_attempt_duration_seconds_sum", **labels, kind="metrics.noop")
    assert noop_sum is not None and 0 < noop_sum < 5
    inf = value(
        samples, "pgqueue_attempt_duration_seconds_bucket", **labels, kind="metrics.noop", le="+Inf"
    )
    assert inf == 5
    assert value(samples, "pgqueue_worker_concurrency") == 4
    assert value(samples, "pgqueue_worker_running_jobs") == 0
    assert value(samples, "pgqueue_leases_lost_total") == 0
    # The page is Prometheus' own format, with the process' standard series beside ours.
    assert value(samples, "process_cpu_seconds_total") is not None

    worker.stop()
    assert worker.returncode == 0, worker.tail()
    assert "metrics on http://127.0.0.1:" in worker.output()


async def test_worker_series_are_there_at_zero_before_any_job(
    db_url: str, processes: Processes
) -> None:
    # An alert on `increase(pgqueue_attempts_finished_total{outcome="failed"}[5m])` sees the
    # first failure only if the series existed (at 0) before it: every queue, kind and
    # outcome the worker knows is on its first page.
    port = free_port()
    worker = start_worker(processes, db_url, port, "--queue", "default", "--queue", "other")
    samples = await scrape_when(port, worker, lambda s: True, "the metrics server to listen")
    for queue in ("default", "other"):
        for kind in registry.kinds:
            labels = {"queue": queue, "kind": kind}
            assert value(samples, "pgqueue_attempts_started_total", **labels) == 0
            for outcome in ("succeeded", "failed", "cancelled", "retried"):
                finished = value(
                    samples, "pgqueue_attempts_finished_total", **labels, outcome=outcome
                )
                assert finished == 0, (labels, outcome)
            assert value(samples, "pgqueue_attempt_duration_seconds_count", **labels) == 0
        for outcome in ("requeued", "failed", "cancelled"):
            assert value(samples, "pgqueue_jobs_reaped_total", queue=queue, outcome=outcome) == 0
    names = {name for name, _ in samples}
    # One name per meaning: the database's job counts are the API's, never a worker's.
    assert not names & {"pgqueue_jobs_finished_total", "pgqueue_job_duration_seconds_count"}
    assert not [name for name in names if name.endswith("_created")], sorted(names)
    worker.stop()
    assert worker.returncode == 0, worker.tail()


async def test_worker_counts_a_lost_lease_and_its_reap(
    queue: Queue, pool: asyncpg.Pool, db_url: str, processes: Processes
) -> None:
    job = await queue.enqueue("metrics.hold", max_attempts=3)
    port = free_port()
    worker = start_worker(processes, db_url, port)
    await scrape_when(
        port,
        worker,
        lambda s: value(s, "pgqueue_worker_running_jobs") == 1,
        "the job to be running",
    )
    # Someone else's claim, as far as the worker can tell: its token no longer matches, so its
    # next heartbeat finds the lease lost; the lease then runs out and the reaper (this
    # worker's own) requeues the job, whose second attempt succeeds.
    await pool.execute(
        "UPDATE pgqueue.jobs SET lease_token = nextval('pgqueue.lease_tokens') WHERE id = $1",
        job.id,
    )
    labels = {"queue": "default", "kind": "metrics.hold"}

    def recovered(samples: Samples) -> bool:
        return value(samples, "pgqueue_attempts_finished_total", **labels, outcome="succeeded") == 1

    samples = await scrape_when(port, worker, recovered, "the reaped job to succeed")
    assert value(samples, "pgqueue_leases_lost_total") == 1
    assert value(samples, "pgqueue_jobs_reaped_total", queue="default", outcome="requeued") == 1
    assert value(samples, "pgqueue_attempts_started_total", **labels) == 2
    # The lost attempt has no outcome of this worker's and no duration.
    assert value(samples, "pgqueue_attempt_duration_seconds_count", **labels) == 1
    worker.stop()
    assert worker.returncode == 0, worker.tail()


async def test_metrics_server_answers_only_metrics(db_url: str, processes: Processes) -> None:
    port = free_port()
    worker = start_worker(processes, db_url, port)
    await scrape_when(port, worker, lambda s: True, "the metrics server to listen")
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 404
        assert (await client.post(f"http://127.0.0.1:{port}/metrics")).status_code == 405
        head = await client.head(f"http://127.0.0.1:{port}/metrics")
        assert head.status_code == 200 and head.content == b""
    # A client that connects and says nothing does not stop the next scrape.
    with socket.create_connection(("127.0.0.1", port)):
        await scrape(port)
    worker.stop()
    assert worker.returncode == 0, worker.tail()


def test_a_taken_port_stops_the_worker_with_the_flag_named(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**settings.child_env(), "DATABASE_URL": db_url}
        done = completed(
            python_command("-m", "pgqueue.worker", REGISTRY, "--metrics-port", str(port)),
            env=env,
            timeout=30,
        )
    assert done.returncode == 2, done.stderr
    assert f"--metrics-port {port}" in done.stderr


def test_without_prometheus_client_the_flag_names_the_extra(tmp_path: Path, db_url: str) -> None:
    # A package that fails to import stands in for an installation without the extra.
    missing = tmp_path / "site" / "prometheus_client"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**settings.child_env(), "DATABASE_URL": db_url, "PYTHONPATH": str(missing.parent)}

    done = completed(
        python_command("-m", "pgqueue.worker", REGISTRY, "--metrics-port", "0", "--burst"),
        env=env,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'pgqueue-durable[metrics]'" in done.stderr

    # The queue alone neither needs nor imports it: a burst worker without the flag runs
    # (on handlers that do not import it either; this module's parser does).
    done = completed(
        python_command("-m", "pgqueue.worker", "tests.acceptance.handlers:registry", "--burst"),
        env=env,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    probe = (
        "import sys, pgqueue, pgqueue.worker.__main__; print('prometheus_client' in sys.modules)"
    )
    done = completed([sys.executable, "-c", probe], env=env, timeout=30)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("bad", [(1.0, 0.5), (), (0.1, 0.1)])
def test_buckets_must_increase(db_url: str, bad: tuple[float, ...]) -> None:
    from pgqueue.metrics import WorkerMetrics

    with pytest.raises(ValueError, match="increasing order"):
        WorkerMetrics(Worker(db_url, registry), buckets=bad)
