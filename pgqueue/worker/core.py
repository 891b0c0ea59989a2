"""`Worker`: puts the parts together, supervises them, and stops gracefully.

listener ──wake──▶ producer ──claims──▶ runner (a task per job) ──outcome──▶ completer
                      ▲                                                         │
                      └──────────── freed slots (or the hand-off's claims) ─────┘
heartbeat: renews every held lease       maintenance: reaper, retention, backlog, vacuum
claim marks: move where claims start past the jobs claimed (pgqueue.worker.marks)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

import asyncpg

from pgqueue import models, schema, store
from pgqueue.database import Database, pooler_hint
from pgqueue.registry import Registry
from pgqueue.worker import events
from pgqueue.worker.completer import Completer, pipeline_for
from pgqueue.worker.config import WorkerConfig
from pgqueue.worker.context import JobContext
from pgqueue.worker.heartbeat import Heartbeat
from pgqueue.worker.held import Phase, RunningJob, StopReason
from pgqueue.worker.listener import Listener
from pgqueue.worker.maintenance import Maintenance
from pgqueue.worker.marks import MarkAdvancer
from pgqueue.worker.outcomes import Outcomes
from pgqueue.worker.producer import ClaimTemplate, Producer
from pgqueue.worker.runner import JobRunner
from pgqueue.worker.scheduler import Scheduler
from pgqueue.worker.slots import Slots
from pgqueue.worker.transient import TRANSIENT_ERRORS, retry_delay_s
from pgqueue.worker.waiting import wait_any

logger = logging.getLogger("pgqueue.worker")

OWN_POOL_EXTRA = 2  # connections of the worker's own pool beyond its completer's statements
STARTUP_PATIENCE_S = 60.0  # how long a starting worker waits for a server to take connections
FLUSH_TIMEOUT_S = 10.0  # seconds a stopping worker waits for outcomes still being written
FLUSH_AFTER_END_S = 1.5  # of a budgeted run: its outcomes are written by its end + this
FLUSH_MIN_S = 0.5
LEAVE_TIMEOUT_S = 2.0  # seconds a stopping worker spends removing its row of pgqueue.workers
# A failed removal is logged, never raised: the row goes stale and is pruned later.
LEAVE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *TRANSIENT_ERRORS)
BUDGET_CHECK_S = 0.25  # how often a worker with a time budget re-reads its claim margin
# The session of the worker's own connections. Its statements are few, fixed and indexed, so
# one plan each is right: re-planning the claim on every call cost more than running it
# (0.5 ms of 0.8), and a small worker ran 60% more jobs a second with generic plans. JIT
# never pays for statements this short, yet a claim whose estimate crossed jit_above_cost
# spent 25-40 ms compiling.
QUEUE_SESSION = {"plan_cache_mode": "force_generic_plan", "jit": "off"}


class Worker:
    """Runs jobs with the handlers of `registry`, as `config` says.

    Args:
        database: the database: a libpq URL, or a `Database` (for a transaction-mode pooler:
            `Database(url, PoolMode.TRANSACTION, direct_url=...)`); the worker opens its own
            pools and connections.
        registry: the handlers, by kind. Only jobs of these kinds are claimed: others stay
            queued for a worker that knows them.
        config: the options (default: `WorkerConfig()`). `PGQUEUE_*` variables are read by
            the CLI and `QueueSettings`, never by a Worker built in code.
    """

    def __init__(
        self, database: str | Database, registry: Registry, config: WorkerConfig | None = None
    ) -> None:
        self.database = Database.of(database)
        self.registry = registry
        self.config = config or WorkerConfig()
        self.worker_id = self.config.resolved_worker_id()
        self.hooks = events.Hooks()
        for name, hook in registry.event_hooks:
            self.hooks.add(name, hook)
        self._running: dict[int, RunningJob] = {}  # every job whose lease we hold
        self._jobs_done = 0
        self.outcomes = Outcomes()
        self._ends_at: float | None = None  # time.monotonic() by which a budgeted run ends
        self._slots = Slots(self.config.concurrency)
        self._producer: Producer | None = None
        self._runner: JobRunner | None = None
        self._state: Any = None
        self._stop_requested = False
        self._abort = asyncio.Event()
        self._idle = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._handler_pool: asyncpg.Pool | None = None
        self._listener: Listener | None = None

    def on(self, name: events.EventName, hook: events.Hook) -> None:
        """Call `hook(event)` on each `name` event: active, progress, completed, failed, stalled."""
        self.hooks.add(name, hook)

    def stop(self, *, immediate: bool = False) -> None:
        """Ask the worker to stop claiming; running jobs get the grace period.

        Args:
            immediate: skip (or cut short) the grace period: running jobs are cancelled and
                released at once, their attempts not spent.
        """
        if not self._stop_requested:
            logger.info("worker stopping", extra={"action": "worker_stopping"})
        self._stop_requested = True
        if self._producer is not None:
            self._producer.stop()
        if immediate:
            self._abort.set()

    @property
    def running_job_ids(self) -> list[int]:
        """The jobs this worker holds now."""
        return list(self._running)

    @property
    def listener_pid(self) -> int | None:
        """The backend pid of the LISTEN connection, when connected (for tests and tooling)."""
        return self._listener.backend_pid if self._listener else None

    @property
    def idle(self) -> asyncio.Event:
        """Set while the worker waits for work with free slots (for tests and tooling)."""
        return self._idle

    async def run(self) -> None:
        """Run until `stop()` (or, with `burst`, until nothing is runnable)."""
        config = self.config
        if config.max_seconds is not None:
            self._ends_at = time.monotonic() + config.max_seconds
        commit = {} if config.synchronous_commit else {"synchronous_commit": "off"}
        own_settings = {**commit, **QUEUE_SESSION}
        in_flight, batch = pipeline_for(config.concurrency)
        # Its own statements are short and batched: the claim, the completer's statements in
        # flight, and one more for the handlers' fenced writes and maintenance.
        own_size = min(config.handler_pool_size, in_flight + OWN_POOL_EXTRA)
        pool = await self._first_pool(own_size, own_settings)
        self._pool = pool
        try:
            # Before anything claims: without the schema every claim would fail, for ever.
            async with pool.acquire() as conn:
                await schema.require(conn)
            self._handler_pool = await _create_pool(
                self.database, min_size=0, max_size=config.handler_pool_size, session=commit
            )
        except BaseException:
            await pool.close()
            raise
        template = ClaimTemplate(config.queues, self.registry.kinds, self.worker_id, config.lease_s)
        producer = Producer(
            pool,
            self._slots,
            template,
            self._start,
            poll_interval_s=config.poll_interval_s,
            burst=config.burst,
            # A budgeted run (a drain) uses its budget on jobs a rate limit holds back; a plain
            # burst run ends with them, as it ends with delayed jobs.
            burst_waits_for_keys=config.burst and config.max_seconds is not None,
            idle=self._idle,
        )
        self._producer = producer
        if self._stop_requested:
            producer.stop()
        completer = Completer(pool, producer, max_batch=batch, max_in_flight=in_flight)
        listen_url = self.database.listen_url
        # Behind a transaction pooler without a direct URL there is nowhere to LISTEN: the
        # producer's poll (and its sleep until the next due job) is then the only wake-up.
        self._listener = (
            Listener(
                listen_url, config.queues, producer.wake, ping_interval_s=config.poll_interval_s
            )
            if listen_url is not None
            else None
        )
        heartbeat = Heartbeat(
            self.database,
            self._running,
            lease_s=config.lease_s,
            interval_s=config.lease_s / 3,
            session=own_settings,
        )
        maintenance = Maintenance(
            pool,
            config,
            self.hooks,
            on_requeued=producer.wake,
            jobs_done=lambda: self._jobs_done,
            presence=self._beat,
        )
        scheduler = (
            Scheduler(
                pool,
                self.registry.periodics,
                default_queue=config.queues[0],
            )
            if self.registry.periodics
            else None
        )
        self._runner = JobRunner(
            pool, self.registry, config.retry_policy, self.hooks, completer, self.outcomes
        )
        logger.info(
            "worker %s started: queues=%s concurrency=%d",
            self.worker_id,
            ",".join(config.queues),
            config.concurrency,
            extra={"action": "worker_started", "worker_id": self.worker_id},
        )
        try:
            async with self.registry.lifespan() as state:
                self._state = state
                side_tasks = [
                    asyncio.create_task(completer.run(), name="pgqueue-completer"),
                    asyncio.create_task(heartbeat.run(), name="pgqueue-heartbeat"),
                    asyncio.create_task(maintenance.run(), name="pgqueue-maintenance"),
                    asyncio.create_task(
                        MarkAdvancer(pool, config.queues).run(), name="pgqueue-claim-marks"
                    ),
                ]
                if self._ends_at is not None:
                    side_tasks.append(
                        asyncio.create_task(self._budget(), name="pgqueue-time-budget")
                    )
                if scheduler is not None:
                    # Due ticks first: a drain (a burst run) must fire them before it looks
                    # for work, or a daemon-less app would never run its periodic jobs.
                    with contextlib.suppress(Exception):  # run() logs and retries it
                        await scheduler.fire_due()
                    side_tasks.append(
                        asyncio.create_task(scheduler.run(), name="pgqueue-scheduler")
                    )
                if self._listener is not None:
                    side_tasks.append(
                        asyncio.create_task(self._listener.run(), name="pgqueue-listener")
                    )
                supervisor = asyncio.create_task(
                    self._supervise(side_tasks), name="pgqueue-supervisor"
                )
                try:
                    await producer.run()
                    producer.stop()  # a burst run's end: no hand-off may claim from here on
                    await self._drain(completer)
                finally:
                    supervisor.cancel()
                    for task in side_tasks:
                        task.cancel()
                    await asyncio.gather(supervisor, *side_tasks, return_exceptions=True)
                    await self._cancel_leftovers()
                    await self._leave()
        finally:
            await asyncio.gather(pool.close(), self._handler_pool.close())
            self._pool = self._handler_pool = None
            logger.info("worker %s stopped", self.worker_id, extra={"action": "worker_stopped"})

    def _beat(self) -> store.WorkerBeat:
        """What this worker says of itself in `pgqueue.workers` (the maintenance chore)."""
        config = self.config
        return store.WorkerBeat(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=config.queues,
            concurrency=config.concurrency,
            running=len(self._running),
            # Three beats missed: the worker is gone (killed, cut off), as its leases are.
            expires_in_s=config.lease_s,
        )

    async def _leave(self) -> None:
        """A clean exit takes the worker's row away, so `workers` stops listing it at once."""
        assert self._pool is not None
        try:
            async with asyncio.timeout(LEAVE_TIMEOUT_S):
                await store.remove_worker(self._pool, self.worker_id)
        except LEAVE_ERRORS as exc:
            logger.warning(
                "could not remove worker %s's row: %s",
                self.worker_id,
                exc,
                extra={"action": "worker_leave_failed"},
            )

    def _start(self, job: models.Job) -> None:
        assert self._runner is not None and self._pool is not None
        context = JobContext(
            job,
            self._pool,
            state=self._state,
            progress_interval_s=self.config.progress_interval_s,
            on_progress=self._on_progress,
            handler_pool=self._handler_pool,
            lease_s=self.config.lease_s,
            transaction_idle_s=self.config.transaction_idle_s,
        )
        running = RunningJob(
            job=job, context=context, lease_deadline=time.monotonic() + self.config.lease_s
        )
        running.task = asyncio.create_task(self._runner.run(running), name=f"pgqueue-job-{job.id}")
        self._running[job.id] = running
        running.task.add_done_callback(lambda _task: self._finished(running))

    async def _on_progress(self, job: models.Job, value: dict[str, Any]) -> None:
        if self.hooks.wants("progress"):
            await self.hooks.emit(events.Event("progress", job.id, job=job, progress=value))

    def _finished(self, running: RunningJob) -> None:
        job_id = running.job.id
        # Only this attempt's entry: its outcome (a retry) is written before its task ends, so
        # this worker may already hold the job's next attempt under the same id, and dropping
        # that one would leave it unrenewed, to lose its lease.
        if self._running.get(job_id) is not running:
            return
        del self._running[job_id]
        self._jobs_done += 1
        if running.task is not None and not running.task.cancelled():
            exc = running.task.exception()
            if exc is not None:  # JobRunner.run never raises; if it did, it is a bug
                logger.error(
                    "job %s runner crashed",
                    job_id,
                    exc_info=exc,
                    extra={"action": "runner_crashed"},
                )

    async def _budget(self) -> None:
        """Stop claiming when the time budget is nearly spent; `_drain` ends the run in time."""
        assert self._ends_at is not None
        while True:
            claim_until = self._ends_at - self.config.claim_margin_s(self.outcomes.mean_attempt_s)
            left_s = claim_until - time.monotonic()
            if left_s <= 0:
                break
            # Re-read now and then: the margin follows the attempts that finish meanwhile.
            await asyncio.sleep(min(left_s, BUDGET_CHECK_S))
        logger.info(
            "time budget: %.1fs left, no more claims",
            self._ends_at - time.monotonic(),
            extra={"action": "worker_budget_spent"},
        )
        self.stop()
        await asyncio.Event().wait()  # a side task: it must not return while the worker runs

    async def _drain(self, completer: Completer) -> None:
        """Let running jobs finish within the grace period, cancel and release the rest, and
        write every outcome still pending before the completer stops.

        Repeated until nothing runs: a hand-off claimed before the stop may start jobs while
        the others are being released; those are cancelled (and released) in the next round.
        """
        deadline = time.monotonic() + self.config.shutdown_grace_s
        if self._ends_at is not None:
            deadline = min(deadline, self._ends_at)
        announced = False
        while handlers := [r for r in self._running.values() if r.phase is Phase.RUNNING]:
            left_s = deadline - time.monotonic()
            if left_s > 0 and not self._abort.is_set():
                if not announced:
                    announced = True
                    logger.info(
                        "waiting up to %.1fs for %d running job(s)",
                        left_s,
                        len(handlers),
                        extra={"action": "worker_draining"},
                    )
                tasks = tuple(r.task for r in handlers if r.task is not None)
                all_done = asyncio.ensure_future(asyncio.wait(tasks))
                await wait_any(self._abort, futures=(all_done,), timeout=left_s)
                all_done.cancel()
                continue
            for running in handlers:
                running.cancel(StopReason.SHUTDOWN)
            await asyncio.gather(
                *(r.task for r in handlers if r.task is not None), return_exceptions=True
            )
        # Successes handed to the completer, and the releases just made, are written before
        # the completer stops: cancelling it with completions pending left those jobs running
        # under a live lease, to be reaped later at the cost of an attempt.
        flush_s = FLUSH_TIMEOUT_S
        if self._ends_at is not None:
            # A budgeted run (a drain inside an HTTP request) answers soon after its end.
            flush_s = min(
                flush_s, max(FLUSH_MIN_S, self._ends_at + FLUSH_AFTER_END_S - time.monotonic())
            )
        if not await completer.flush(flush_s):
            logger.warning(
                "outcomes still unwritten after %.1fs; their leases will expire",
                flush_s,
                extra={"action": "flush_timeout"},
            )

    async def _cancel_leftovers(self) -> None:
        # Tasks past their outcome (running hooks) are waited for; any left are cancelled.
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=FLUSH_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, tasks: list[asyncio.Task[None]]) -> None:
        # Side tasks never return on their own; if one does, the worker cannot keep its
        # promises (leases, wake-ups, outcomes), so it stops rather than limp on.
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

    async def _first_pool(self, size: int, session: dict[str, str]) -> asyncpg.Pool:
        """The worker's own pool; while no server takes connections (a failover: the old
        primary gone, the new one not yet promoted), retried for STARTUP_PATIENCE_S.

        Without this a worker (re)started during a failover exits, and its supervisor's
        backoff keeps it down long after the new primary is up. A stop request, a budgeted
        run's end, or a non-transient error (a refused password, no such database) ends the
        wait at once.
        """
        give_up_at = time.monotonic() + STARTUP_PATIENCE_S
        if self._ends_at is not None:
            give_up_at = min(give_up_at, self._ends_at)
        failures = 0
        while True:
            try:
                return await _create_pool(self.database, min_size=1, max_size=size, session=session)
            except TRANSIENT_ERRORS as exc:
                failures += 1
                delay_s = retry_delay_s(failures)
                late = time.monotonic() + delay_s > give_up_at
                # A pooler refusing our startup settings is a configuration error (class 08
                # too): say so now (the CLI names the setting), waiting would not change it.
                if self._stop_requested or late or pooler_hint(exc) is not None:
                    raise
                logger.warning(
                    "cannot connect to the database (%s); retrying in %.2fs",
                    exc,
                    delay_s,
                    extra={"action": "connect_retry"},
                )
                await asyncio.sleep(delay_s)


async def _create_pool(
    database: Database, *, min_size: int, max_size: int, session: dict[str, str]
) -> asyncpg.Pool:
    return await database.create_pool(
        session=session, min_size=min_size, max_size=max_size, reset=_keep_session
    )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    # asyncpg's default reset runs `RESET ALL; UNLISTEN *; ...` on every release: one more
    # round trip per statement, which halved a small worker's throughput. The worker's
    # connections carry no session state to reset (its locks are transaction-scoped, LISTEN has
    # a connection of its own); an open transaction is still rolled back by asyncpg itself.
    # Handlers that change settings inside ctx.transaction() must use SET LOCAL.
    return None
