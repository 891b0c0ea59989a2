"""Rows to jobs: a statement's rows read by position (`Job.from_records`) are the jobs that
reading each row by name (`Job.from_record`) gives, whatever the order of the columns."""

from __future__ import annotations

import asyncpg

from pgqueue import Queue, models


async def test_rows_read_by_position_are_the_jobs_read_by_name(
    queue: Queue, pool: asyncpg.Pool
) -> None:
    await queue.enqueue(
        "k",
        {"n": 1},
        priority=3,
        idempotency_key="a",
        concurrency_key="c",
        concurrency_limit=2,
        rate_limit_key="r",
        budget_keys=["b"],
        cost=1.5,
    )
    await queue.enqueue("k", [1, "two"], notify_finished=True)
    await queue.enqueue("k")
    await pool.execute(
        "UPDATE pgqueue.jobs SET progress = '{\"percent\": 5}', result = '[1]' WHERE id = ("
        "SELECT min(id) FROM pgqueue.jobs)"
    )
    for statement in (
        "SELECT * FROM pgqueue.jobs ORDER BY id",
        # Other columns first, and the job's in another order: found by name once, then read
        # by position.
        "SELECT 1 AS extra, j.result, j.state, j.* FROM pgqueue.jobs AS j ORDER BY id DESC",
    ):
        records = await pool.fetch(statement)
        by_name = [models.Job.from_record(record) for record in records]
        assert models.Job.from_records(records) == by_name
        assert [job.state for job in by_name] == [models.JobState.QUEUED] * 3
    assert models.Job.from_records([]) == []
