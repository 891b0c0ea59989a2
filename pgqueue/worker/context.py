"""`JobContext`: what a handler sees of its job: payload, progress, a fenced transaction."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg

from pgqueue import errors, models, store

# The idle limit of a handler's transaction when nobody says (the worker always does).
DEFAULT_IDLE_LIMIT_S = 60.0

ProgressHook = Callable[[models.Job, dict[str, Any]], Awaitable[None]]


class JobContext:
    """Handed to a handler for one attempt of one job.

    Args:
        job: the job as claimed (attempts already counts this attempt).
        pool: the worker's own connection pool (progress writes).
        state: the value the registry's lifespan yielded.
        progress_interval_s: at most one progress write per this many seconds; throttled
            updates are kept and written by the next heartbeat or with the final state.
        on_progress: called with each progress update (the worker's event hook).
        handler_pool: the pool of `transaction()` (default: `pool`). The worker passes one
            with the server's default settings, since its own runs with generic plans.
        lease_s: the worker's lease; a `transaction()` renews it for this long as it ends.
    """

    def __init__(
        self,
        job: models.Job,
        pool: asyncpg.Pool,
        *,
        state: Any = None,
        progress_interval_s: float = 1.0,
        on_progress: ProgressHook | None = None,
        handler_pool: asyncpg.Pool | None = None,
        lease_s: float | None = None,
        transaction_idle_s: float = DEFAULT_IDLE_LIMIT_S,
    ) -> None:
        if job.lease_token is None:
            raise ValueError("a JobContext needs a claimed job (with a lease_token)")
        self.job = job
        self.state = state
        self._pool = pool
        self._handler_pool = handler_pool or pool
        self._token: int = job.lease_token
        self._interval_s = progress_interval_s
        self._on_progress = on_progress
        self._last_write = float("-inf")
        self._pending_json: str | None = None  # a throttled update, not yet written
        self.latest_progress: dict[str, Any] | None = None
        self.completed_in_transaction = False
        self.completed_result: Any = None  # what complete_in() stored
        self.in_transaction = False  # inside transaction(): the job's row is locked by us
        self._lease_s = lease_s
        self._idle_limit_s = transaction_idle_s

    @property
    def payload(self) -> Any:
        """The job's payload."""
        return self.job.payload

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.job.attempts

    async def progress(
        self, percent: float | None = None, message: str | None = None, **data: Any
    ) -> None:
        """Record progress: `{"percent", "message", **data}` into the job's `progress` column.

        Writes at most once per `progress_interval_s`; a throttled update is written later, so
        the last one always lands. Raises `LeaseLost` when the job is no longer ours,
        `JobCancelled` when a cancel was requested (let it propagate: the job then ends
        `cancelled`), and `ValueError`/`TypeError` when the update is not JSON (NaN included).
        """
        if percent is not None and not 0 <= percent <= 100:
            raise ValueError(f"percent must be within 0-100, got {percent}")
        value: dict[str, Any] = dict(data)
        if percent is not None:
            value["percent"] = percent
        if message is not None:
            value["message"] = message
        # Encoded once, here, where the handler sees the error: NaN is not JSON, and a value that
        # is not serialisable would otherwise fail the batched write it ends up in.
        encoded = json.dumps(value, allow_nan=False)
        self.latest_progress = value
        if self._on_progress is not None:
            await self._on_progress(self.job, value)
        now = time.monotonic()
        # Inside transaction() the row is ours, locked: a write on another connection would
        # wait for that lock, that is for this very handler. It is written later instead.
        if self.in_transaction or now - self._last_write < self._interval_s:
            self._pending_json = encoded
            return
        self._last_write = now
        self._pending_json = None
        cancel_requested = await store.set_progress(self._pool, self.job.id, self._token, encoded)
        if cancel_requested is None:
            raise errors.LeaseLost()
        if cancel_requested:
            raise errors.JobCancelled()

    async def charge(self, amount: float | Decimal) -> None:
        """Say what this attempt really spent of the job's `cost` (0: nothing, e.g. it failed
        before the paid call, or reused an earlier attempt's answer).

        The job's budgets are charged this when the attempt ends, instead of the whole cost;
        the last call wins. Written at once (fenced by the lease), so a worker that dies
        afterwards still charges what was said. Raises `LeaseLost` when the job is no longer
        ours, `ValueError` for an amount that is not a number >= 0.
        """
        value = models.check_amount(amount, "a charge")
        if not await store.charge_attempt(self._pool, self.job.id, self._token, value):
            raise errors.LeaseLost()

    def take_pending_progress(self) -> str | None:
        """The throttled update not yet written, as JSON (and forget it), for a batched write."""
        encoded, self._pending_json = self._pending_json, None
        return encoded

    def restore_pending_progress(self, encoded: str) -> None:
        """Give back an update taken for a write that did not happen, unless a newer one came."""
        if self._pending_json is None:
            self._pending_json = encoded

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that commits only while this worker still holds the job.

        The job's row is locked first, so the reaper cannot take the job until the
        transaction ends; if the lease is already lost, `LeaseLost` is raised and nothing the
        block would have written commits.
        """
        async with self._handler_pool.acquire() as conn, conn.transaction():
            # Idle this long, the session is dead or the handler is stuck: either way the server
            # ends the transaction, and the job goes to the reaper as a lost lease would.
            if not await store.lock_held(
                conn, self.job.id, self._token, idle_limit_s=self._idle_limit_s
            ):
                raise errors.LeaseLost()
            # While the row is locked, the heartbeat skips it (it would otherwise wait behind
            # this transaction with every other job's renewal) and nobody can reap it.
            self.in_transaction = True
            started = time.monotonic()
            try:
                yield conn
                # A short transaction ends with most of the lease left (heartbeats renew every
                # third of it), and the next heartbeat renews it; only a long one may have
                # outlived what the last renewal granted. Skipping the short case saves a round
                # trip per transaction.
                if self._lease_s is not None and time.monotonic() - started > self._lease_s / 6:
                    await store.extend_held(conn, self.job.id, self._token, self._lease_s)
            finally:
                self.in_transaction = False

    async def complete_in(self, conn: asyncpg.Connection, result: Any = None) -> None:
        """Mark the job succeeded inside `conn`'s transaction (one opened by `transaction()`).

        The job's success then commits or rolls back together with the handler's own writes,
        so an effect recorded in that transaction happens exactly once: a crash before the
        commit leaves neither, a crash after it leaves both. The handler's return value is
        ignored once this was called: `result` is the job's result, and the one the
        `completed` hook receives.
        """
        success = store.Success(
            self.job.id,
            self._token,
            json.dumps(result, allow_nan=False),
            self.take_pending_progress(),
        )
        if await store.complete_held(conn, success) is None:
            raise errors.LeaseLost()
        self.completed_in_transaction = True
        self.completed_result = result
