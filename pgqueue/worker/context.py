"""`JobContext`: what a handler sees of its job: payload, progress, a fenced transaction, and
checkpoints (a step's value kept across the job's attempts)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg

from pgqueue import errors, models, store
from pgqueue.worker import transient

logger = logging.getLogger("pgqueue.worker")

# The idle limit of a handler's transaction when nobody says (the worker always does).
DEFAULT_IDLE_LIMIT_S = 60.0
# How long saving a checkpoint keeps trying through database trouble when the context names no
# lease (the worker always does: it tries for one lease, as long as the job can stay ours
# without a heartbeat getting through).
DEFAULT_SAVE_RETRY_S = 30.0
CHECKPOINT_NAME_MAX = 200  # characters, as pgqueue.checkpoints' CHECK says

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

    async def checkpoint(self, name: str, step: Callable[[], Awaitable[Any]]) -> Any:
        """The value of `step()` for this job, computed by one attempt and kept for the others.

        If an earlier attempt of this job stored a value under `name`, it is returned and
        `step` is not called. Otherwise `step()` is awaited, its value stored (one statement,
        fenced by this attempt's lease; it commits at once, on its own, whether or not a
        `transaction()` block is open) and returned. Use it for a step that must not run
        twice: a paid upstream call, a charge. What the step did before its value was stored
        (the worker killed while it ran) may still run again; after, nothing of ours can.

        The value must be JSON (`json.dumps`, NaN refused): it is returned decoded from what
        was stored, on the first attempt as on later ones, so every attempt sees the same
        value (a tuple comes back a list). For bytes, use `checkpoint_bytes`.

        Args:
            name: the step's name within the job, 1-200 characters; one value per name.
            step: called with no arguments, at most once per job (see above).

        Raises:
            LeaseLost: the job is no longer this attempt's, found before `step` ran (it is not
                run then) or when its value was to be stored (nothing was stored).
            ValueError: `name` is empty or longer than 200 characters; or, from the encoding,
                the value is not JSON (`TypeError` too).
        """

        async def encoded() -> bytes:
            return json.dumps(await step(), allow_nan=False).encode()

        return json.loads(await self._checkpoint(name, encoded))

    async def checkpoint_bytes(self, name: str, step: Callable[[], Awaitable[bytes]]) -> bytes:
        """`checkpoint` for bytes (an image, a file): stored and returned exactly as they are.

        Args:
            name: the step's name within the job, 1-200 characters; one value per name.
            step: called with no arguments, at most once per job; returns `bytes`.

        Raises:
            LeaseLost: as for `checkpoint`.
            ValueError: `name` is empty or longer than 200 characters.
            TypeError: `step` returned something other than bytes.
        """

        async def checked() -> bytes:
            value = await step()
            if not isinstance(value, bytes | bytearray | memoryview):
                raise TypeError(f"checkpoint_bytes: the step returned {type(value).__name__}")
            return bytes(value)

        return await self._checkpoint(name, checked)

    async def _checkpoint(self, name: str, step: Callable[[], Awaitable[bytes]]) -> bytes:
        if not isinstance(name, str) or not 1 <= len(name) <= CHECKPOINT_NAME_MAX:
            raise ValueError(
                f"a checkpoint name is 1-{CHECKPOINT_NAME_MAX} characters, e.g. 'image'; "
                f"got {name!r:.60}"
            )
        # Fenced too: an attempt that already lost its job must not pay for the step again.
        found = await store.read_checkpoint(self._handler_pool, self.job.id, self._token, name)
        if not found.held:
            raise errors.LeaseLost()
        if found.value is not None:
            logger.info(
                "job %s: checkpoint %r reused from an earlier attempt (%d bytes)",
                self.job.id,
                name,
                len(found.value),
                extra={"action": "checkpoint_reused", "job_id": self.job.id},
            )
            return found.value
        return await self._save(name, await step())

    async def _save(self, name: str, value: bytes) -> bytes:
        """Store a value just computed: through database trouble (a restart, a dropped
        connection) the save is tried again for as long as the job can still be ours, since
        failing here would throw away what the step paid for."""
        # The worker's heartbeat cannot renew the lease through the same trouble: once a lease
        # has passed, the job may be someone else's and the fence would refuse the save.
        deadline = time.monotonic() + (self._lease_s or DEFAULT_SAVE_RETRY_S)
        failures = 0
        while True:
            try:
                stored = await store.save_checkpoint(
                    self._handler_pool, self.job.id, self._token, name, value
                )
            except transient.TRANSIENT_ERRORS as exc:
                failures += 1
                delay_s = transient.retry_delay_s(failures)
                if time.monotonic() + delay_s > deadline:
                    raise
                logger.warning(
                    "job %s: checkpoint %r not saved (%r); trying again in %g s",
                    self.job.id,
                    name,
                    exc,
                    delay_s,
                    extra={"action": "checkpoint_retry", "job_id": self.job.id},
                )
                await asyncio.sleep(delay_s)
                continue
            if not stored.held:
                raise errors.LeaseLost()
            if stored.value is not None:
                return stored.value
            # Held, yet nothing under the name: the row went between the save and its read
            # (the job's row purged and recreated cannot happen while we hold it); save again.

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
