"""`GET /metrics` on the API: queue gauges equal to `pgqueue.queue_stats`, finished jobs and
their durations from the database, HTTP requests by route template, upstream calls counted
where they are made (an in-process worker, and a worker process on `--metrics-port`), and
`METRICS_TOKEN`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from pgqueue import DoNotRetry, JobContext, JobSpec, Queue, Registry, Worker, WorkerConfig
from service.openapi import openapi_document
from service.settings import ServiceSettings
from tests.integration.test_worker_metrics import Samples, parse, scrape_when, value
from tests.service import support
from tests.support import settings as test_settings
from tests.support.ports import free_port
from tests.support.processes import Processes
from tests.support.upstream import Answer, Call, FakeUpstream, error
from tests.support.wait import wait_for

JOB_KIND = "storyboard.generate"


async def page(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


@pytest.fixture
async def held_worker(db_url: str) -> AsyncIterator[asyncio.Event]:
    """A pgqueue worker in this process whose `test.hold` jobs run until the event is set."""
    release = asyncio.Event()
    registry = Registry()

    @registry.handler("test.noop")
    async def noop(ctx: JobContext) -> None:
        return None

    @registry.handler("test.refuse")
    async def refuse(ctx: JobContext) -> None:
        raise DoNotRetry("no")

    @registry.handler("test.hold")
    async def hold(ctx: JobContext) -> None:
        await release.wait()

    options = {**test_settings.WORKER_OPTIONS, "queues": ["default", "other"], "concurrency": 5}
    worker = Worker(db_url, registry, WorkerConfig(**options))
    task = asyncio.create_task(worker.run())
    try:
        yield release
    finally:
        release.set()
        worker.stop()
        await asyncio.wait_for(task, timeout=15)


async def test_queue_series_come_from_the_database(
    client: httpx.AsyncClient, pool: asyncpg.Pool, queue: Queue, held_worker: asyncio.Event
) -> None:
    # Every state of the view, in two queues: waiting (a kind no worker knows), delayed,
    # active (held), completed, failed, cancelled (before it ran).
    specs = [JobSpec(kind="test.noop") for _ in range(3)]
    specs += [JobSpec(kind="test.refuse"), JobSpec(kind="test.noop", queue="other")]
    specs += [JobSpec(kind="test.unknown"), JobSpec(kind="test.noop", delay=timedelta(hours=1))]
    specs += [JobSpec(kind="test.unknown", queue="other")]
    specs += [JobSpec(kind="test.hold"), JobSpec(kind="test.hold", queue="other")]
    jobs = await queue.enqueue_many(specs)
    await queue.cancel(jobs[-3].id)  # the unknown one of "other": never ran
    view = "SELECT * FROM pgqueue.queue_stats ORDER BY queue"

    async def settled() -> bool:
        rows = await pool.fetch(view)
        return [(r["queue"], r["active"], r["completed"], r["failed"]) for r in rows] == [
            ("default", 1, 3, 1),
            ("other", 1, 1, 0),
        ]

    await wait_for(settled, timeout=15, message="the jobs to reach their states")
    samples = await page(client)
    rows = await pool.fetch(view)
    gauges = {
        (r["queue"], state): float(r[state])
        for r in rows
        for state in ("waiting", "delayed", "active", "completed", "failed", "cancelled")
    }
    # Equal to the view, every queue and state of it, and nothing more.
    assert {
        (dict(labels)["queue"], dict(labels)["state"]): v
        for (name, labels), v in samples.items()
        if name == "pgqueue_jobs"
    } == gauges
    assert gauges[("default", "waiting")] == 1 and gauges[("default", "delayed")] == 1
    assert gauges[("other", "cancelled")] == 1
    assert value(samples, "pgqueue_database_up") == 1

    finished = "pgqueue_jobs_finished_total"
    assert value(samples, finished, queue="default", kind="test.noop", outcome="succeeded") == 3
    assert value(samples, finished, queue="default", kind="test.refuse", outcome="failed") == 1
    assert value(samples, finished, queue="other", kind="test.noop", outcome="succeeded") == 1
    assert value(samples, finished, queue="other", kind="test.unknown", outcome="cancelled") == 1
    # Durations of the jobs that ran; the one cancelled before it started has none.
    count = "pgqueue_job_duration_seconds_count"
    assert value(samples, count, queue="default", kind="test.noop") == 3
    assert value(samples, count, queue="other", kind="test.unknown") == 0
    noop_sum = value(samples, "pgqueue_job_duration_seconds_sum", queue="default", kind="test.noop")
    assert noop_sum is not None and 0 <= noop_sum < 3

    # A later scrape adds only what finished since: the held jobs, once released.
    held_worker.set()

    async def held_done() -> Samples | None:
        later = await page(client)
        done = value(later, finished, queue="default", kind="test.hold", outcome="succeeded")
        return later if done == 1 else None

    later = await wait_for(held_done, timeout=15, message="the held jobs counted")
    assert value(later, finished, queue="default", kind="test.noop", outcome="succeeded") == 3
    assert value(later, finished, queue="other", kind="test.hold", outcome="succeeded") == 1


async def test_a_job_finished_inside_a_long_transaction_is_counted_once_it_commits(
    client: httpx.AsyncClient, pool: asyncpg.Pool, queue: Queue
) -> None:
    # finished_at is the finishing transaction's start; a scrape while that transaction is
    # open must neither skip past it (missing the job for ever) nor count it twice.
    (job,) = await queue.enqueue_many([JobSpec(kind="test.late")])
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE pgqueue.jobs SET state = 'succeeded', finished_at = now(), started_at = now()"
            " WHERE id = $1",
            job.id,
        )
        # Another job finishes meanwhile, committed at once, after the first's finished_at.
        (other,) = await queue.enqueue_many([JobSpec(kind="test.quick")])
        await pool.execute(
            "UPDATE pgqueue.jobs SET state = 'succeeded', finished_at = now(), started_at = now()"
            " WHERE id = $1",
            other.id,
        )
        during = await page(client)
        late = value(
            during, "pgqueue_jobs_finished_total", queue="default", kind="test.late",
            outcome="succeeded",
        )  # fmt: skip
        assert late is None
    labels = {"queue": "default", "outcome": "succeeded"}
    after = await page(client)
    assert value(after, "pgqueue_jobs_finished_total", **labels, kind="test.late") == 1
    assert value(after, "pgqueue_jobs_finished_total", **labels, kind="test.quick") == 1
    again = await page(client)
    assert value(again, "pgqueue_jobs_finished_total", **labels, kind="test.late") == 1


async def test_requests_are_counted_by_route_template(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for _ in range(2):
        missing = await client.get(f"/api/projects/{uuid.uuid4()}", headers=alice)
        assert missing.status_code == 404
    assert (await client.get("/no/such/page")).status_code == 404
    assert (await client.get("/healthz")).status_code == 200
    samples = await page(client)
    requests = "http_requests_total"
    project = "/api/projects/{project_id}"
    assert value(samples, requests, method="GET", route=project, status="404") == 2
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    assert value(samples, requests, method="GET", route="/healthz", status="200") == 1
    assert value(samples, "http_request_duration_seconds_count", method="GET", route=project) == 2
    # No raw path becomes a label value.
    assert not [labels for (_, labels) in samples if ("route", "/no/such/page") in labels]


async def test_the_route_label_is_the_openapi_path(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    # The document's path, as a dashboard joins it with /openapi.json; not `{job_id:int}`.
    assert (await client.get("/api/jobs/987654", headers=alice)).status_code == 404
    regenerate = f"/api/projects/{uuid.uuid4()}/storyboards/7/regenerate"
    assert (await client.post(regenerate, headers=alice)).status_code == 404
    samples = await page(client)
    routes = {
        dict(labels).get("route") for (name, labels) in samples if name == "http_requests_total"
    }
    assert "/api/jobs/{job_id}" in routes
    assert "/api/projects/{project_id}/storyboards/{shot_number}/regenerate" in routes
    assert not [route for route in routes if route and ":" in route], routes
    paths = openapi_document()["paths"]
    assert not [route for route in routes if route not in paths and route != "unmatched"], routes


async def test_every_known_series_is_there_at_zero_from_the_start(
    client: httpx.AsyncClient, queue: Queue, held_worker: asyncio.Event
) -> None:
    response = await client.get("/metrics")
    # No `_created` twin of every counter and histogram child.
    assert "_created" not in response.text
    samples = parse(response.text)
    # The service's own kinds on its queue, every outcome, before any job ended; so
    # `increase(pgqueue_jobs_finished_total{outcome="failed"}[5m])` sees the first failure.
    for kind in ("storyboard.generate", "storyboard.expire", "media.cleanup"):
        for outcome in ("succeeded", "failed", "cancelled"):
            finished = value(
                samples, "pgqueue_jobs_finished_total", queue="default", kind=kind, outcome=outcome
            )
            assert finished == 0, (kind, outcome)
        count = value(samples, "pgqueue_job_duration_seconds_count", queue="default", kind=kind)
        assert count == 0
    for state in ("waiting", "delayed", "active", "completed", "failed", "cancelled"):
        assert value(samples, "pgqueue_jobs", queue="default", state=state) == 0
    assert value(samples, "pgqueue_queue_oldest_waiting_seconds", queue="default") == 0
    assert value(samples, "pgqueue_queue_paused", queue="default") == 0
    for status in ("200", "429", "500", "503", "timeout", "error"):
        assert value(samples, "storyboard_upstream_requests_total", status=status) is not None

    # A kind first seen succeeding has its other outcomes at 0 at once: its first failure,
    # later, is an increase.
    await queue.enqueue_many([JobSpec(kind="test.noop", queue="other")])
    labels = {"queue": "other", "kind": "test.noop"}

    async def counted() -> Samples | None:
        later = await page(client)
        done = value(later, "pgqueue_jobs_finished_total", **labels, outcome="succeeded")
        return later if done == 1 else None

    later = await wait_for(counted, timeout=15, message="the job counted")
    assert value(later, "pgqueue_jobs_finished_total", **labels, outcome="failed") == 0
    assert value(later, "pgqueue_jobs_finished_total", **labels, outcome="cancelled") == 0


async def test_the_oldest_waiting_job_and_pauses_are_gauges(
    client: httpx.AsyncClient, pool: asyncpg.Pool, queue: Queue
) -> None:
    # Nothing runs here: the job waits; its run_at set back a minute stands for a minute's wait.
    (job,) = await queue.enqueue_many([JobSpec(kind="test.waits", queue="slow")])
    await pool.execute(
        "UPDATE pgqueue.jobs SET run_at = now() - interval '60 seconds' WHERE id = $1", job.id
    )
    await queue.pause("slow")
    samples = await page(client)
    waited = value(samples, "pgqueue_queue_oldest_waiting_seconds", queue="slow")
    assert waited is not None and 60 <= waited < 120
    assert value(samples, "pgqueue_queue_paused", queue="slow") == 1
    assert value(samples, "pgqueue_queue_paused", queue="default") == 0


async def test_metrics_token_guards_the_page(settings: ServiceSettings) -> None:
    token = "scrape-" + uuid.uuid4().hex
    async with support.api_client(settings.model_copy(update={"metrics_token": token})) as api:
        assert (await api.get("/metrics")).status_code == 401
        wrong = await api.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        samples = await page(api, Authorization=f"Bearer {token}")
        assert value(samples, "pgqueue_database_up") == 1


async def test_upstream_calls_are_counted_in_the_process_that_makes_them(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
) -> None:
    # The counters are process-wide (other tests in this process add to them): deltas.
    before = await page(client)

    def delta(samples: Samples, name: str, **labels: str) -> float:
        return (value(samples, name, **labels) or 0) - (value(before, name, **labels) or 0)

    refused_once: set[int] = set()

    def script(call: Call) -> Answer | None:
        if call.shot_number not in refused_once:  # each shot: one 429, then an image
            refused_once.add(call.shot_number)
            return error(429, "slow down", retry_after="0")
        return None

    upstream.script = script
    project = (
        await client.post("/api/projects", json=support.project_body(2), headers=alice)
    ).json()
    await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    run_worker(support.http_settings(settings, upstream))
    status = await support.wait_done(client, project["id"], alice)
    assert status["status"] == "completed", status
    after = await page(client)
    name = "storyboard_upstream_requests_total"
    assert delta(after, name, status="429") == 2
    assert delta(after, name, status="200") == 2
    assert delta(after, "storyboard_upstream_request_duration_seconds_count", status="200") == 2


async def test_a_service_worker_process_serves_its_metrics(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    db_url: str,
    media_dir: Path,
    upstream: FakeUpstream,
    processes: Processes,
) -> None:
    project = (
        await client.post("/api/projects", json=support.project_body(3), headers=alice)
    ).json()
    await client.post(f"/api/projects/{project['id']}/storyboards/generate", headers=alice)
    port = free_port()
    env = test_settings.service_env(db_url, media_dir, upstream, **test_settings.WORKER_ENV)
    worker = processes.worker("service.jobs:registry", "--metrics-port", str(port), env=env)
    status = await support.wait_done(client, project["id"], alice, timeout=30)
    assert status["status"] == "completed", status

    def counted(samples: Samples) -> bool:
        labels = {"queue": "default", "kind": JOB_KIND, "outcome": "succeeded"}
        return value(samples, "pgqueue_attempts_finished_total", **labels) == 3

    samples = await scrape_when(port, worker, counted, "the worker's outcomes")
    assert value(samples, "storyboard_upstream_requests_total", status="200") == 3
    assert value(samples, "storyboard_upstream_request_duration_seconds_count", status="200") == 3
    labels = {"queue": "default", "kind": JOB_KIND}
    assert value(samples, "pgqueue_attempt_duration_seconds_count", **labels) == 3
    # Upstream answers not seen are there at 0, for an alert on their increase.
    assert value(samples, "storyboard_upstream_requests_total", status="503") == 0
    # The API's page agrees, from the database.
    api = await page(client)
    finished = value(
        api, "pgqueue_jobs_finished_total", queue="default", kind=JOB_KIND, outcome="succeeded"
    )
    assert finished == 3
    worker.stop()
    assert worker.returncode == 0, worker.tail()


async def test_the_governor_series_are_there_before_anything_happens(
    client: httpx.AsyncClient, queue: Queue
) -> None:
    await queue.set_breaker("upstream", threshold=5, window_s=30, open_s=30)
    await queue.set_adaptive_rate_limit("upstream", ceiling=8, period_s=1.0)
    await queue.set_budget("user:ann", 10)
    samples = await page(client)
    assert value(samples, "pgqueue_rate_limit_allowed", key="upstream") == 8
    assert value(samples, "pgqueue_rate_limit_period_seconds", key="upstream") == 1
    # Every state of the breaker has its series, so an alert on "open" has one to watch.
    states = {
        state: value(samples, "pgqueue_breaker_state", key="upstream", state=state)
        for state in ("closed", "open", "half_open")
    }
    assert states == {"closed": 1, "open": 0, "half_open": 0}
    assert value(samples, "pgqueue_budget_spent", key="user:ann") == 0
    assert value(samples, "pgqueue_budget_amount", key="user:ann") == 10
    assert value(samples, "pgqueue_budget_reserved", key="user:ann") == 0
