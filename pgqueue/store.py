"""The job store: the only module in pgqueue that executes SQL about jobs.

Every function takes `db`, an asyncpg pool or connection (a connection joins whatever
transaction the caller has open), runs statements of `queries.py`, and returns values of
`models.py`. The rest of pgqueue (the `Queue` facade, the worker's parts) decides *what* to do;
this module alone knows *how* it is said to Postgres: which statement, which parameters, and
how they are encoded (`json.dumps` or typed arrays, never text spliced into SQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from pgqueue import models, notify, queries, retry

# A pool, or a connection (which joins whatever transaction its owner has open).
Executor: TypeAlias = "asyncpg.Pool | asyncpg.Connection"
MAX_DELAY_S = 365 * 86400.0  # seconds; the longest a retry may be put off (a year)
REAPER_IDLE_LIMIT_S = 10.0  # a reap takes milliseconds; idle this long, its session is gone
PURGE_BATCH = 1000  # rows per retention DELETE: short transactions, short locks
PURGE_MAX_BATCHES = 100  # batches of one retention pass


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What to claim.

    Args:
        queues: the queues to take jobs from.
        kinds: the kinds the claimer has handlers for; other jobs are left queued.
        limit: the most jobs to take.
        worker_id: the claimer, written to `jobs.worker_id`.
        lease_s: the new jobs' lease.
    """

    queues: Sequence[str]
    kinds: Sequence[str]
    limit: int
    worker_id: str
    lease_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class Success:
    """A finished handler's success, to be written fenced by its lease.

    Args:
        job_id: the job.
        lease_token: the claim's fencing token.
        result_json: the result, already encoded (so a value that is not JSON fails only its
            own job, where it was produced).
        progress_json: throttled progress not yet written, encoded, or None.
    """

    job_id: int
    lease_token: int
    result_json: str
    progress_json: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease a worker believes it holds, with progress waiting to be written."""

    job_id: int
    lease_token: int
    progress_json: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Renewal:
    """What one heartbeat learned.

    Args:
        renewed: jobs whose lease now runs for another lease period.
        busy: jobs still ours whose row someone held locked (a handler's transaction, a write
            of their outcome in flight): not renewed this time, and not lost either.
        cancel_requested: renewed jobs that someone asked to cancel.
        lost: jobs the worker no longer holds (reaped, finished, or taken by another worker).
    """

    renewed: frozenset[int]
    busy: frozenset[int]
    cancel_requested: frozenset[int]
    lost: frozenset[int]


def capped_delay_s(delay_s: float) -> float:
    """`delay_s` as a retry delay the database can store: finite, >= 0, at most a year."""
    if math.isnan(delay_s):
        raise ValueError("a retry delay must be a number of seconds, got NaN")
    return min(max(delay_s, 0.0), MAX_DELAY_S)


@contextlib.asynccontextmanager
async def _connection(db: Executor) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


def _jobs(records: Iterable[asyncpg.Record]) -> list[models.Job]:
    return [models.Job.from_record(record) for record in records]


def _job_or_none(record: asyncpg.Record | None) -> models.Job | None:
    return models.Job.from_record(record) if record is not None else None


# -- enqueue ---------------------------------------------------------------------------------


async def enqueue(
    db: Executor,
    specs: Sequence[models.JobSpec],
    *,
    default_queue: str,
    max_attempts: int,
) -> list[models.Job]:
    """Insert `specs` in one statement (two when idempotency keys repeat); see `Queue`.

    Three paths, by where the jobs commit:

    * inside a caller's transaction (a connection with one open): the statement also queues
      the NOTIFY of its queues, which Postgres sends when the caller commits;
    * on a pool: the call joins the other small enqueues of this process on the same pool
      (`_Group`): one statement and one commit for all that arrived while the previous one
      ran, then one NOTIFY after that commit (`pgqueue.notify`);
    * on a connection in autocommit: its own statement, then the NOTIFY after its commit.

    A batch with idempotency keys commits in a transaction of its own (pool, group), so that
    the read of the existing jobs sees what the insert skipped; on a bare connection in
    autocommit both statements run as they come.
    """
    if not specs:
        return []
    rows_json = _encode(specs)  # a payload that is not JSON fails here, alone
    if isinstance(db, asyncpg.Pool) and len(specs) <= GROUP_MAX_SPECS:
        return await _group_for(db, default_queue, max_attempts).submit(specs, rows_json)
    keys = [spec.idempotency_key for spec in specs if spec.idempotency_key is not None]
    async with _connection(db) as conn:
        if conn.is_in_transaction():
            return await _enqueue(
                conn,
                specs,
                rows_json,
                keys,
                default_queue,
                max_attempts,
                queries.ENQUEUE_JOBS_NOTIFY,
            )
        if keys and isinstance(db, asyncpg.Pool):
            async with conn.transaction():
                jobs = await _enqueue(
                    conn, specs, rows_json, keys, default_queue, max_attempts, queries.ENQUEUE_JOBS
                )
        else:
            jobs = await _enqueue(
                conn, specs, rows_json, keys, default_queue, max_attempts, queries.ENQUEUE_JOBS
            )
        await _notify_new(conn, jobs)
        return jobs


GROUP_MAX_SPECS = 100  # a larger enqueue_many is a batch already: it runs on its own
GROUP_MAX_ROWS = 1000  # the most specs one grouped statement takes


@dataclasses.dataclass(slots=True)
class _Request:
    specs: Sequence[models.JobSpec]
    rows_json: str
    future: asyncio.Future[list[models.Job]]


class _Group:
    """The concurrent autocommit enqueues of one pool, in one event loop, with one set of
    defaults: group commit done by the client.

    Each commit of a one-row transaction costs the server about what a plain insert's does
    however small the row, and a pool's connection costs a reset round trip on release; 50
    callers enqueueing one job each paid both 50 times over. Here one task runs the statements
    one at a time on one connection: whatever was submitted while one ran goes in the next,
    as one `enqueue_many`. A lone caller waits for nobody (its statement starts at once);
    under load the groups grow, and the rate with them.

    Isolation is kept: payloads are encoded by each caller before joining, and when a grouped
    statement fails in Postgres (it rolled back, nothing committed) each request runs again
    alone, so only the request at fault sees the error. A caller cancelled while waiting stops
    waiting; the statement, shared with others, is not cancelled (its job may be enqueued, as
    when a lone enqueue is cancelled after sending its statement).
    """

    def __init__(self, pool: asyncpg.Pool, default_queue: str, max_attempts: int) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self._default_queue = default_queue
        self._max_attempts = max_attempts
        self._pending: list[_Request] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, specs: Sequence[models.JobSpec], rows_json: str) -> list[models.Job]:
        future: asyncio.Future[list[models.Job]] = self.loop.create_future()
        self._pending.append(_Request(specs, rows_json, future))
        if self._task is None:
            self._task = self.loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            # Checked again once the connection is back in the pool: a request submitted
            # while it was being released saw this task still running and did not start one.
            while self._pending:
                async with self.pool.acquire() as conn:
                    while self._pending:
                        await self._run(conn, self._take())
                        if not self._pending:
                            # One turn of the loop for the callers just answered: one that
                            # enqueues again at once reuses this connection, instead of paying
                            # the pool's reset of it and a new acquire.
                            await asyncio.sleep(0)
        except BaseException as exc:
            # The connection could not be had or was lost between statements: whoever still
            # waits learns it (a request taken by `_run` has its answer already).
            for request in self._pending:
                if not request.future.done():
                    request.future.set_exception(exc)
            self._pending.clear()
            if not isinstance(exc, Exception):
                raise
        finally:
            self._task = None

    def _take(self) -> list[_Request]:
        """The requests of the next statement: all pending, up to GROUP_MAX_ROWS specs."""
        rows, count = 0, 0
        while count < len(self._pending) and rows < GROUP_MAX_ROWS:
            rows += len(self._pending[count].specs)
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    async def _run(self, conn: asyncpg.Connection, batch: list[_Request]) -> None:
        try:
            try:
                results = [await self._insert(conn, batch)]
                split = True
            except asyncpg.PostgresError:
                if len(batch) == 1:
                    raise
                results, split = [], False
                for request in batch:
                    try:
                        results.append(await self._insert(conn, [request]))
                    except asyncpg.PostgresError as exc:
                        if not request.future.done():
                            request.future.set_exception(exc)
                        results.append([])
        except BaseException as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            if not isinstance(exc, asyncpg.PostgresError):
                raise  # the connection is in doubt: `_drain` fails the rest
            return
        jobs = [job for part in results for job in part]
        try:
            await _notify_new(conn, jobs)
        finally:
            offset = 0
            for index, request in enumerate(batch):
                if split:
                    mine = jobs[offset : offset + len(request.specs)]
                    offset += len(request.specs)
                else:
                    mine = results[index]
                if not request.future.done():  # done: failed alone above, or its caller left
                    request.future.set_result(mine)

    async def _insert(self, conn: asyncpg.Connection, batch: list[_Request]) -> list[models.Job]:
        specs = [spec for request in batch for spec in request.specs]
        rows_json = (
            batch[0].rows_json
            if len(batch) == 1
            # Each is a JSON array already encoded by its caller: join their elements.
            else "[" + ",".join(r.rows_json[1:-1] for r in batch if len(r.specs)) + "]"
        )
        keys = [spec.idempotency_key for spec in specs if spec.idempotency_key is not None]
        args = (conn, specs, rows_json, keys, self._default_queue, self._max_attempts)
        if not keys:
            return await _enqueue(*args, queries.ENQUEUE_JOBS)
        async with conn.transaction():
            return await _enqueue(*args, queries.ENQUEUE_JOBS)


# (id of the loop, id of the pool, default queue, max attempts) -> its group. The loop and the
# pool are kept in the group, so that an id reused by a new object is never mistaken for it.
_groups: dict[tuple[int, int, str, int], _Group] = {}


def _group_for(pool: asyncpg.Pool, default_queue: str, max_attempts: int) -> _Group:
    loop = asyncio.get_running_loop()
    key = (id(loop), id(pool), default_queue, max_attempts)
    group = _groups.get(key)
    if group is None or group.pool is not pool or group.loop is not loop:
        if len(_groups) > 64:  # pools and loops come and go (tests): forget the closed ones
            closed = [k for k, g in _groups.items() if g.loop.is_closed() or g.pool.is_closing()]
            for stale in closed:
                del _groups[stale]
        group = _groups[key] = _Group(pool, default_queue, max_attempts)
    return group


async def _notify_new(conn: asyncpg.Connection, jobs: Sequence[models.Job]) -> None:
    """Wake the workers of the queues that just got (committed) new jobs."""
    queues = {job.queue for job in jobs if job.is_new}
    if queues:
        await notify.notify_committed(conn, queues, send=notify_queues)


async def notify_queues(conn: asyncpg.Connection, queues: Sequence[str]) -> None:
    """One NOTIFY per queue, in one statement (its own transaction on an idle connection)."""
    await conn.execute(queries.NOTIFY_QUEUES, list(queues))


async def _enqueue(
    conn: asyncpg.Connection,
    specs: Sequence[models.JobSpec],
    rows_json: str,
    keys: list[str],
    default_queue: str,
    max_attempts: int,
    statement: str,
) -> list[models.Job]:
    # The statement returns only what the database decides (id, run_at, created_at); the rest
    # of each new job is what was sent. Reading whole rows back cost a quarter of a batch's
    # time (23 columns decoded, payloads parsed again).
    rows = await conn.fetch(statement, rows_json, default_queue, max_attempts)
    # Rows without a key were inserted in input order, so their ids ascend with it; a keyed
    # row was inserted from the first spec carrying its key.
    unkeyed = iter(sorted((r for r in rows if r["idempotency_key"] is None), key=_row_id))
    inserted = {r["idempotency_key"]: r for r in rows if r["idempotency_key"] is not None}
    existing: dict[str, models.Job] = {}
    missing = [key for key in keys if key not in inserted]
    if missing:
        # Same transaction, new snapshot: a concurrent enqueue of the same key has committed
        # by now (the unique index made our INSERT wait for it), so its row is visible.
        for record in await conn.fetch(queries.SELECT_JOBS_BY_IDEMPOTENCY_KEY, missing):
            existing[record["idempotency_key"]] = models.Job.from_record(record, is_new=False)
    jobs: list[models.Job] = []
    first_of_key: dict[str, models.Job] = {}
    for spec in specs:
        key = spec.idempotency_key
        if key is None:
            jobs.append(_new_job(next(unkeyed), spec, default_queue, max_attempts))
        elif key in first_of_key:  # a repeat of a key earlier in this batch
            jobs.append(first_of_key[key]._replace(is_new=False))
        else:
            row = inserted.get(key)
            job = (
                _new_job(row, spec, default_queue, max_attempts)
                if row is not None
                else existing[key]
            )
            first_of_key[key] = job
            jobs.append(job)
    return jobs


def _new_job(
    row: asyncpg.Record, spec: models.JobSpec, default_queue: str, max_attempts: int
) -> models.Job:
    """The job just inserted from `spec`: its payload is the object passed in, not a copy."""
    return models.Job(
        id=row["id"],
        queue=spec.queue or default_queue,
        kind=spec.kind,
        payload=spec.payload if spec.payload is not None else {},
        state=models.JobState.QUEUED,
        priority=spec.priority,
        attempts=0,
        max_attempts=spec.max_attempts or max_attempts,
        run_at=row["run_at"],
        lease_expires_at=None,
        lease_token=None,
        worker_id=None,
        last_error=None,
        progress=None,
        result=None,
        idempotency_key=spec.idempotency_key,
        concurrency_key=spec.concurrency_key,
        concurrency_limit=spec.concurrency_limit,
        rate_limit_key=spec.rate_limit_key,
        timeout_s=spec.timeout.total_seconds() if spec.timeout else None,
        cancel_requested_at=None,
        created_at=row["created_at"],
        started_at=None,
        finished_at=None,
    )


def _row_id(row: asyncpg.Record) -> int:
    return int(row["id"])


def _encode(specs: Sequence[models.JobSpec]) -> str:
    """ENQUEUE_JOBS' first parameter: one JSON object per spec, defaults left out."""
    rows = []
    for spec in specs:
        row: dict[str, Any] = {"kind": spec.kind}
        if spec.payload is not None:
            row["payload"] = spec.payload
        if spec.queue is not None:
            row["queue"] = spec.queue
        if spec.priority:
            row["priority"] = spec.priority
        if spec.run_at is not None:
            row["run_at"] = spec.run_at.isoformat()
        if spec.delay:
            row["delay_s"] = spec.delay.total_seconds()
        if spec.max_attempts is not None:
            row["max_attempts"] = spec.max_attempts
        if spec.timeout is not None:
            row["timeout_s"] = spec.timeout.total_seconds()
        if spec.idempotency_key is not None:
            row["idempotency_key"] = spec.idempotency_key
        if spec.concurrency_key is not None:
            row["concurrency_key"] = spec.concurrency_key
            row["concurrency_limit"] = spec.concurrency_limit
        if spec.rate_limit_key is not None:
            row["rate_limit_key"] = spec.rate_limit_key
        rows.append(row)
    return json.dumps(rows)


# -- inspect and manage ----------------------------------------------------------------------


async def get_job(db: Executor, job_id: int) -> models.Job | None:
    """The job with this id, or None."""
    return _job_or_none(await db.fetchrow(queries.GET_JOB, job_id))


async def cancel_job(db: Executor, job_id: int) -> models.Job | None:
    """Cancel a job: queued ones at once, running ones are flagged for their worker.

    Returns the job as it is afterwards (a terminal job unchanged), or None when none exists.
    """
    async with _connection(db) as conn:
        record = await conn.fetchrow(queries.CANCEL_JOB, job_id)
        if record is None:
            record = await conn.fetchrow(queries.GET_JOB, job_id)
    return _job_or_none(record)


async def queue_stats(db: Executor) -> dict[str, models.QueueStats]:
    """Counts per queue, from the `pgqueue.queue_stats` view."""
    records = await db.fetch(queries.QUEUE_STATS)
    return {r["queue"]: models.QueueStats.from_record(r) for r in records}


async def count_waiting(db: Executor, queues: Sequence[str]) -> int:
    """Runnable jobs (queued, `run_at` passed) in these queues."""
    count: int = await db.fetchval(queries.COUNT_WAITING, list(queues))
    return count


MAX_JOB_ID = 2**63 - 1  # above every id: the first page of a listing reads below it


async def list_jobs(db: Executor, page: models.JobPage) -> list[models.Job]:
    """The jobs `page` asks for, newest first (see `queries.LIST_JOBS`)."""
    payload_key, payload_values = page.payload_match or (None, [])
    ended_badly = page.state in (models.JobState.FAILED, models.JobState.CANCELLED)
    records = await db.fetch(
        queries.LIST_JOBS_ENDED_BADLY if ended_badly else queries.LIST_JOBS,
        MAX_JOB_ID if page.before is None else page.before,
        page.queue,
        None if page.state is None else page.state.value,
        page.kind,
        payload_key,
        list(payload_values),
        page.limit,
    )
    return _jobs(records)


async def retry_job(db: Executor, job_id: int) -> models.Job | None:
    """Put a failed or cancelled job back to `queued` with a fresh attempt budget.

    Returns the job as queued again, or None when no failed or cancelled job has this id.
    """
    return _job_or_none(await db.fetchrow(queries.RETRY_JOB, job_id))


async def pause_queue(db: Executor, queue: str) -> None:
    """Stop every claim from taking jobs of `queue` (idempotent)."""
    await db.execute(queries.PAUSE_QUEUE, queue)


async def resume_queue(db: Executor, queue: str) -> None:
    """Let claims take jobs of `queue` again, and wake its workers (idempotent)."""
    await db.execute(queries.RESUME_QUEUE, queue)


async def queue_overview(db: Executor) -> list[models.QueueInfo]:
    """Every queue with jobs, counters or a pause: its counts, pause, oldest wait, recent rate."""
    return [models.QueueInfo.from_record(r) for r in await db.fetch(queries.QUEUE_OVERVIEW)]


async def finished_per_minute(
    db: Executor, queue: str | None, minutes: int
) -> list[models.FinishedMinute]:
    """Jobs finished in each of the last `minutes` minutes, oldest first, the current last."""
    records = await db.fetch(queries.FINISHED_PER_MINUTE, queue, minutes)
    return [models.FinishedMinute.from_record(r) for r in records]


async def purge_finished(
    db: Executor,
    *,
    succeeded_older_than_s: float,
    failed_older_than_s: float,
    batch_size: int = PURGE_BATCH,
    max_batches: int = PURGE_MAX_BATCHES,
) -> int:
    """Delete finished jobs in short batches: succeeded and cancelled ones older than
    `succeeded_older_than_s`, failed ones older than `failed_older_than_s`. Each batch is its
    own short transaction; returns how many were deleted."""
    rules = (
        (("succeeded", "cancelled"), succeeded_older_than_s),
        (("failed",), failed_older_than_s),
    )
    deleted = 0
    async with _connection(db) as conn:
        for states, age_s in rules:
            for _ in range(max_batches):
                status = await conn.execute(queries.PURGE_FINISHED, list(states), age_s, batch_size)
                count = int(status.split()[-1])
                deleted += count
                if count < batch_size:
                    break
        await conn.execute(queries.FOLD_FINISHED_COUNTS)
    return deleted


async def purge_idle_concurrency_slots(db: Executor, *, batch_size: int = PURGE_BATCH) -> int:
    """Delete up to `batch_size` concurrency-slot rows that no job needs any more (their count
    is 0 and no live job has their key); returns how many. Safe beside concurrent enqueues and
    claims of those keys: see LOCK_IDLE_CONCURRENCY_SLOTS and schema version 3."""
    async with _connection(db) as conn, conn.transaction():
        keys = [r["key"] for r in await conn.fetch(queries.LOCK_IDLE_CONCURRENCY_SLOTS, batch_size)]
        if not keys:
            return 0
        status = await conn.execute(queries.PURGE_IDLE_CONCURRENCY_SLOTS, keys)
    return int(status.split()[-1])


async def vacuum(db: Executor) -> None:
    """VACUUM the queue's tables (outside any transaction; skips tables being vacuumed)."""
    # A role that does not own the tables gets a warning from the server, not an error.
    await db.execute(queries.VACUUM_QUEUE_TABLES)


# -- claim and complete ----------------------------------------------------------------------


async def claim(db: Executor, request: ClaimRequest) -> list[models.Job]:
    """Claim up to `request.limit` runnable jobs; each now holds a fresh lease."""
    records = await db.fetch(
        queries.CLAIM_JOBS,
        list(request.queues),
        request.limit,
        request.worker_id,
        request.lease_s,
        list(request.kinds),
    )
    return _jobs(records)


def _success_fields(successes: Sequence[Success]) -> tuple[list[int], str]:
    fields = {str(s.job_id): [s.lease_token, s.result_json, s.progress_json] for s in successes}
    return [s.job_id for s in successes], json.dumps(fields)


async def complete(db: Executor, successes: Sequence[Success]) -> set[int]:
    """Write these successes, each fenced by its lease; returns the ids written."""
    if not successes:
        return set()
    rows = await db.fetch(queries.COMPLETE_JOBS, *_success_fields(successes))
    return {row["id"] for row in rows}


async def complete_and_claim(
    db: Executor, successes: Sequence[Success], request: ClaimRequest
) -> tuple[set[int], list[models.Job]]:
    """`complete` and `claim` in one statement: the freed slots go straight to new jobs.

    This is the worker's fast path under load: one round trip per batch instead of two, which
    measured 1.5-2x the no-op throughput of complete-then-claim. The claim sees concurrency
    counts from before these completions (it may take fewer jobs of a key, never more).
    """
    rows = await db.fetch(
        queries.COMPLETE_AND_CLAIM_JOBS,
        *_success_fields(successes),
        list(request.queues),
        request.limit,
        request.worker_id,
        request.lease_s,
        list(request.kinds),
    )
    written = {job_id for row in rows if row["completed_ids"] for job_id in row["completed_ids"]}
    return written, _jobs(row for row in rows if row["id"] is not None)


async def fail_attempt(
    db: Executor,
    job_id: int,
    lease_token: int,
    *,
    retryable: bool,
    delay_s: float,
    error: str,
    progress_json: str | None,
) -> models.Job | None:
    """Record a failed attempt (fenced): retry after `delay_s`, or fail for good, or end
    cancelled when a cancel was requested. Returns the row written, None when the lease was
    lost."""
    record = await db.fetchrow(
        queries.FAIL_ATTEMPT,
        job_id,
        lease_token,
        retryable,
        capped_delay_s(delay_s),
        error,
        progress_json,
    )
    return _job_or_none(record)


async def throttle(
    db: Executor,
    job_id: int,
    lease_token: int,
    rate_limit_key: str,
    *,
    pause_s: float,
    delay_s: float,
    error: str,
    progress_json: str | None,
) -> models.Job | None:
    """The handler's upstream pushed back: requeue the job (fenced) after `delay_s` without
    spending its attempt, and pause its key for `pause_s` on every worker, in one transaction
    (nothing else sees the job back in the queue with its key still open). Returns the row
    written (`cancelled` when a cancel was requested), None when the lease was lost."""
    async with _connection(db) as conn, conn.transaction():
        record = await conn.fetchrow(
            queries.THROTTLE_JOB,
            job_id,
            lease_token,
            capped_delay_s(delay_s),
            error,
            progress_json,
        )
        if record is None:
            return None
        job = models.Job.from_record(record)
        if job.state is models.JobState.QUEUED:
            await conn.execute(
                queries.PAUSE_RATE_LIMIT_KEY, rate_limit_key, capped_delay_s(pause_s)
            )
        return job


async def set_rate_limit(db: Executor, key: str, limit: models.RateLimit) -> None:
    """Key `key` allows `limit` from now on (see `queries.SET_RATE_LIMIT`)."""
    await db.execute(queries.SET_RATE_LIMIT, key, limit.limit, limit.period_s)


async def remove_rate_limit(db: Executor, key: str) -> None:
    """Key `key` has no limit any more; a throttle it carries still runs out."""
    await db.execute(queries.REMOVE_RATE_LIMIT, key)


async def list_rate_limits(db: Executor) -> list[dict[str, Any]]:
    """Every key with a limit or a throttle (see `queries.LIST_RATE_LIMITS`)."""
    return [dict(record) for record in await db.fetch(queries.LIST_RATE_LIMITS)]


async def cancel_held(db: Executor, job_id: int, lease_token: int, error: str) -> models.Job | None:
    """End a held job `cancelled` (fenced); None when the lease was lost."""
    return _job_or_none(await db.fetchrow(queries.CANCEL_HELD_JOB, job_id, lease_token, error))


async def release(db: Executor, leases: Sequence[HeldLease]) -> dict[int, models.JobState]:
    """Give held jobs back without spending their attempt (fenced); a job whose cancel was
    requested ends cancelled instead. Returns each released job's new state."""
    if not leases:
        return {}
    tokens = json.dumps({str(lease.job_id): lease.lease_token for lease in leases})
    rows = await db.fetch(queries.RELEASE_JOBS, [lease.job_id for lease in leases], tokens)
    return {row["id"]: models.JobState(row["state"]) for row in rows}


async def renew(db: Executor, leases: Sequence[HeldLease], lease_s: float) -> Renewal:
    """Extend every lease of `leases` by `lease_s` from the database's now(), in one
    statement, writing their pending progress; rows someone holds locked are skipped."""
    if not leases:
        return Renewal(frozenset(), frozenset(), frozenset(), frozenset())
    fields = json.dumps(
        {str(lease.job_id): [lease.lease_token, lease.progress_json] for lease in leases}
    )
    records = await db.fetch(
        queries.RENEW_LEASES, [lease.job_id for lease in leases], fields, lease_s
    )
    renewed = frozenset(r["id"] for r in records if r["renewed"])
    busy = frozenset(r["id"] for r in records if not r["renewed"])
    return Renewal(
        renewed=renewed,
        busy=busy,
        cancel_requested=frozenset(r["id"] for r in records if r["cancel_requested"]),
        lost=frozenset(lease.job_id for lease in leases) - renewed - busy,
    )


async def set_progress(
    db: Executor, job_id: int, lease_token: int, progress_json: str
) -> bool | None:
    """Write a held job's progress (fenced). Returns whether a cancel was requested, or None
    when the lease was lost."""
    record = await db.fetchrow(queries.SET_PROGRESS, job_id, lease_token, progress_json)
    return None if record is None else bool(record["cancel_requested"])


async def lock_held(
    conn: asyncpg.Connection, job_id: int, lease_token: int, *, idle_limit_s: float
) -> bool:
    """Inside `conn`'s transaction, lock the held job's row (the reaper then cannot take it
    until the transaction ends); False when the lease is already lost.

    The transaction may then sit idle for at most `idle_limit_s`: a worker cut off from the
    database mid-transaction leaves its session idle in transaction, holding the row lock
    that keeps every reaper away, until the server notices the dead link (hours, with TCP's
    defaults). The server ends such a transaction at this limit instead.
    """
    record = await conn.fetchrow(
        queries.LOCK_HELD_JOB, job_id, lease_token, _milliseconds(idle_limit_s)
    )
    return record is not None


def _milliseconds(seconds: float) -> str:
    # A setting's value as set_config takes it: whole milliseconds, at least one.
    return str(max(1, math.ceil(seconds * 1000)))


async def extend_held(
    conn: asyncpg.Connection, job_id: int, lease_token: int, lease_s: float
) -> None:
    """Inside `conn`'s transaction (which holds the job's row), renew its lease from the
    moment of the call, not from the transaction's start."""
    await conn.execute(queries.EXTEND_HELD_LEASE, job_id, lease_token, lease_s)


async def complete_held(conn: asyncpg.Connection, success: Success) -> models.Job | None:
    """Write one success inside `conn`'s transaction (fenced); None when the lease was lost."""
    record = await conn.fetchrow(
        queries.COMPLETE_JOB,
        success.job_id,
        success.lease_token,
        success.result_json,
        success.progress_json,
    )
    return _job_or_none(record)


async def seconds_until_due(
    db: Executor, queues: Sequence[str], kinds: Sequence[str]
) -> float | None:
    """Seconds until the next delayed job of these queues and kinds is due, or a rate-limit
    key holding back runnable jobs of theirs allows a start again; None if nothing waits."""
    value = await db.fetchval(queries.SECONDS_UNTIL_DUE, list(queues), list(kinds))
    return None if value is None else float(value)


async def seconds_until_key_allows(
    db: Executor, queues: Sequence[str], kinds: Sequence[str]
) -> float | None:
    """Seconds until a rate-limit key holding back runnable jobs of these queues and kinds
    allows a start again; None if no key holds any back."""
    value = await db.fetchval(queries.SECONDS_UNTIL_KEY_ALLOWS, list(queues), list(kinds))
    return None if value is None else float(value)


# -- the reaper ------------------------------------------------------------------------------


async def reap(db: Executor, policy: retry.RetryPolicy, *, batch_size: int) -> list[models.Job]:
    """Move one batch of jobs whose lease expired on: back to queued after their backoff,
    failed once their attempts are spent, cancelled when a cancel was pending.

    Returns the jobs as reaped (empty when another reaper holds the lock). A transaction-scoped
    advisory lock lets one reaper work at a time, and `SKIP LOCKED` keeps even concurrent runs
    disjoint, so every worker may run it.
    """
    async with _connection(db) as conn, conn.transaction():
        # Bounded like a handler's transaction (see lock_held): a reaper cut off while it
        # holds the fleet-wide lock must not keep every other reaper out for hours.
        if not await conn.fetchval(queries.TRY_REAPER_LOCK, _milliseconds(REAPER_IDLE_LIMIT_S)):
            return []
        expired = await conn.fetch(queries.SELECT_EXPIRED_LEASES, batch_size)
        if not expired:
            return []
        # The backoff comes from the pure policy; the database adds it to its own now(). The
        # rows are locked, so nobody changes them in between.
        delays = json.dumps({str(r["id"]): policy.delay_s(max(r["attempts"], 1)) for r in expired})
        records = await conn.fetch(queries.REAP_JOBS, [r["id"] for r in expired], delays)
    return _jobs(records)


# -- schedules -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleTick:
    """One tick of a periodic job, as the scheduler asks for it."""

    name: str
    kind: str
    queue: str
    schedule: str
    payload: Any
    tick: datetime
    next_tick: datetime

    @property
    def idempotency_key(self) -> str:
        """The job's key: one job per schedule and tick, even if a tick were fired twice."""
        return f"pgqueue.schedule:{self.name}:{self.tick.isoformat()}"


async def database_now(db: Executor) -> datetime:
    """The database's `now()`."""
    moment: datetime = await db.fetchval(queries.DATABASE_NOW)
    return moment


async def fire_schedule(
    db: Executor, tick: ScheduleTick, *, max_attempts: int
) -> models.Job | None:
    """Enqueue `tick`'s job unless the schedule is new (it then starts from `tick`) or another
    worker fired this tick already; one transaction, so a tick becomes at most one job."""
    args = (tick.name, tick.kind, tick.queue, tick.schedule, tick.tick, tick.next_tick)
    async with _connection(db) as conn, conn.transaction():
        if await conn.fetchval(queries.INSERT_SCHEDULE, *args) is not None:
            return None
        if await conn.fetchval(queries.ADVANCE_SCHEDULE, *args) is None:
            return None
        spec = models.JobSpec(
            kind=tick.kind,
            payload=tick.payload,
            queue=tick.queue,
            idempotency_key=tick.idempotency_key,
        )
        [job] = await enqueue(conn, [spec], default_queue=tick.queue, max_attempts=max_attempts)
        await conn.execute(queries.SET_SCHEDULE_JOB, tick.name, job.id)
    return job


async def list_schedules(db: Executor) -> list[dict[str, Any]]:
    """Every schedule (for the dashboard): name, kind, queue, schedule, ticks, last job."""
    return [dict(record) for record in await db.fetch(queries.LIST_SCHEDULES)]


# -- metrics ---------------------------------------------------------------------------------


async def settled_before(conn: asyncpg.Connection, max_lag_s: float) -> datetime:
    """The instant before which every finished job has committed (or never will), at most
    `max_lag_s` ago: a scrape counts jobs finished up to here (see pgqueue.metrics)."""
    moment: datetime = await conn.fetchval(queries.SETTLED_BEFORE, max_lag_s)
    return moment


async def finished_between(
    conn: asyncpg.Connection, since: datetime, until: datetime, bounds: Sequence[float]
) -> list[asyncpg.Record]:
    """Jobs finished in [since, until) by queue, kind, state and duration bucket (`bounds`:
    the buckets' upper bounds): `jobs` and their summed `seconds`."""
    rows: list[asyncpg.Record] = await conn.fetch(
        queries.FINISHED_BETWEEN, since, until, list(bounds)
    )
    return rows
