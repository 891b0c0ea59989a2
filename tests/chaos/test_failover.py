"""Chaos: the primary fails over under load, on a real pg_auto_failover cluster.

The test owns the cluster (tests/support/autofailover.py: a monitor, a primary and a
synchronous standby, each a local Postgres on a port of its own), a fake Seedream on loopback,
and the service as real processes: `python -m service api` and two `python -m service worker`,
all given the cluster's multi-host URL (`...?target_session_attrs=read-write`), as is
`python -m alembic` and `python -m service create-token`. While clients create and generate
projects through the API, the primary goes away: `pg_autoctl perform failover` in one run, a
kill -9 of the primary's keeper and Postgres (the machine lost) in the other. Nothing is
restarted for the service. Then:

- every generate the API acknowledged (202) has its jobs on the new primary;
- no job ran twice at once: no two upstream calls of one job overlap in time, and each shot's
  Idempotency-Key was charged once;
- every shot of every acknowledged generate ends `success`;
- meanwhile the API answers 503 `database_unavailable` (or 429), never a 500;
- the API answers again, and both workers run jobs again, within a lease plus a few seconds
  of the new primary taking writes; so does a third worker started while no node took writes
  (in the kill -9 run);
- the workers' LISTEN came back: with a 30 s poll, six shots asked for after the failover
  start at once on both workers (three each, the upstream holding every call).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.service.support import project_body
from tests.support import autofailover, db, failover_loss, settings
from tests.support.autofailover import Cluster
from tests.support.ports import free_port
from tests.support.processes import Process, Processes, python_command, run, wait_ready
from tests.support.upstream import FakeUpstream, running
from tests.support.wait import wait_for

LEASE_S = 3.0
POLL_INTERVAL_S = 30.0  # far longer than the test waits for a wake-up: only NOTIFY wakes
RECONNECT_S = LEASE_S + 5.0  # the promise: back within a lease plus a few seconds
WAKE_S = 5.0  # shots asked for on an idle fleet start within this (the poll is 30 s)
SHOTS = 3  # per project, at most STORYBOARD_CONCURRENCY at once: a project per slot set
CLIENTS = 3  # concurrent clients creating and generating projects
UPSTREAM_LATENCY_S = 0.3
WORKER_CONCURRENCY = 3
STARTUP_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 90.0
PROMOTION_TIMEOUT_S = 60.0

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The module's cluster, migrated; each test finds it healthy (a killed node rejoined)."""
    try:
        autofailover.check_available()
    except autofailover.Unavailable as exc:
        pytest.skip(f"no pg_auto_failover: {exc} (make system-deps installs it, as root)")
    harness = Processes(tmp_path_factory.mktemp("cluster-logs"))
    with autofailover.cluster_directory() as base:
        made = Cluster(base, harness)
        try:
            asyncio.run(made.start())
            db.migrate(made.url)  # alembic, through the multi-host URL
            yield made
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{harness.logs()}") from None
        finally:
            autofailover.stop(made)
            harness.close()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running(latency_s=UPSTREAM_LATENCY_S) as fake:
        yield fake


@pytest.fixture
def service_env(cluster: Cluster, upstream: FakeUpstream, tmp_path: Path) -> dict[str, str]:
    return settings.service_env(
        cluster.url,
        tmp_path / "media",
        upstream,
        **{
            **settings.WORKER_ENV,
            "PGQUEUE_LEASE_S": str(LEASE_S),
            "PGQUEUE_POLL_INTERVAL_S": str(POLL_INTERVAL_S),
            # A shot may lose its lease in the switch (the attempt counts at claim) and then
            # meet a 409 while its first call is still answered upstream: room for both.
            "PGQUEUE_MAX_ATTEMPTS": "5",
        },
    )


@pytest.fixture
async def api(
    cluster: Cluster, processes: Processes, service_env: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """`python -m service api` on the cluster, and a client on it once it is ready."""
    for node in cluster.nodes:  # the previous test may have killed one: it rejoins first
        if node.killed:
            await cluster.restart(node)
    await cluster.wait_healthy()
    port = free_port()
    process = processes.service("api", "--port", str(port), name="api", env=service_env)
    url = f"http://127.0.0.1:{port}"
    await wait_ready(f"{url}/readyz", process, timeout=STARTUP_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


def _token(env: dict[str, str], user: str) -> dict[str, str]:
    output = run(
        python_command("-m", "service", "create-token", "--user", user, "--tier", "pro"),
        env={**settings.child_env(), **env},
        timeout=STARTUP_TIMEOUT_S,
    )
    return {"Authorization": f"Bearer {output.strip().splitlines()[-1]}"}


class Load:
    """Clients creating and generating projects through the API until stopped.

    Records what the API acknowledged (each 202's project and job ids, and when) and why the
    other calls were refused: 503s and transport errors during the failover are expected and
    only counted (the test checks that none was a 500).
    """

    def __init__(self, api: httpx.AsyncClient, headers: list[dict[str, str]]) -> None:
        self.api = api
        self.headers = headers
        self.acknowledged: dict[str, tuple[dict[str, str], list[int]]] = {}
        self.acknowledged_at: list[float] = []
        self.refused: Counter[str] = Counter()  # why, e.g. "503 database_unavailable"
        self._stop = asyncio.Event()

    async def _client(self, headers: dict[str, str]) -> None:
        while not self._stop.is_set():
            try:
                project = await self.api.post(
                    "/api/projects", json=project_body(SHOTS, style="failover"), headers=headers
                )
                if project.status_code != 201:
                    self._refused(project)
                    await asyncio.sleep(0.1)  # a pause between refusals, not a wait on a state
                    continue
                project_id = project.json()["id"]
                answer = await self.api.post(
                    f"/api/projects/{project_id}/storyboards/generate", headers=headers
                )
            except httpx.TransportError as exc:
                self.refused[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            if answer.status_code == 202:
                self.acknowledged[project_id] = (headers, answer.json()["job_ids"])
                self.acknowledged_at.append(time.monotonic())
            else:
                self._refused(answer)
            await asyncio.sleep(1.0)  # a steady trickle, not a flood: the fleet keeps up

    def _refused(self, answer: httpx.Response) -> None:
        try:
            code = answer.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "?"
        self.refused[f"{answer.status_code} {code}"] += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        tasks = [asyncio.create_task(self._client(h)) for h in self.headers]
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)


class Sampler:
    """Which workers start jobs, and when, sampled through the multi-host URL until stopped.

    A job's `worker_id` is set only while it runs, so frequent samples of the running jobs
    see every worker at work; `started_at` tells a claim made after a moment from one made
    before it (a dead run's row stays `running` until its lease is reaped).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, dict[str, datetime]]] = []  # (monotonic, worker -> start)
        self._stop = asyncio.Event()

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.url, timeout=2)
                rows = await conn.fetch(
                    "SELECT worker_id, max(started_at) AS started FROM pgqueue.jobs"
                    " WHERE state = 'running' GROUP BY worker_id"
                )
                self.seen.append((time.monotonic(), {r["worker_id"]: r["started"] for r in rows}))
            except Exception:  # any failure during the failover: reconnect
                # (asyncpg may leave a connection cut mid-query unusable: InternalClientError)
                if conn is not None:
                    conn.terminate()
                conn = None
            await asyncio.sleep(0.05)
        if conn is not None:
            await conn.close()

    def workers_since(self, moment: datetime) -> dict[str, float]:
        """Each worker seen running a job it claimed after `moment` (the database's clock,
        which on this one machine is ours), and when (monotonic) it was first seen so."""
        first: dict[str, float] = {}
        for at, workers in self.seen:
            for worker, started in workers.items():
                if started > moment:
                    first.setdefault(worker, at)
        return first

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._stop.set()
            await task


async def _status(
    api: httpx.AsyncClient, project_id: str, headers: dict[str, str]
) -> dict[str, Any] | None:
    try:
        answer = await api.get(f"/api/projects/{project_id}/storyboards/status", headers=headers)
    except httpx.TransportError:
        return None
    return answer.json() if answer.status_code == 200 else None


async def _fail_over(
    cluster: Cluster, how: str, no_primary: Callable[[], object]
) -> tuple[float, datetime]:
    """Make the primary go away (`how`); when the new one took writes (monotonic, and on the
    clock the database shares with us). After a kill, `no_primary` is called while no node
    takes writes."""
    old = await cluster.primary()
    if how == "perform-failover":
        await cluster.perform_failover()
    else:
        await cluster.kill(old)
        no_primary()
        new = next(node for node in cluster.nodes if node is not old)
        await cluster.wait_states({new.name: "wait_primary"}, PROMOTION_TIMEOUT_S)
    promoted, promoted_at = time.monotonic(), datetime.now(UTC)
    assert (await cluster.primary()) is not old
    return promoted, promoted_at


@pytest.mark.parametrize("how", ["perform-failover", "kill-9"])
async def test_a_failover_under_load_loses_nothing(
    how: str,
    cluster: Cluster,
    api: httpx.AsyncClient,
    upstream: FakeUpstream,
    processes: Processes,
    service_env: dict[str, str],
) -> None:
    assert await cluster.synchronous_standby_names() != ""  # commits wait for the standby
    headers = [_token(service_env, f"failover-{n}") for n in range(CLIENTS)]

    def start_worker() -> None:
        workers.append(
            processes.service("worker", "--concurrency", str(WORKER_CONCURRENCY), env=service_env)
        )

    workers: list[Process] = []
    for _ in range(2):
        start_worker()
    load = Load(api, headers)
    sampler = Sampler(cluster.url)
    began = datetime.now(UTC)
    try:
        async with sampler.running(), load.running():
            await wait_for(
                lambda: len(sampler.workers_since(began)) == 2,
                STARTUP_TIMEOUT_S,
                "both workers running jobs before the failover",
            )
            # A worker (re)started while no node takes writes waits for the new primary
            # instead of exiting (a third worker, in the kill -9 run).
            promoted, promoted_at = await _fail_over(cluster, how, start_worker)
            # The API and the workers come back by themselves.
            await wait_for(
                lambda: any(at > promoted for at in load.acknowledged_at),
                RECONNECT_S,
                "a generate acknowledged by the API after the failover",
            )
            api_back_s = min(at for at in load.acknowledged_at if at > promoted) - promoted
            await wait_for(
                lambda: len(sampler.workers_since(promoted_at)) == len(workers),
                RECONNECT_S,
                "every worker running jobs after the failover",
            )
            workers_back_s = max(sampler.workers_since(promoted_at).values()) - promoted
        await _check_everything_done(api, load, cluster)
        await _check_no_job_ran_twice_at_once(upstream, load)
        await _check_the_listeners_resumed(api, upstream, load, processes)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{processes.logs()}") from None
    assert all(worker.poll() is None for worker in workers), processes.logs()
    # While no primary answers the API says so (503 with Retry-After), never a 500.
    assert not [why for why in load.refused if why.startswith("500")], load.refused
    print(
        f"\n{how}: {len(load.acknowledged)} generates acknowledged (refused meanwhile:"
        f" {dict(load.refused)}); API back {api_back_s:.1f}s and every worker"
        f" {workers_back_s:.1f}s after the new primary took writes"
    )


async def _check_everything_done(api: httpx.AsyncClient, load: Load, cluster: Cluster) -> None:
    """Every acknowledged generate's jobs exist, and each of its shots ends `success`."""
    conn = await asyncpg.connect(cluster.url)
    try:
        acknowledged = {job for _, jobs in load.acknowledged.values() for job in jobs}
        found = {
            row["id"]
            for row in await conn.fetch(
                "SELECT id FROM pgqueue.jobs WHERE id = ANY($1::bigint[])", list(acknowledged)
            )
        }
    finally:
        await conn.close()
    assert found == acknowledged, f"acknowledged jobs missing: {sorted(acknowledged - found)}"

    async def all_done() -> bool:
        for project_id, (headers, _) in load.acknowledged.items():
            status = await _status(api, project_id, headers)
            if status is None or not status["done"]:
                return False
        return True

    await wait_for(all_done, SETTLE_TIMEOUT_S, "every acknowledged project done", poll_s=0.5)
    for project_id, (headers, _) in load.acknowledged.items():
        status = await _status(api, project_id, headers)
        assert status is not None and status["status"] == "completed", status


async def _check_no_job_ran_twice_at_once(upstream: FakeUpstream, load: Load) -> None:
    """No two upstream calls of one job overlap in time; each generation was charged once."""
    for project_id in load.acknowledged:
        calls = upstream.calls_for(project_id)
        by_job: dict[int, list[tuple[float, float]]] = {}
        for call in calls:
            assert call.ended is not None, call
            by_job.setdefault(call.job_id, []).append((call.started, call.ended))
        for job_id, spans in by_job.items():
            spans.sort()
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert start >= end, f"job {job_id}: two upstream calls at once: {spans}"
        assert set(upstream.charges_for(project_id).values()) == {1}, project_id


async def _watch(
    api: httpx.AsyncClient, project_id: str, headers: dict[str, str], seen: list[float]
) -> None:
    """Read the project's live stream, noting when each `status` event arrives."""
    path = f"/api/projects/{project_id}/storyboards/events"
    async with api.stream("GET", path, headers=headers, timeout=None) as stream:
        async for line in stream.aiter_lines():
            if line == "event: status":
                seen.append(time.monotonic())


async def _check_the_listeners_resumed(
    api: httpx.AsyncClient, upstream: FakeUpstream, load: Load, processes: Processes
) -> None:
    """With the fleet idle and the poll at 30 s, six shots asked for now start within
    WAKE_S: three per worker (the upstream holds them), so both workers were woken. And the
    API's own LISTEN (live progress) came back: when the held shots finish, a stream watching
    their project tells of it within WAKE_S, not at its 30 s re-read."""
    projects = list(load.acknowledged.items())[: 2 * WORKER_CONCURRENCY // SHOTS]
    upstream.hold()
    before = len(upstream.calls)
    events: list[float] = []
    watcher: asyncio.Task[None] | None = None
    try:
        for project_id, (headers, _) in projects:
            answer = await api.post(
                f"/api/projects/{project_id}/storyboards/generate",
                json={"force": True},
                headers=headers,
            )
            assert answer.status_code == 202, answer.text
        wanted = len(projects) * SHOTS
        await wait_for(
            lambda: len(upstream.calls) - before >= wanted,
            WAKE_S,
            f"{wanted} shots started on an idle fleet (both workers woken by NOTIFY)",
        )
        # A stream of a project that is generating stays open (a done one ends at once).
        watched, (watcher_headers, _) = projects[0]
        watcher = asyncio.create_task(_watch(api, watched, watcher_headers, events))
        await wait_for(lambda: events, STARTUP_TIMEOUT_S, "the stream's first status")
        released = time.monotonic()
        upstream.release()
        await wait_for(
            lambda: any(at > released for at in events),
            WAKE_S,
            "the live stream told of the shots' end (the API's LISTEN is back)",
        )
    finally:
        upstream.release()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def test_a_killed_primary_loses_no_acknowledged_enqueue(cluster: Cluster) -> None:
    # Enqueues straight through the library (16 clients, no API, no workers), for the
    # figures docs/deploying.md quotes: with the synchronous standby every acknowledged commit is on
    # the new primary. (`python -m tests.support.failover_loss` measures the asynchronous case.)
    for node in cluster.nodes:
        if node.killed:
            await cluster.restart(node)
    outcome = await failover_loss.kill_round(cluster)
    assert outcome.synchronous
    assert outcome.acknowledged > 1000, outcome
    assert outcome.lost == 0, outcome
