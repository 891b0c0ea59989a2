"""The scheduler: turns the due ticks of the registry's periodic jobs into jobs.

Every worker runs one (drains too, once at their start), and any number may run at once:
`store.fire_schedule` moves a schedule's last tick forward in the same transaction as the
enqueue, so a tick becomes one job however many workers see it. Time is the database's:
a worker asks Postgres for `now()` when its own clock says a tick is due, so workers whose
clocks disagree still agree on which tick is due.

After an outage, the latest tick due is fired once: the ticks missed meanwhile are not
replayed one by one. A schedule seen for the first time starts with its next tick (a new
daily job does not run the moment it is deployed).

Each schedule is computed and fired on its own: one that fails (a bug in its expression, a
row the database refuses) is logged and skipped, and the others keep their ticks. Only the
database's own trouble (a lost connection) fails the whole pass, which is then retried.

Every `SEEN_EVERY_S` the scheduler also marks its registry's schedules as seen
(`pgqueue.schedules.seen_at`), which is how a schedule removed from the code is told apart
from one that is merely waiting for its monthly tick: see `pgqueue.worker.maintenance`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from pgqueue import models, store
from pgqueue.registry import Periodic
from pgqueue.worker.transient import TRANSIENT_ERRORS, retry_delay_s

logger = logging.getLogger("pgqueue.worker")

MAX_SLEEP_S = 60.0  # re-read the database's clock at least this often (its drift, a restart)
MIN_SLEEP_S = 0.05
SEEN_EVERY_S = 300.0  # how often a scheduler marks its schedules as still registered

Clock = Callable[[], Awaitable[datetime]]


class Scheduler:
    """Fires the due ticks of `periodics`.

    Args:
        db: the worker's own pool.
        periodics: the schedules (from the registry).
        default_queue: the queue of a periodic job that names none.
        clock: the current time (default: the database's `now()`); tests pass their own.
    """

    def __init__(
        self,
        db: store.Executor,
        periodics: Sequence[Periodic],
        *,
        default_queue: str,
        clock: Clock | None = None,
    ) -> None:
        self._db = db
        self._periodics = list(periodics)
        self._default_queue = default_queue
        self._clock = clock or self._database_now
        self._fired: dict[str, datetime] = {}  # name -> the last tick handled here
        self._next_at: float = 0.0  # time.monotonic() of the next tick due, as estimated
        self._seen_at = float("-inf")  # time.monotonic() of the last mark of our schedules
        self._failing: set[str] = set()  # schedules whose last try failed (logged once)

    async def _database_now(self) -> datetime:
        return await store.database_now(self._db)

    async def fire_due(self) -> list[models.Job]:
        """Fire every schedule whose latest tick was not handled yet; the jobs enqueued here.

        Raises:
            one of TRANSIENT_ERRORS when the database is out of reach (the pass is retried);
            a failure of one schedule is logged and skips that schedule alone.
        """
        now = await self._clock()
        await self._mark_seen()
        fired: list[models.Job] = []
        soonest: datetime | None = None
        for periodic in self._periodics:
            try:
                following = await self._fire_one(periodic, now, fired)
            except TRANSIENT_ERRORS:
                raise  # the database's trouble, not this schedule's: run() retries the pass
            except Exception:  # one bad schedule must not stop the registry's others
                if periodic.name not in self._failing:
                    self._failing.add(periodic.name)
                    logger.exception(
                        "schedule %s failed; the other schedules go on",
                        periodic.name,
                        extra={"action": "schedule_failed", "schedule": periodic.name},
                    )
                continue
            if periodic.name in self._failing:
                self._failing.discard(periodic.name)
                logger.info(
                    "schedule %s works again",
                    periodic.name,
                    extra={"action": "schedule_recovered", "schedule": periodic.name},
                )
            soonest = following if soonest is None else min(soonest, following)
        wait_s = MAX_SLEEP_S if soonest is None else (soonest - now).total_seconds()
        self._next_at = time.monotonic() + min(MAX_SLEEP_S, max(MIN_SLEEP_S, wait_s))
        return fired

    async def _fire_one(
        self, periodic: Periodic, now: datetime, fired: list[models.Job]
    ) -> datetime:
        """Fire `periodic`'s latest tick unless handled already; its following tick."""
        tick = periodic.schedule.latest(now)
        following = periodic.schedule.following(tick)
        if self._fired.get(periodic.name) != tick:
            job = await store.fire_schedule(
                self._db,
                store.ScheduleTick(
                    name=periodic.name,
                    kind=periodic.kind,
                    queue=periodic.queue or self._default_queue,
                    schedule=periodic.schedule.text,
                    payload=periodic.payload,
                    tick=tick,
                    next_tick=following,
                ),
                max_attempts=periodic.max_attempts,
            )
            self._fired[periodic.name] = tick
            if job is not None:
                fired.append(job)
                logger.info(
                    "schedule %s: tick %s enqueued job %s",
                    periodic.name,
                    tick.isoformat(),
                    job.id,
                    extra={"action": "schedule_fired", "job_id": job.id, "kind": job.kind},
                )
        return following

    async def _mark_seen(self) -> None:
        """Mark this registry's schedules as still registered, every SEEN_EVERY_S."""
        if time.monotonic() - self._seen_at < SEEN_EVERY_S:
            return
        await store.mark_schedules_seen(self._db, [p.name for p in self._periodics])
        self._seen_at = time.monotonic()

    async def run(self) -> None:
        """Fire due ticks until cancelled (a supervised side task: it never returns)."""
        failures = 0
        while True:
            await asyncio.sleep(max(0.0, self._next_at - time.monotonic()))
            try:
                await self.fire_due()
                failures = 0
            except Exception as exc:  # the scheduler must outlive any database trouble
                failures += 1
                delay = retry_delay_s(failures)
                log = logger.warning if isinstance(exc, TRANSIENT_ERRORS) else logger.exception
                log(
                    "scheduler failed (%s); retrying in %.2fs",
                    exc,
                    delay,
                    extra={"action": "schedule_failed"},
                )
                self._next_at = time.monotonic() + delay
