"""The heartbeat outlives a connection that goes silent: it gives up on the renewal in time and
goes on policing the leases it could not renew."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from pgqueue import Queue, store
from pgqueue.worker.context import JobContext
from pgqueue.worker.heartbeat import MIN_RENEW_TIMEOUT_S, Heartbeat
from pgqueue.worker.held import RunningJob, StopReason
from tests.support.proxy import freezable_proxy


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class _Task:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


async def test_a_silent_connection_does_not_stall_the_heartbeat(queue: Queue, db_url: str) -> None:
    await queue.enqueue("k")
    (job,) = await store.claim(queue._pool, store.ClaimRequest(["default"], ["k"], 1, "w", 30.0))
    running = RunningJob(job=job, context=JobContext(job, None), lease_deadline=0.0)
    running.task = _Task()  # type: ignore[assignment]
    target = urlsplit(db_url)
    async with freezable_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        heartbeat = Heartbeat(_through(db_url, proxy.port), {job.id: running}, lease_s=0.6,
                              interval_s=0.2)  # fmt: skip
        running.lease_deadline = time.monotonic() + 60
        renewal = await heartbeat.beat()
        assert renewal is not None and renewal.renewed == {job.id}
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await heartbeat.beat()
        assert time.monotonic() - started < MIN_RENEW_TIMEOUT_S + 1.0
        # The next beat polices what could not be renewed: that handler is cancelled.
        running.lease_deadline = time.monotonic() - 1
        assert await heartbeat.beat() is None  # nothing left to renew
        assert running.stop_reason is StopReason.LEASE_LOST and running.task.cancelled
    await heartbeat._disconnect()
