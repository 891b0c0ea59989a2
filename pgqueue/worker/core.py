"""`Worker`: claims jobs into free slots, runs them, keeps their leases, and stops gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from pgqueue import heartbeat, models, queries, retry
from pgqueue.queue import Queue
from pgqueue.reaper import Reaper
from pgqueue.registry import Registry
from pgqueue.worker import events
from pgqueue.worker.completer import ClaimRequest, Completer, pipeline_for
from pgqueue.worker.context import JobContext
from pgqueue.worker.listener import Listener
from pgqueue.worker.runner import JobRunner, RunningJob, StopReason
from pgqueue.worker.slots import Slots
from pgqueue.worker.transient import TRANSIENT_ERRORS, retry_delay_s

logger = logging.getLogger("pgqueue.worker")

DEFAULT_CONCURRENCY = 3
DEFAULT_LEASE_S = 30.0  # seconds
DEFAULT_POLL_INTERVAL_S = 3.0  # seconds; the fallback when no notification arrives
DEFAULT_SHUTDOWN_GRACE_S = 30.0  # seconds
DEFAULT_BACKLOG_WARN = 10  # runnable jobs
# Writes are batched, so a big worker needs few connections; handlers that hold connections
# for long inside ctx.transaction() may want more (pool_size=).
DEFAULT_MAX_POOL_SIZE = 20
DEFAULT_MAINTENANCE_INTERVAL_S = 60.0  # seconds between retention passes
DEFAULT_VACUUM_EVERY_JOBS = 20_000  # jobs run here between two VACUUMs of the queue's tables
VACUUM_CHECK_INTERVAL_S = 2.0  # seconds between two looks at that count
BACKLOG_CHECK_INTERVAL_S = 10.0  # seconds between backlog checks
BACKLOG_WARN_EVERY_S = 60.0  # seconds between two backlog warnings
SIDE_LOOP_ERROR_DELAY_S = 1.0  # seconds a side loop waits after an error
OWN_POOL_EXTRA = 3  # connections of the worker's own pool beyond its completer's statements
# The session of the worker's own connections. Its statements are few, fixed and indexed, so
# one plan each is right: re-planning the claim on every call cost more than running it
# (0.5 ms of 0.8), and a small worker ran 60% more jobs a second with generic plans. JIT
# never pays for statements this short, yet a claim whose estimate crossed jit_above_cost
# spent 25-40 ms compiling.
QUEUE_SESSION = {"plan_cache_mode": "force_generic_plan", "jit": "off"}


class Worker:
    """Runs jobs from `queues` with the handlers of `registry`.

    Args:
        dsn: the database (a libpq URL); the worker opens its own pool and LISTEN connection.
        registry: the handlers, by kind.
        queues: the queues to take jobs from.
        concurrency: the most jobs run at once.
        lease_s: a claimed job's lease; heartbeats renew it every third of it.
        poll_interval_s: how often to look for jobs when no notification arrives.
        retry_policy: the backoff of failed attempts.
        shutdown_grace_s: on stop, how long running jobs may finish before they are cancelled
            and released without spending their attempt.
        burst: run what is runnable now, then stop.
        backlog_warn: log a warning when more runnable jobs than this wait.
        progress_interval_s: the most often one job's progress is written.
        reap_interval_s: how often expired leases are looked for (default: a quarter lease).
        retention_succeeded: succeeded and cancelled jobs are deleted after this.
        retention_failed: failed jobs are deleted after this.
        maintenance_interval_s: how often retention runs.
        vacuum_every_jobs: VACUUM the queue's tables after this many jobs ran here (0: never).
            Every claimed job leaves a dead entry at the head of the claim index, and the
            claim walks past them until a vacuum; autovacuum looks at a table once a minute at
            best, by which time a busy worker has left a million of them (measured: 17k jobs/s
            fell to 13k within a minute; vacuuming every 20k jobs kept it flat, 0.3-0.5 s each).
        worker_id: this worker's name in `jobs.worker_id` (default: host, pid and a nonce).
        pool_size: connections for handlers' `ctx.transaction()` (default: concurrency + 3,
            at most DEFAULT_MAX_POOL_SIZE), opened only as handlers ask for them, with the
            server's default settings. The worker's own statements run on a second, small
            pool (3 or 4 connections, never more than pool_size) with generic plans and JIT
            off; the listener has one connection more.
        synchronous_commit: False turns off `synchronous_commit` on the worker's connections:
            a commit no longer waits for the WAL flush (about a millisecond each here), and a
            database crash may forget the last fraction of a second of claims and outcomes.
            No job is lost by that (enqueues are the application's own, durable, commits): a
            forgotten claim or outcome only runs the job again, as a lost lease would.
    """

    def __init__(
        self,
        dsn: str,
        registry: Registry,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = DEFAULT_CONCURRENCY,
        lease_s: float = DEFAULT_LEASE_S,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        retry_policy: retry.RetryPolicy | None = None,
        shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S,
        burst: bool = False,
        backlog_warn: int = DEFAULT_BACKLOG_WARN,
        progress_interval_s: float = 1.0,
        reap_interval_s: float | None = None,
        retention_succeeded: timedelta = timedelta(days=7),
        retention_failed: timedelta = timedelta(days=30),
        maintenance_interval_s: float = DEFAULT_MAINTENANCE_INTERVAL_S,
        vacuum_every_jobs: int = DEFAULT_VACUUM_EVERY_JOBS,
        worker_id: str | None = None,
        pool_size: int | None = None,
        synchronous_commit: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if not queues:
            raise ValueError("give at least one queue, e.g. queues=['default']")
        if lease_s <= 0 or poll_interval_s <= 0:
            raise ValueError("lease_s and poll_interval_s must be positive seconds")
        if shutdown_grace_s < 0:
            raise ValueError("shutdown_grace_s must be >= 0")
        self.dsn = dsn
        self.registry = registry
        self.queues = list(dict.fromkeys(queues))
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self.retry_policy = retry_policy or retry.RetryPolicy()
        self.shutdown_grace_s = shutdown_grace_s
        self.burst = burst
        self.backlog_warn = backlog_warn
        self.progress_interval_s = progress_interval_s
        self.reap_interval_s = reap_interval_s or max(0.05, lease_s / 4)
        self.retention_succeeded = retention_succeeded
        self.retention_failed = retention_failed
        self.maintenance_interval_s = maintenance_interval_s
        self.vacuum_every_jobs = vacuum_every_jobs
        self._jobs_since_vacuum = 0
        self.synchronous_commit = synchronous_commit
        self.pool_size = pool_size or min(concurrency + 3, DEFAULT_MAX_POOL_SIZE)
        self.worker_id = worker_id or f"{socket.gethostname()}:{_pid()}:{uuid.uuid4().hex[:8]}"
        self.hooks = events.Hooks()
        for name, hook in registry.event_hooks:
            self.hooks.add(name, hook)
        self._running: dict[int, RunningJob] = {}  # every job whose lease we hold
        self._slots = Slots(concurrency)
        self._runner: JobRunner | None = None
        self._state: Any = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._abort = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._handler_pool: asyncpg.Pool | None = None
        self._listener: Listener | None = None
        self._last_backlog_warning = float("-inf")

    def on(self, name: events.EventName, hook: events.Hook) -> None:
        """Call `hook(event)` on each `name` event: active, progress, completed, failed, stalled."""
        self.hooks.add(name, hook)

    def stop(self, *, immediate: bool = False) -> None:
        """Ask the worker to stop claiming; running jobs get the grace period.

        Args:
            immediate: skip (or cut short) the grace period: running jobs are cancelled and
                released at once, their attempts not spent.
        """
        if not self._stopping.is_set():
            logger.info("worker stopping", extra={"action": "worker_stopping"})
        self._stopping.set()
        if immediate:
            self._abort.set()
        self._wake.set()

    @property
    def running_job_ids(self) -> list[int]:
        """The jobs this worker holds now."""
        return list(self._running)

    @property
    def listener_pid(self) -> int | None:
        """The backend pid of the LISTEN connection, when connected (for tests and tooling)."""
        return self._listener.backend_pid if self._listener else None

    async def run(self) -> None:
        """Run until `stop()` (or, with `burst`, until nothing is runnable)."""
        commit = {} if self.synchronous_commit else {"synchronous_commit": "off"}
        in_flight, batch = pipeline_for(self.concurrency)
        # Its own statements are short and batched: the claim, the completer's statements in
        # flight, and one more for heartbeats, the reaper and the handlers' fenced writes.
        own_size = min(self.pool_size, in_flight + OWN_POOL_EXTRA)
        pool = await _create_pool(
            self.dsn, min_size=1, max_size=own_size, settings={**commit, **QUEUE_SESSION}
        )
        self._pool = pool
        try:
            self._handler_pool = await _create_pool(
                self.dsn, min_size=0, max_size=self.pool_size, settings=commit
            )
        except BaseException:
            await pool.close()
            raise
        completer = Completer(pool, handoff=self, max_batch=batch, max_in_flight=in_flight)
        self._listener = Listener(
            self.dsn, self.queues, self._wake.set, ping_interval_s=self.poll_interval_s
        )
        self._runner = JobRunner(pool, self.registry, self.retry_policy, self.hooks, completer)
        logger.info(
            "worker %s started: queues=%s concurrency=%d",
            self.worker_id,
            ",".join(self.queues),
            self.concurrency,
            extra={"action": "worker_started", "worker_id": self.worker_id},
        )
        try:
            async with self.registry.lifespan() as state:
                self._state = state
                side_tasks = [
                    asyncio.create_task(self._listener.run(), name="pgqueue-listener"),
                    asyncio.create_task(completer.run(), name="pgqueue-completer"),
                    asyncio.create_task(
                        self._side_loop("heartbeat", self._heartbeat_once, self.lease_s / 3),
                        name="pgqueue-heartbeat",
                    ),
                    asyncio.create_task(
                        self._side_loop("reaper", self._reap_once, self.reap_interval_s),
                        name="pgqueue-reaper",
                    ),
                    asyncio.create_task(
                        self._side_loop(
                            "maintenance", self._maintain_once, self.maintenance_interval_s
                        ),
                        name="pgqueue-maintenance",
                    ),
                    asyncio.create_task(
                        self._side_loop("backlog", self._check_backlog, BACKLOG_CHECK_INTERVAL_S),
                        name="pgqueue-backlog",
                    ),
                    asyncio.create_task(
                        self._side_loop("vacuum", self._vacuum_if_busy, VACUUM_CHECK_INTERVAL_S),
                        name="pgqueue-vacuum",
                    ),
                ]
                supervisor = asyncio.create_task(
                    self._supervise(side_tasks), name="pgqueue-supervisor"
                )
                try:
                    await self._claim_loop()
                    await self._drain()
                finally:
                    supervisor.cancel()
                    for task in side_tasks:
                        task.cancel()
                    await asyncio.gather(supervisor, *side_tasks, return_exceptions=True)
        finally:
            await asyncio.gather(pool.close(), self._handler_pool.close())
            self._pool = self._handler_pool = None
            logger.info("worker %s stopped", self.worker_id, extra={"action": "worker_stopped"})

    async def _claim_loop(self) -> None:
        assert self._pool is not None
        failures = 0
        while not self._stopping.is_set():
            if self._slots.free <= 0:
                # Every slot is busy: sleep until one frees rather than polling the database.
                self._slots.freed.clear()
                await _wait_any(self._slots.freed, self._stopping)
                continue
            self._wake.clear()
            # Slots are taken before the claim, so the worker never holds more jobs than its
            # concurrency, whatever else (the completer's hand-off) claims meanwhile.
            taken = self._slots.take_all()
            try:
                async with self._pool.acquire() as conn:
                    records = await conn.fetch(
                        queries.CLAIM_JOBS, self.queues, taken, self.worker_id, self.lease_s
                    )
                failures = 0
            except Exception as exc:  # the claim loop must outlive any database trouble
                self._slots.give_back(taken)
                failures += 1
                delay = min(self.poll_interval_s, retry_delay_s(failures))
                log = logger.warning if isinstance(exc, TRANSIENT_ERRORS) else logger.exception
                log(
                    "claim failed (%s); retrying in %.2fs",
                    exc,
                    delay,
                    extra={"action": "claim_failed"},
                )
                await _wait_any(self._stopping, timeout=delay)
                continue
            self._slots.give_back(taken - len(records))
            self._start_all(records)
            if len(records) == taken:
                continue  # maybe more are waiting: claim again at once
            if self.burst:
                if not self._running:
                    return  # nothing runnable was left, and every outcome is written
                self._slots.freed.clear()
                await _wait_any(self._slots.freed, self._stopping)
                continue
            # Jittered so that many idle workers do not poll in lockstep.
            timeout = self.poll_interval_s * random.uniform(0.8, 1.0)
            await _wait_any(self._wake, self._stopping, timeout=timeout)

    def reserve(self, completing: Sequence[int]) -> ClaimRequest | None:
        """The completer's hand-off: claim jobs for the slots these completions free."""
        if self._stopping.is_set():
            return None
        pledged = []
        for job_id in completing:
            running = self._running.get(job_id)
            if running is not None and running.holds_slot:
                running.holds_slot = False  # its slot passes to what the statement claims
                pledged.append(job_id)
        if self.burst and not pledged:
            return None
        return ClaimRequest(
            queues=self.queues,
            worker_id=self.worker_id,
            lease_s=self.lease_s,
            pledged=tuple(pledged),
            reserved=self._slots.take_all(),
        )

    def deliver(self, request: ClaimRequest, claimed: list[asyncpg.Record], ok: bool) -> None:
        """The completer's hand-off: start the claimed jobs in the slots set aside for them."""
        if not ok:
            # Nothing was written: the batch's jobs keep their slots while it is retried.
            for job_id in request.pledged:
                running = self._running.get(job_id)
                if running is not None and running.task is not None and not running.task.done():
                    running.holds_slot = True
                else:
                    self._slots.give_back(1)
            self._slots.give_back(request.reserved)
            return
        self._slots.give_back(request.limit - len(claimed))
        self._start_all(claimed)
        if request.limit:
            # Full hand-off: the queue is busy, look again. Short one: the claim ran in the
            # completing statement's snapshot, so jobs whose concurrency key that completion
            # frees only become claimable after it commits; the claim loop must look then.
            self._wake.set()

    def _start_all(self, records: list[asyncpg.Record]) -> None:
        assert self._runner is not None
        for record in records:
            self._start(self._runner, models.Job.from_record(record), self._state)

    def _start(self, runner: JobRunner, job: models.Job, state: Any) -> None:
        assert self._pool is not None
        context = JobContext(
            job,
            self._pool,
            state=state,
            progress_interval_s=self.progress_interval_s,
            on_progress=self._on_progress,
            handler_pool=self._handler_pool,
        )
        running = RunningJob(
            job=job, context=context, lease_deadline=time.monotonic() + self.lease_s
        )
        running.task = asyncio.create_task(runner.run(running), name=f"pgqueue-job-{job.id}")
        self._running[job.id] = running
        running.task.add_done_callback(lambda _task: self._finished(job.id))

    async def _on_progress(self, job: models.Job, value: dict[str, Any]) -> None:
        if self.hooks.wants("progress"):
            await self.hooks.emit(events.Event("progress", job.id, job=job, progress=value))

    def _finished(self, job_id: int) -> None:
        running = self._running.pop(job_id, None)
        if running is None:
            return
        self._jobs_since_vacuum += 1
        if running.holds_slot:
            running.holds_slot = False
            self._slots.give_back(1)
        if not self._running:
            # A burst worker's claim loop may be waiting for this: its slots came back
            # (through the hand-off) before the last jobs had left `_running`.
            self._slots.freed.set()
        if running.task is not None and not running.task.cancelled():
            exc = running.task.exception()
            if exc is not None:  # JobRunner.run never raises; if it did, it is a bug
                logger.error(
                    "job %s runner crashed",
                    job_id,
                    exc_info=exc,
                    extra={"action": "runner_crashed"},
                )

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period, then cancel and release the rest.

        Repeated until nothing runs: a hand-off claimed before the stop may start jobs while
        the others are being released; those are cancelled (and released) in the next round.
        """
        deadline = time.monotonic() + self.shutdown_grace_s
        announced = False
        while tasks := [r.task for r in self._running.values() if r.task is not None]:
            left_s = deadline - time.monotonic()
            if left_s > 0 and not self._abort.is_set():
                if not announced:
                    announced = True
                    logger.info(
                        "waiting up to %.1fs for %d running job(s)",
                        left_s,
                        len(tasks),
                        extra={"action": "worker_draining"},
                    )
                all_done = asyncio.ensure_future(asyncio.wait(tasks))
                await _wait_any_future(all_done, self._abort, timeout=left_s)
                all_done.cancel()
            for running in list(self._running.values()):
                running.stop_reason = StopReason.SHUTDOWN
                if running.task is not None:
                    running.task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, tasks: list[asyncio.Task[None]]) -> None:
        # Side loops never return on their own; if one does, the worker cannot keep its
        # promises (leases, wake-ups), so it stops rather than limp on.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = None if task.cancelled() else task.exception()
            logger.error(
                "%s stopped unexpectedly; stopping the worker",
                task.get_name(),
                exc_info=exc,
                extra={"action": "side_task_died"},
            )
        self.stop()

    async def _side_loop(
        self, name: str, once: Callable[[], Awaitable[None]], interval_s: float
    ) -> None:
        while True:
            try:
                await once()
            except Exception as exc:  # a side loop survives anything a database can throw
                log = logger.warning if isinstance(exc, TRANSIENT_ERRORS) else logger.exception
                log("%s failed: %s", name, exc, extra={"action": f"{name}_failed"})
                await asyncio.sleep(min(interval_s, SIDE_LOOP_ERROR_DELAY_S))
                continue
            await asyncio.sleep(interval_s)

    async def _heartbeat_once(self) -> None:
        assert self._pool is not None
        now = time.monotonic()
        # A lease we could not renew in time may belong to someone else by now: stop the
        # handler before it does more work for nothing (its writes would be refused anyway).
        for running in list(self._running.values()):
            if now > running.lease_deadline and not running.outcome_written:
                self._cancel(running, StopReason.LEASE_LOST)
        # A job whose outcome is written is no longer running: renewing it would fail and
        # read as a lost lease.
        held = [
            r for r in self._running.values() if r.stop_reason is None and not r.outcome_written
        ]
        if not held:
            return
        leases = [
            heartbeat.HeldLease(r.job.id, r.lease_token, r.context.take_pending_progress())
            for r in held
        ]
        sent_at = time.monotonic()
        async with self._pool.acquire() as conn:
            renewal = await heartbeat.renew(conn, leases, self.lease_s)
        for job_id in renewal.renewed:
            if job_id in self._running:
                self._running[job_id].lease_deadline = sent_at + self.lease_s
        for job_id in renewal.cancel_requested:
            if job_id in self._running:
                self._cancel(self._running[job_id], StopReason.CANCEL_REQUESTED)
        for job_id in renewal.lost:
            if job_id in self._running:
                self._cancel(self._running[job_id], StopReason.LEASE_LOST)

    def _cancel(self, running: RunningJob, reason: StopReason) -> None:
        if running.stop_reason is None and running.task is not None:
            running.stop_reason = reason
            running.task.cancel()

    async def _reap_once(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            reaped = await Reaper(self.retry_policy).run_once(conn)
        for job in reaped:
            await self.hooks.emit(
                events.Event(
                    "stalled",
                    job.id,
                    error="lease expired",
                    will_retry=job.state is models.JobState.QUEUED,
                )
            )
        if any(job.state is models.JobState.QUEUED for job in reaped):
            self._wake.set()

    async def _maintain_once(self) -> None:
        assert self._pool is not None
        deleted = await Queue(self._pool).purge_finished(
            succeeded_older_than=self.retention_succeeded, failed_older_than=self.retention_failed
        )
        if deleted:
            logger.info(
                "retention deleted %d finished job(s)", deleted, extra={"action": "retention"}
            )

    async def _vacuum_if_busy(self) -> None:
        if not self.vacuum_every_jobs or self._jobs_since_vacuum < self.vacuum_every_jobs:
            return
        assert self._pool is not None
        self._jobs_since_vacuum = 0
        started = time.monotonic()
        async with self._pool.acquire() as conn:
            # SKIP_LOCKED: when another worker (or autovacuum) is at it, this one is not needed.
            # A role that does not own the tables gets a warning from the server, not an error.
            await conn.execute(queries.VACUUM_QUEUE_TABLES)
        logger.info(
            "vacuumed the queue's tables in %.2fs",
            time.monotonic() - started,
            extra={"action": "vacuum"},
        )

    async def _check_backlog(self) -> None:
        assert self._pool is not None
        waiting = await Queue(self._pool).count_waiting(self.queues)
        now = time.monotonic()
        if waiting > self.backlog_warn and now - self._last_backlog_warning >= BACKLOG_WARN_EVERY_S:
            self._last_backlog_warning = now
            logger.warning(
                "backlog: %d runnable jobs waiting (threshold %d)",
                waiting,
                self.backlog_warn,
                extra={"action": "backlog", "waiting": waiting},
            )


async def _create_pool(
    dsn: str, *, min_size: int, max_size: int, settings: dict[str, str]
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, server_settings=settings, reset=_keep_session
    )
    assert pool is not None
    return pool


async def _keep_session(_conn: asyncpg.Connection) -> None:
    # asyncpg's default reset runs `RESET ALL; UNLISTEN *; ...` on every release: one more
    # round trip per statement, which halved a small worker's throughput. The worker's
    # connections carry no session state to reset (its locks are transaction-scoped, LISTEN has
    # a connection of its own); an open transaction is still rolled back by asyncpg itself.
    # Handlers that change settings inside ctx.transaction() must use SET LOCAL.
    return None


async def _wait_any(*flags: asyncio.Event, timeout: float | None = None) -> None:
    """Return when any of `flags` is set, or after `timeout` seconds."""
    waiters = [asyncio.ensure_future(flag.wait()) for flag in flags]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)


async def _wait_any_future(
    future: asyncio.Future[Any], flag: asyncio.Event, *, timeout: float
) -> None:
    """Return when `future` is done, `flag` is set, or `timeout` seconds passed."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(flag.wait())
    try:
        await asyncio.wait([future, waiter], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _pid() -> int:
    return os.getpid()
