"""`Heartbeat`: keeps the leases of every job a worker holds, and polices the ones it cannot.

Every third of a lease, one statement renews all of them (and writes throttled progress) on a
connection of the heartbeat's own: a pool busy with claims, or a handler's open transaction
holding its job's row, must not delay the renewal of every other job. Rows someone holds
locked are skipped (`busy`), not waited for; nobody can reap a locked row either.

A handler whose lease could not be renewed in time is cancelled: the job may belong to someone
else by now, and its writes would be refused anyway. A handler whose job was cancelled is
cancelled too. A job whose outcome is already decided is never cancelled: a renewal that
crossed the write of its success reads as "lost", but the success is what happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import asyncpg

from pgqueue import store
from pgqueue.database import Database
from pgqueue.worker.held import Phase, RunningJob, StopReason
from pgqueue.worker.transient import TRANSIENT_ERRORS, retry_delay_s

logger = logging.getLogger("pgqueue.worker")

MIN_RENEW_TIMEOUT_S = 2.0  # seconds one renewal may take, at the least


class Heartbeat:
    """Renews leases; run `run()` as a supervised task.

    Args:
        database: where to connect (its own connection, reconnected after any failure).
        running: the worker's held jobs, by id (read, never changed here).
        lease_s: the lease each renewal grants.
        interval_s: seconds between renewals.
        session: the session settings of the connection (where a session exists).
    """

    def __init__(
        self,
        database: str | Database,
        running: Mapping[int, RunningJob],
        *,
        lease_s: float,
        interval_s: float,
        session: Mapping[str, str] | None = None,
    ) -> None:
        self._database = Database.of(database)
        self._running = running
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._session = dict(session or {})
        self._conn: asyncpg.Connection | None = None

    async def run(self) -> None:
        """Beat until cancelled."""
        failures = 0
        try:
            while True:
                try:
                    await self.beat()
                    failures = 0
                except Exception as exc:  # the heartbeat survives anything a database throws
                    failures += 1
                    # A renewal that gave up at a deadline: police that lease now, not after
                    # the pause before the next beat.
                    self.police(time.monotonic())
                    await self._disconnect()
                    log = logger.warning if isinstance(exc, TRANSIENT_ERRORS) else logger.exception
                    log("heartbeat failed: %s", exc, extra={"action": "heartbeat_failed"})
                    await asyncio.sleep(min(self._interval_s, retry_delay_s(failures)))
                    continue
                await asyncio.sleep(self._interval_s)
        finally:
            await self._disconnect()

    async def beat(self) -> store.Renewal | None:
        """Police expired leases, then renew every lease still held; None if none was."""
        self.police(time.monotonic())
        held = [
            r for r in self._running.values() if r.phase is not Phase.DONE and not r.stop_reason
        ]
        if not held:
            return None
        leases = [
            store.HeldLease(r.job.id, r.lease_token, r.context.take_pending_progress())
            for r in held
        ]
        sent_at = time.monotonic()
        # Bounded: a connection that hangs (a network cut off) must not stop the policing
        # above from running again; the failure reconnects at the next beat. Never past the
        # first deadline of a handler still running either: there its job may be reaped and
        # run by another worker, and the handler here must stop then, not once a renewal on
        # a dead link gives up (with 2.5 s leases, handlers ran on for up to 0.7 s after the
        # reaper had given their concurrency slots to other runs). Jobs whose outcome is being
        # written are not policed (the completer minds their deadline), so they set no bound.
        budget_s = max(self._interval_s, MIN_RENEW_TIMEOUT_S)
        deadlines = [r.lease_deadline for r in held if r.phase is Phase.RUNNING]
        if deadlines:
            budget_s = min(budget_s, min(deadlines) - sent_at)
        try:
            async with asyncio.timeout(budget_s):
                conn = await self._connection()
                renewal = await store.renew(conn, leases, self._lease_s)
        except BaseException:
            self._restore_progress(leases)
            raise
        self.apply(renewal, sent_at, leases)
        return renewal

    def police(self, now: float) -> None:
        """Cancel handlers whose lease ran out before it could be renewed."""
        for running in self._running.values():
            if now > running.lease_deadline and running.cancel(StopReason.LEASE_LOST):
                logger.warning(
                    "job %s: lease not renewed in time; cancelling its handler",
                    running.job.id,
                    extra={"action": "lease_expired_locally", "job_id": running.job.id},
                )

    def apply(self, renewal: store.Renewal, sent_at: float, leases: list[store.HeldLease]) -> None:
        """Act on what a renewal learned (sent at `sent_at`, monotonic)."""
        for job_id in renewal.renewed:
            running = self._running.get(job_id)
            if running is not None:
                running.lease_deadline = sent_at + self._lease_s
        for job_id in renewal.busy:
            running = self._running.get(job_id)
            # Locked by its own handler's transaction: nobody can take it until that ends,
            # and the transaction renews the lease as it commits.
            if running is not None and running.context.in_transaction:
                running.lease_deadline = sent_at + self._lease_s
        for job_id in renewal.cancel_requested:
            running = self._running.get(job_id)
            if running is not None:
                running.cancel(StopReason.CANCEL_REQUESTED)
        for job_id in renewal.lost:
            running = self._running.get(job_id)
            # RunningJob.cancel leaves jobs whose outcome is decided alone: "lost" then means
            # that the outcome was written while this renewal was in flight.
            if running is not None:
                running.cancel(StopReason.LEASE_LOST)
        self._restore_progress([lease for lease in leases if lease.job_id in renewal.busy])

    def _restore_progress(self, leases: list[store.HeldLease]) -> None:
        # Progress taken for a renewal that did not write it goes back, unless a newer update
        # replaced it meanwhile.
        for lease in leases:
            running = self._running.get(lease.job_id)
            if running is not None and lease.progress_json is not None:
                running.context.restore_pending_progress(lease.progress_json)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._database.connect(session=self._session)
        return self._conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
