"""`Maintenance`: the chores every worker does beside running jobs, as one supervised service.

- reap: running jobs whose lease expired go back to the queue with backoff (or fail once
  their attempts are spent); every worker runs it, one at a time across the fleet;
- retention: old finished jobs are deleted in short batches, and so are the rows nothing
  else would ever delete: concurrency keys no job needs any more (a service keyed by project
  would otherwise keep a row per project for ever), rate-limit keys that hold nothing (a
  throttle on a key without a limit leaves one, per tenant with per-tenant keys), schedules
  no registry has any more, and ended dashboard sessions;
- backlog: a warning when more runnable jobs wait than the threshold;
- vacuum: a busy worker VACUUMs the queue's tables every so many jobs (see
  `WorkerConfig.vacuum_every_jobs` for why autovacuum alone is not enough);
- presence: the worker's row in `pgqueue.workers` (schema v12) says it is alive, with its
  slots in use, every third of a lease (what `python -m pgqueue workers` lists); retention
  prunes the rows of workers gone for an hour.

Each chore has its own interval; one that fails is logged and tried again soon, never stopping
the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from pgqueue import models, store
from pgqueue.worker import events
from pgqueue.worker.config import WorkerConfig
from pgqueue.worker.transient import TRANSIENT_ERRORS

logger = logging.getLogger("pgqueue.worker")

REAP_BATCH = 500  # expired leases handled per transaction
BACKLOG_CHECK_INTERVAL_S = 10.0
BACKLOG_WARN_EVERY_S = 60.0
VACUUM_CHECK_INTERVAL_S = 2.0
VACUUM_BACKOFF_MAX = 32  # a futile VACUUM waits at most this many times the usual jobs
VACUUM_FUTILE_FACTOR = 4  # dead versions left, in vacuum_every_jobs, that make one futile
ERROR_DELAY_S = 1.0  # seconds a failed chore waits before its next try


@dataclasses.dataclass(slots=True)
class _Chore:
    name: str
    interval_s: float
    once: Callable[[], Awaitable[None]]
    due: float = 0.0  # time.monotonic()


class Maintenance:
    """Runs the chores; run `run()` as a supervised task.

    Args:
        db: the worker's own pool.
        config: the worker's options (intervals, retention, thresholds).
        hooks: the `stalled` hook hears of every job the reaper moved on.
        on_requeued: called when reaped jobs went back to the queue (wake the claim loop).
        jobs_done: how many jobs this worker has finished so far (for the vacuum chore).
        presence: what the worker says of itself at each beat (None: no presence chore).
    """

    def __init__(
        self,
        db: store.Executor,
        config: WorkerConfig,
        hooks: events.Hooks,
        *,
        on_requeued: Callable[[], None],
        jobs_done: Callable[[], int],
        presence: Callable[[], store.WorkerBeat] | None = None,
    ) -> None:
        self._db = db
        self._config = config
        self._hooks = hooks
        self._on_requeued = on_requeued
        self._jobs_done = jobs_done
        self._presence = presence
        self._vacuumed_at_jobs = 0
        self._vacuum_every_jobs = config.vacuum_every_jobs
        self._last_backlog_warning = float("-inf")
        self._chores = [
            _Chore("reaper", config.reap_every_s, self.reap_once),
            _Chore("retention", config.maintenance_interval_s, self.purge_once),
            _Chore("backlog", BACKLOG_CHECK_INTERVAL_S, self.check_backlog),
        ]
        if presence is not None:
            self._chores.append(_Chore("presence", config.lease_s / 3, self.beat_once))
        if config.vacuum_every_jobs:
            self._chores.append(_Chore("vacuum", VACUUM_CHECK_INTERVAL_S, self.vacuum_if_busy))

    async def run(self) -> None:
        """Do each chore when it is due, until cancelled."""
        while True:
            now = time.monotonic()
            for chore in self._chores:
                if chore.due > now:
                    continue
                try:
                    await chore.once()
                except Exception as exc:  # a chore survives anything a database can throw
                    log = logger.warning if isinstance(exc, TRANSIENT_ERRORS) else logger.exception
                    log("%s failed: %s", chore.name, exc, extra={"action": f"{chore.name}_failed"})
                    chore.due = time.monotonic() + min(chore.interval_s, ERROR_DELAY_S)
                else:
                    chore.due = time.monotonic() + chore.interval_s
            await asyncio.sleep(max(0.0, min(c.due for c in self._chores) - time.monotonic()))

    async def reap_once(self) -> None:
        """Move one batch of expired leases on, and tell the `stalled` hooks."""
        reaped = await store.reap(self._db, self._config.retry_policy, batch_size=REAP_BATCH)
        if not reaped:
            return
        logger.warning(
            "reaped %d job(s) with expired leases",
            len(reaped),
            extra={"action": "jobs_reaped", "job_ids": [job.id for job in reaped]},
        )
        for job in reaped:
            await self._hooks.emit(
                events.Event(
                    "stalled",
                    job.id,
                    job=job,
                    error=job.last_error,
                    will_retry=job.state is models.JobState.QUEUED,
                )
            )
        if any(job.state is models.JobState.QUEUED for job in reaped):
            self._on_requeued()

    async def beat_once(self) -> None:
        """Say this worker is alive, and how many of its slots are in use."""
        assert self._presence is not None
        await store.beat_worker(self._db, self._presence())

    async def purge_once(self) -> None:
        """Delete finished jobs past their retention, and the rows of workers long gone."""
        deleted = await store.purge_finished(
            self._db,
            succeeded_older_than_s=self._config.retention_succeeded_s,
            failed_older_than_s=self._config.retention_failed_s,
        )
        if deleted:
            logger.info(
                "retention deleted %d finished job(s)", deleted, extra={"action": "retention"}
            )
        await store.prune_workers(self._db)
        slots = 0
        for _ in range(store.PURGE_MAX_BATCHES):
            purged = await store.purge_idle_concurrency_slots(self._db)
            slots += purged
            if purged < store.PURGE_BATCH:
                break
        if slots:
            logger.info(
                "retention deleted %d idle concurrency slot(s)",
                slots,
                extra={"action": "retention_slots"},
            )
        await self.purge_unneeded_rows()

    async def purge_unneeded_rows(self) -> None:
        """Delete the rate-limit keys that hold nothing, the schedules no scheduler marked
        for a week and the ended dashboard sessions."""
        keys = 0
        for _ in range(store.PURGE_MAX_BATCHES):
            purged = await store.purge_idle_rate_limits(self._db)
            keys += purged
            if purged < store.PURGE_BATCH:
                break
        # A schedule is marked every few minutes by each scheduler whose registry has it, so
        # one unmarked for a week is in no running registry. Not deleted sooner, nor by the
        # scheduler the moment its own registry lacks it: during a deploy, workers with the
        # old and the new registry run side by side, and a schedule that only the old one has
        # (or only the new one, still rolling out) must keep its last tick meanwhile, lest it
        # fire again. The dashboard shows such a row as stale after an hour.
        schedules = await store.prune_unseen_schedules(self._db)
        sessions = await store.purge_expired_sessions(self._db)
        if keys or schedules or sessions:
            logger.info(
                "retention deleted %d idle rate-limit key(s), %d unseen schedule(s), "
                "%d ended dashboard session(s)",
                keys,
                schedules,
                sessions,
                extra={"action": "retention_rows"},
            )

    async def check_backlog(self) -> None:
        """Warn (at most once a minute) when the runnable backlog passes the threshold."""
        waiting = await store.count_waiting(self._db, self._config.queues)
        now = time.monotonic()
        if (
            waiting > self._config.backlog_warn
            and now - self._last_backlog_warning >= BACKLOG_WARN_EVERY_S
        ):
            self._last_backlog_warning = now
            logger.warning(
                "backlog: %d runnable jobs waiting (threshold %d)",
                waiting,
                self._config.backlog_warn,
                extra={"action": "backlog", "waiting": waiting},
            )

    async def vacuum_if_busy(self) -> None:
        """VACUUM the queue's tables once this worker finished enough jobs since the last.

        A VACUUM that had to leave several times more dead row versions than the jobs run
        between two of them (VACUUM_FUTILE_FACTOR: a long transaction holds the horizon, so it
        could remove nothing; fewer are those that died while it ran) doubles the jobs to the
        next one, up to VACUUM_BACKOFF_MAX times: each such VACUUM reads again the whole region
        the snapshot pins and removes nothing. One that removes them resets it.
        """
        done = self._jobs_done()
        if done - self._vacuumed_at_jobs < self._vacuum_every_jobs:
            return
        self._vacuumed_at_jobs = done
        started = time.monotonic()
        left = await store.vacuum(self._db)
        base = self._config.vacuum_every_jobs
        if left is not None and left > VACUUM_FUTILE_FACTOR * base:
            self._vacuum_every_jobs = min(2 * self._vacuum_every_jobs, VACUUM_BACKOFF_MAX * base)
        else:
            self._vacuum_every_jobs = base
        logger.info(
            "vacuumed the queue's tables in %.2fs (%s dead row versions left; next after %d jobs)",
            time.monotonic() - started,
            left,
            self._vacuum_every_jobs,
            extra={"action": "vacuum"},
        )
