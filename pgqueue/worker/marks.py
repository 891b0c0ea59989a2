"""`MarkAdvancer`: moves the claim marks of the worker's queues forward (schema v15).

A claim scans each (queue, priority) from its mark, so that the entries of jobs claimed while a
long snapshot is held (dead, but not yet removable) are not walked by every claim. Something
has to move the marks past the jobs the claims took: this task, every half second, on its own
loop so that a slow chore (a VACUUM of a big table) never holds it up. Every worker runs it;
the statement moves each mark at most once per ADVANCE_EVERY_S across the fleet and skips the
marks another worker is moving. Every CHECK_EVERY advances it searches from the index's front
instead, a check that lowers a mark if anything ever lay before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pgqueue import store
from pgqueue.worker.transient import TRANSIENT_ERRORS

logger = logging.getLogger("pgqueue.worker")

ADVANCE_EVERY_S = 0.5  # a mark moves at most this often (each move is one row version)
CHECK_EVERY = 120  # advances between two searches from the front (about a minute)
ERROR_DELAY_S = 1.0


class MarkAdvancer:
    """Run `run()` as a supervised task.

    Args:
        db: the worker's own pool.
        queues: the worker's queues.
    """

    def __init__(self, db: store.Executor, queues: Sequence[str]) -> None:
        self._db = db
        self._queues = list(queues)
        self._rounds = 0

    async def advance_once(self) -> int:
        """One round; returns how many marks moved."""
        self._rounds += 1
        return await store.advance_claim_marks(
            self._db,
            self._queues,
            every_s=ADVANCE_EVERY_S * 0.9,  # this loop's own jitter must not skip a turn
            from_front=self._rounds % CHECK_EVERY == 0,
        )

    async def run(self) -> None:
        """Advance every ADVANCE_EVERY_S until cancelled; a failure is logged and retried."""
        while True:
            try:
                await self.advance_once()
            except Exception as exc:  # survives anything a database can throw
                log = logger.warning if isinstance(exc, TRANSIENT_ERRORS) else logger.exception
                log(
                    "advancing the claim marks failed: %s",
                    exc,
                    extra={"action": "claim_marks_failed"},
                )
                await asyncio.sleep(ERROR_DELAY_S)
                continue
            await asyncio.sleep(ADVANCE_EVERY_S)
