"""`ctx.checkpoint`: a step's value stored once, by the attempt that ran it, fenced by its
lease, and read by every later attempt of the job instead of running the step again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from pgqueue import (
    JobContext,
    JobState,
    LeaseLost,
    Queue,
    Registry,
    RetryPolicy,
    queries,
    store,
)
from tests.integration.conftest import WorkerFactory
from tests.support.ports import LOOPBACK
from tests.support.proxy import FreezableProxy
from tests.support.wait import wait_for

KIND = "paid.call"
LEASE_S = 30.0


async def _claim(pool: asyncpg.Pool, lease_s: float = LEASE_S) -> JobContext:
    (job,) = await store.claim(pool, store.ClaimRequest(["default"], [KIND], 1, "w", lease_s))
    return JobContext(job, pool, lease_s=lease_s)


async def _stored(pool: asyncpg.Pool) -> list[tuple[int, str, bytes]]:
    rows = await pool.fetch("SELECT job_id, name, value FROM pgqueue.checkpoints ORDER BY 1, 2")
    return [(r["job_id"], r["name"], r["value"]) for r in rows]


class Step:
    """A step that counts its calls and returns `value`."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        return self.value


async def test_a_step_runs_once_and_later_attempts_get_its_value(
    queue: Queue, running_worker: WorkerFactory
) -> None:
    registry = Registry()
    step = Step({"image": "paid-1", "size": [1280, 720]})
    seen: list[Any] = []

    @registry.handler(KIND)
    async def handler(ctx: JobContext) -> Any:
        value = await ctx.checkpoint("answer", step)
        seen.append(value)
        if ctx.attempt < 3:
            raise RuntimeError(f"the media store failed (attempt {ctx.attempt})")
        return value

    job = await queue.enqueue(KIND, max_attempts=3)
    async with running_worker(registry):
        await wait_for(lambda: _state(queue, job.id, JobState.SUCCEEDED), timeout=10)
    assert step.calls == 1
    assert seen == [step.value] * 3
    done = await queue.get(job.id)
    assert done is not None and done.attempts == 3 and done.result == step.value


async def _state(queue: Queue, job_id: int, state: JobState) -> bool:
    job = await queue.get(job_id)
    return job is not None and job.state == state


async def test_bytes_are_kept_exactly_and_json_comes_back_as_stored(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    job = await queue.enqueue(KIND)
    ctx = await _claim(pool)
    data = b"\x89PNG\r\n\x1a\n\x00" + os.urandom(1 << 20)  # NULs and a megabyte
    assert await ctx.checkpoint_bytes("image", Step(data)) == data
    # The first attempt sees what later ones will: the value decoded from what was stored.
    assert await ctx.checkpoint("meta", Step(("png", 1.5, None))) == ["png", 1.5, None]
    stored = await _stored(pool)
    assert stored == [(job.id, "image", data), (job.id, "meta", b'["png", 1.5, null]')]

    # The next attempt (the lease released, the job claimed again) runs neither step.
    await store.release(pool, [store.HeldLease(job.id, ctx.job.lease_token or 0)])
    again = await _claim(pool)
    assert again.job.lease_token != ctx.job.lease_token
    image, meta = Step(b"other"), Step(["other"])
    assert await again.checkpoint_bytes("image", image) == data
    assert await again.checkpoint("meta", meta) == ["png", 1.5, None]
    assert image.calls == meta.calls == 0


async def test_a_lost_lease_runs_no_step_and_stores_nothing(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.enqueue(KIND)
    ctx = await _claim(pool, lease_s=0.2)
    await wait_for(lambda: _reap_all(pool), timeout=5)  # someone else's job now
    step = Step(b"paid")
    with pytest.raises(LeaseLost):
        await ctx.checkpoint_bytes("image", step)
    assert step.calls == 0  # found lost before paying


async def _reap_all(pool: asyncpg.Pool) -> bool:
    return bool(await store.reap(pool, RetryPolicy(base_s=0, cap_s=0, jitter=0), batch_size=10))


async def test_a_lease_lost_while_the_step_ran_refuses_its_value(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    job = await queue.enqueue(KIND)
    ctx = await _claim(pool)
    other = Step(b"second")

    async def step() -> bytes:
        # Meanwhile the job is taken from this attempt (a reaper that judged the worker dead)
        # and claimed by another, which stores its own value first.
        await store.release(pool, [store.HeldLease(job.id, ctx.job.lease_token or 0)])
        assert await (await _claim(pool)).checkpoint_bytes("image", other) == b"second"
        return b"first"

    with pytest.raises(LeaseLost):
        await ctx.checkpoint_bytes("image", step)
    assert await _stored(pool) == [(job.id, "image", b"second")]


async def test_the_first_value_stored_stays(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue(KIND)
    ctx = await _claim(pool)
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "slow"

    async def fast() -> str:
        gate.set()
        return "fast"

    # Both read "nothing stored" and run; the second save finds the first's value and returns it.
    first, second = await asyncio.gather(ctx.checkpoint("n", slow), ctx.checkpoint("n", fast))
    assert first == second
    (stored,) = await _stored(pool)
    assert stored[2] == b'"' + first.encode() + b'"'


class _Actions(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.actions.append(getattr(record, "action", ""))


@contextlib.contextmanager
def _logged_actions(name: str) -> Iterator[list[str]]:
    """The `action` of every record the logger `name` emits meanwhile, on a handler of its
    own: an earlier test's logging set-up may stop pgqueue's records from propagating, or
    disable the logger altogether (alembic's `fileConfig` disables every logger existing then).
    """
    logger = logging.getLogger(name)
    handler, disabled = _Actions(), logger.disabled
    logger.addHandler(handler)
    logger.disabled = False
    try:
        yield handler.actions
    finally:
        logger.removeHandler(handler)
        logger.disabled = disabled


class _RestartingProxy(FreezableProxy):
    """A proxy to Postgres that can go away and come back on the same port, as a restarting
    server does: its connections dropped, new ones refused meanwhile."""

    async def start(self, host: str = LOOPBACK) -> None:
        self._server = await asyncio.start_server(self._accept, host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def restart(self, down_s: float) -> None:
        await self.close()
        await asyncio.sleep(down_s)
        await self.start()


async def test_a_database_restart_as_the_value_arrives_does_not_lose_it(
    queue: Queue, db_url: str, pool: asyncpg.Pool
) -> None:
    # The database goes away as the step's paid answer arrives: the save finds its connection
    # dropped and new ones refused, tries again, and stores the value once the server is back.
    job = await queue.enqueue(KIND)
    (claimed,) = await store.claim(pool, store.ClaimRequest(["default"], [KIND], 1, "w", LEASE_S))
    target = urlsplit(db_url)
    proxy = _RestartingProxy(target.hostname or LOOPBACK, target.port or 5432)
    await proxy.start()
    credentials = target.netloc.rpartition("@")[0]  # user (and password), kept as they are
    through = target._replace(netloc=f"{credentials}@{LOOPBACK}:{proxy.port}").geturl()
    restarts: list[asyncio.Task[None]] = []
    try:
        async with asyncpg.create_pool(through, min_size=1, max_size=1) as own:
            ctx = JobContext(claimed, own, lease_s=LEASE_S)

            async def step() -> bytes:
                restarts.append(asyncio.create_task(proxy.restart(down_s=0.3)))
                await asyncio.sleep(0)  # the connections are dropped as the answer arrives
                return b"paid"

            with _logged_actions("pgqueue.worker") as actions:
                assert await ctx.checkpoint_bytes("image", step) == b"paid"
    finally:
        await asyncio.gather(*restarts)
        await proxy.close()
    assert actions and set(actions) == {"checkpoint_retry"}, actions
    assert await _stored(pool) == [(job.id, "image", b"paid")]


async def test_names_are_checked_before_anything_runs(queue: Queue, pool: asyncpg.Pool) -> None:
    await queue.enqueue(KIND)
    ctx = await _claim(pool)
    step = Step(1)
    for name in ("", "x" * 201):
        with pytest.raises(ValueError, match="1-200 characters"):
            await ctx.checkpoint(name, step)
    with pytest.raises(TypeError, match="returned str"):
        await ctx.checkpoint_bytes("image", Step("not bytes"))
    assert step.calls == 0 and await _stored(pool) == []


async def test_checkpoints_go_with_their_job(queue: Queue, pool: asyncpg.Pool) -> None:
    kept, purged = await queue.enqueue(KIND), await queue.enqueue(KIND)
    for _ in range(2):
        ctx = await _claim(pool)
        await ctx.checkpoint("n", Step(ctx.job.id))
    await pool.execute(
        "UPDATE pgqueue.jobs SET state = 'succeeded', finished_at = now() - interval '2 days',"
        " lease_expires_at = NULL WHERE id = $1",
        purged.id,
    )
    deleted = await store.purge_finished(
        pool, succeeded_older_than_s=86400, failed_older_than_s=86400
    )
    assert deleted == 1
    assert [(job_id, name) for job_id, name, _ in await _stored(pool)] == [(kept.id, "n")]
    # A truncated jobs table starts its ids again with RESTART IDENTITY: no checkpoint may
    # outlive it and be read by a new job under an old id.
    await pool.execute("TRUNCATE pgqueue.jobs RESTART IDENTITY")
    assert await _stored(pool) == []


@pytest.mark.parametrize("name", ["READ_CHECKPOINT", "SAVE_CHECKPOINT"])
def test_checkpoint_statements_are_fenced_by_the_lease(name: str) -> None:
    sql = re.sub(r"\s+", " ", getattr(queries, name))
    assert "state = 'running'" in sql and "lease_token = " in sql, name
