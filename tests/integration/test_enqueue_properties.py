"""Property: however specs with idempotency keys are split into batches and raced, each key
ends up with exactly one row, every caller gets that row back, and exactly one caller is told
it is new."""

from __future__ import annotations

import asyncio

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgqueue import JobSpec, Queue

keys = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d"]))
batches = st.lists(st.lists(keys, min_size=1, max_size=6), min_size=1, max_size=5)


@settings(
    max_examples=40,
    deadline=None,
    # Each example starts from an empty table (TRUNCATE below), so sharing the database
    # fixture across examples is safe.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=batches)
def test_idempotent_enqueue_under_concurrent_batches(
    db_url: str, batches: list[list[str | None]]
) -> None:
    async def scenario() -> None:
        async with asyncpg.create_pool(db_url, min_size=1, max_size=len(batches) + 1) as pool:
            await pool.execute("TRUNCATE pgqueue.jobs")
            queue = Queue(pool)
            results = await asyncio.gather(
                *(
                    queue.enqueue_many([JobSpec(kind="k", idempotency_key=key) for key in batch])
                    for batch in batches
                )
            )
            rows = await pool.fetch("SELECT id, idempotency_key FROM pgqueue.jobs")
        flat = [
            (key, job)
            for batch, jobs in zip(batches, results, strict=True)
            for key, job in zip(batch, jobs, strict=True)
        ]
        distinct = {key for key, _ in flat if key is not None}
        unkeyed = sum(1 for key, _ in flat if key is None)
        assert len(rows) == len(distinct) + unkeyed
        id_of = {r["idempotency_key"]: r["id"] for r in rows if r["idempotency_key"]}
        for key, job in flat:
            assert job.idempotency_key == key
            if key is None:
                assert job.is_new
            else:
                assert job.id == id_of[key]
        for key in distinct:
            assert sum(1 for k, job in flat if k == key and job.is_new) == 1

    asyncio.run(scenario())
