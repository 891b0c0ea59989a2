"""`Producer`: the claim loop, and the one owner of the worker's slots.

A slot is taken before a claim (so that the worker never holds more jobs than its concurrency)
and is held by the claimed job until its outcome is written; then the completer, which writes
every outcome, hands it back here: `release(n)`, or, under load, `handoff(n)` so that the
statement writing those successes claims the jobs that take their slots (`delivered`). Nothing
else changes the slot count, so `slots.in_use` is always "jobs claimed and not yet written,
plus claims in flight".
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence

from pgqueue import errors, models, store
from pgqueue.database import pooler_hint
from pgqueue.worker.slots import Slots
from pgqueue.worker.transient import TRANSIENT_ERRORS, retry_delay_s
from pgqueue.worker.waiting import wait_any

logger = logging.getLogger("pgqueue.worker")

DUE_MARGIN_S = 0.005  # seconds; wake just after a delayed job is due, not just before


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimTemplate:
    """What every claim of one worker has in common."""

    queues: Sequence[str]
    kinds: Sequence[str]
    worker_id: str
    lease_s: float

    def request(self, limit: int) -> store.ClaimRequest:
        """A claim of at most `limit` jobs."""
        return store.ClaimRequest(
            queues=self.queues,
            kinds=self.kinds,
            limit=limit,
            worker_id=self.worker_id,
            lease_s=self.lease_s,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Handoff:
    """Slots lent to a complete-and-claim statement: `freed` came from the completions it
    writes, `taken` were free besides."""

    request: store.ClaimRequest
    freed: int

    @property
    def taken(self) -> int:
        """Free slots taken for this claim on top of the freed ones."""
        return self.request.limit - self.freed


class Producer:
    """Claims jobs into free slots and starts them.

    Args:
        db: the worker's own pool.
        slots: the worker's slots (this object is their only user besides the completer's
            calls back into it).
        template: the claims' queues, kinds, worker id and lease.
        start: starts one claimed job (the worker creates its task).
        poll_interval_s: the longest an idle worker waits without a notification.
        burst: return once nothing is runnable and every claimed job's outcome is written.
        burst_waits_for_keys: in burst mode, wait for a rate-limit key that holds back runnable
            jobs to allow a start again, rather than return (a run with a time budget, which
            stops the producer at its end: a drain's budget is there to be used).
        idle: the event to set while waiting for work with free slots.
    """

    def __init__(
        self,
        db: store.Executor,
        slots: Slots,
        template: ClaimTemplate,
        start: Callable[[models.Job], None],
        *,
        poll_interval_s: float,
        burst: bool = False,
        burst_waits_for_keys: bool = False,
        idle: asyncio.Event | None = None,
    ) -> None:
        self._db = db
        self.slots = slots
        self._template = template
        self._start = start
        self._poll_interval_s = poll_interval_s
        self._burst = burst
        self._burst_waits_for_keys = burst_waits_for_keys
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.idle = idle or asyncio.Event()  # set while waiting for work with free slots
        # When the last claim (the loop's or a completion's hand-off) began, on the monotonic
        # clock: a key that opened since then is due now (see `_since_claim_s`).
        self._claim_began = 0.0

    def wake(self) -> None:
        """Look for jobs now (a notification arrived, or jobs were requeued)."""
        self._wake.set()

    def stop(self) -> None:
        """Claim nothing more; `run` returns."""
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called."""
        return self._stopping.is_set()

    async def run(self) -> None:
        """Claim until stopped (or, in burst mode, until there is nothing left to do)."""
        failures = 0
        while not self._stopping.is_set():
            self.slots.freed.clear()
            if self.slots.free <= 0:
                # Every slot is busy: sleep until one frees rather than polling the database.
                await wait_any(self.slots.freed, self._stopping)
                continue
            self._wake.clear()
            # Slots are taken before the claim, so the worker never holds more jobs than its
            # concurrency, whatever a hand-off claims meanwhile.
            taken = self.slots.take_all()
            self._claim_began = time.monotonic()
            try:
                jobs = await store.claim(self._db, self._template.request(taken))
                failures = 0
            except Exception as exc:  # the claim loop must outlive any database trouble
                self.slots.give_back(taken)
                hint = pooler_hint(exc)
                if hint is not None:
                    # Not trouble that passes: every claim would fail the same way.
                    raise errors.ConfigurationError(hint) from exc
                failures += 1
                delay = min(self._poll_interval_s, retry_delay_s(failures))
                log = logger.warning if isinstance(exc, TRANSIENT_ERRORS) else logger.exception
                log(
                    "claim failed (%s); retrying in %.2fs",
                    exc,
                    delay,
                    extra={"action": "claim_failed"},
                )
                await wait_any(self._stopping, timeout=delay)
                continue
            self.slots.give_back(taken - len(jobs))
            for job in jobs:
                self._start(job)
            if len(jobs) == taken:
                continue  # maybe more are waiting: claim again at once
            if any(job.rate_limit_key is not None for job in jobs):
                # Short, maybe because a key ran out of starts: its other candidates filled
                # the claim's scan, and jobs behind them (other keys, no key) may be runnable.
                # The key is now skipped by the scan; this claim finds them, or nothing.
                continue
            if self._burst:
                if self.slots.in_use == 0:
                    if self._burst_waits_for_keys and await self._wait_for_a_key():
                        continue
                    return  # nothing runnable was left, and every outcome is written
                self.slots.freed.clear()
                # Jobs still run: wait for one to end, or for a key that holds back jobs to
                # allow a start before that (a paced key allows one every spacing).
                due_s = await self._key_due_s() if self._burst_waits_for_keys else None
                timeout = None if due_s is None else max(due_s, 0.0) + DUE_MARGIN_S
                await wait_any(self.slots.freed, self._stopping, timeout=timeout)
                continue
            await self._idle()

    async def _wait_for_a_key(self) -> bool:
        """Wait until a rate-limit key holding back jobs allows a start; False when none holds
        any back (or the lookup failed: the run ends as it would have)."""
        due_s = await self._key_due_s()
        if due_s is None:
            return False
        await wait_any(self._stopping, timeout=max(due_s, 0.0) + DUE_MARGIN_S)
        return not self._stopping.is_set()

    async def _key_due_s(self) -> float | None:
        """Seconds until a rate-limit key holding back jobs allows a start; None when none
        holds any back, or the lookup failed."""
        try:
            return await store.seconds_until_key_allows(
                self._db, self._template.queues, self._template.kinds, self._since_claim_s()
            )
        except Exception as exc:  # ending the run is what would have happened without it
            logger.warning("held-back lookup failed: %s", exc, extra={"action": "lookup_failed"})
            return None

    async def _idle(self) -> None:
        loop = asyncio.get_running_loop()
        # Jittered so that many idle workers do not poll in lockstep.
        deadline = loop.time() + self._poll_interval_s * random.uniform(0.8, 1.0)
        # A slot freed from here on means an outcome was written: a retry may now be due
        # sooner than anything the lookup below can see, so look again then.
        self.slots.freed.clear()
        # When is the next delayed job (a retry, a run_at) due? Looked up while already
        # waiting, so that a notification arriving meanwhile is served at once: the lookup is
        # never on the path from an enqueue to its start.
        lookup = asyncio.ensure_future(
            store.seconds_until_due(
                self._db, self._template.queues, self._template.kinds, self._since_claim_s()
            )
        )
        lookup.add_done_callback(_forget)
        self.idle.set()
        try:
            flags = (self._wake, self._stopping, self.slots.freed)
            await wait_any(*flags, futures=(lookup,), timeout=deadline - loop.time())
            if lookup.done() and not lookup.cancelled() and lookup.exception() is None:
                due_s = lookup.result()
                if due_s is not None:
                    # Delayed jobs and retries start at their run_at, not at the next poll.
                    deadline = min(deadline, loop.time() + max(due_s, 0.0) + DUE_MARGIN_S)
                if not any(flag.is_set() for flag in flags):
                    await wait_any(*flags, timeout=max(0.0, deadline - loop.time()))
        finally:
            self.idle.clear()

    def _since_claim_s(self) -> float:
        # A key that opened after the last claim began but before this lookup reads it would
        # be neither seen open by the claim nor closed by the lookup: the worker would sleep
        # until its poll. Passing this span makes the lookup count such a key as due now.
        return time.monotonic() - self._claim_began

    # -- the completer's side: slots come back with the outcomes that held them -------------

    def release(self, count: int) -> None:
        """`count` jobs' outcomes are written (or abandoned): their slots are free."""
        self.slots.give_back(count)

    def handoff(self, freed: int) -> Handoff | None:
        """Lend the slots of `freed` completions, and every free one, to the statement that
        writes them; None when no claim should ride along (stopping)."""
        if self._stopping.is_set() or freed < 1:
            return None
        limit = freed + self.slots.take_all()
        self._claim_began = time.monotonic()
        return Handoff(self._template.request(limit), freed)

    def delivered(self, handoff: Handoff, jobs: list[models.Job]) -> None:
        """The statement ran: start what it claimed; the slots it did not fill are free."""
        self.slots.give_back(handoff.request.limit - len(jobs))
        for job in jobs:
            self._start(job)
        # Full hand-off: the queue is busy, look again. Short one: the claim ran in the
        # completing statement's snapshot, so jobs whose concurrency key that completion
        # frees only become claimable after it commits; the claim loop must look then.
        self._wake.set()

    def failed(self, handoff: Handoff) -> None:
        """The statement failed and wrote nothing: the free slots taken for it come back; the
        freed ones stay with the completions, which are written again (or abandoned)."""
        self.slots.give_back(handoff.taken)


def _forget(task: asyncio.Future[float | None]) -> None:
    # The next-due lookup is an optimisation: the poll still comes if it fails.
    if not task.cancelled() and task.exception() is not None:
        logger.debug("next-due lookup failed: %s", task.exception())
