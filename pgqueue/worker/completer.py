"""Group commit of successes: every job that finished while the last write was in flight is
completed by the next single statement.

At low load a success is written at once (a batch of one); under load, one UPDATE completes
hundreds of jobs, which is what lets one worker process run tens of thousands of short jobs a
second. Each completion is still fenced by its job's lease token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import asyncpg

from pgqueue import queries
from pgqueue.worker.transient import TRANSIENT_ERRORS, retry_delay_s

logger = logging.getLogger("pgqueue.worker")

MAX_BATCH = 2000  # completions per statement


@dataclasses.dataclass(slots=True)
class _Completion:
    job_id: int
    lease_token: int
    result_json: str
    progress_json: str | None
    lease_deadline: float  # time.monotonic(); past it the write is abandoned to the reaper
    future: asyncio.Future[bool]


class Completer:
    """Collects successes and writes them in batches; run `run()` as a supervised task.

    Args:
        pool: the worker's pool.
        max_batch: most completions per statement.
    """

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = MAX_BATCH) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._pending: list[_Completion] = []
        self._ready = asyncio.Event()

    async def complete(
        self,
        job_id: int,
        lease_token: int,
        result_json: str,
        progress_json: str | None,
        lease_deadline: float,
    ) -> bool:
        """Mark the job succeeded; True once written, False when the lease was lost."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(
            _Completion(job_id, lease_token, result_json, progress_json, lease_deadline, future)
        )
        self._ready.set()
        return await future

    async def run(self) -> None:
        """Write completions as they come, until cancelled."""
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._pending:
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                    await self._flush(batch)
        finally:
            # Whoever still waits learns that nothing was written: the reaper takes over.
            for completion in self._pending:
                if not completion.future.done():
                    completion.future.set_result(False)

    async def _flush(self, batch: list[_Completion]) -> None:
        failures = 0
        while batch:
            try:
                async with self._pool.acquire() as conn:
                    rows = await conn.fetch(
                        queries.COMPLETE_JOBS,
                        [c.job_id for c in batch],
                        [c.lease_token for c in batch],
                        [c.result_json for c in batch],
                        [c.progress_json for c in batch],
                    )
            except TRANSIENT_ERRORS as exc:
                failures += 1
                now = time.monotonic()
                expired = [c for c in batch if now > c.lease_deadline]
                _resolve(expired, False)
                batch = [c for c in batch if now <= c.lease_deadline]
                logger.warning(
                    "completing %d job(s) failed (%s); retrying",
                    len(batch),
                    exc,
                    extra={"action": "complete_retry"},
                )
                await asyncio.sleep(retry_delay_s(failures))
                continue
            except Exception:
                # Not a passing outage: leave the jobs running; their leases will expire and
                # the reaper will hand them on, so nothing is lost.
                logger.exception(
                    "completing %d job(s) failed", len(batch), extra={"action": "complete_failed"}
                )
                _resolve(batch, False)
                return
            written = {row[0] for row in rows}
            for completion in batch:
                if not completion.future.done():
                    completion.future.set_result(completion.job_id in written)
            return


def _resolve(completions: list[_Completion], value: bool) -> None:
    for completion in completions:
        if not completion.future.done():
            completion.future.set_result(value)
