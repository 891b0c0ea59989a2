"""Enqueue: the insert of new jobs, its grouping per pool, and the NOTIFY that follows."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from pgqueue import models, notify, queries
from pgqueue.store._common import Executor, _connection


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
        fairness_key=spec.fairness_key,
        fairness_weight=spec.fairness_weight,
        cost=None if spec.cost is None else models.check_amount(spec.cost, "cost"),
        budget_keys=None if spec.budget_keys is None else list(spec.budget_keys),
        notify_finished=spec.notify_finished,
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
        if spec.fairness_key is not None:
            row["fairness_key"] = spec.fairness_key
            row["fairness_weight"] = spec.fairness_weight
        if spec.cost is not None:
            row["cost"] = str(spec.cost)  # jsonb_to_recordset reads "1.5" as numeric exactly
        if spec.budget_keys is not None:
            row["budget_keys"] = list(spec.budget_keys)
        if spec.notify_finished:
            row["notify_finished"] = True
        rows.append(row)
    return json.dumps(rows)
