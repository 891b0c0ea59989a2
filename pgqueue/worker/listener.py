"""The LISTEN connection that wakes a worker when jobs are enqueued, and keeps itself alive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

import asyncpg

from pgqueue import queries

logger = logging.getLogger(__name__)

CHANNEL = "pgqueue_jobs"
RECONNECT_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # after the last, keep retrying at 5 s


class Listener:
    """Holds one dedicated LISTEN connection and calls `wake` for every relevant notification.

    A lost connection (server restart, `pg_terminate_backend`, network) is noticed through
    asyncpg's termination callback or a periodic ping, and re-established with backoff; after
    every (re)connection `wake` is called once, since notifications sent while the listener
    was away are gone and jobs may be waiting.

    Args:
        dsn: where to connect (a session: LISTEN does not work through a transaction pooler).
        queues: wake only for these queues.
        wake: called (from the event loop) when a job may be waiting.
        ping_interval_s: how often an idle connection is checked.
    """

    def __init__(
        self,
        dsn: str,
        queues: Collection[str],
        wake: Callable[[], None],
        *,
        ping_interval_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._queues = frozenset(queues)
        self._wake = wake
        self._ping_interval_s = ping_interval_s
        self.connected = asyncio.Event()
        self.backend_pid: int | None = None

    async def run(self) -> None:
        """Listen until cancelled."""
        failures = 0
        while True:
            try:
                conn = await asyncpg.connect(self._dsn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                failures += 1
                logger.warning(
                    "listener cannot connect (%s); retrying in %.2fs",
                    exc,
                    delay,
                    extra={"action": "listener_reconnect"},
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            try:
                await self._listen(conn)
            finally:
                self.connected.clear()
                self.backend_pid = None
                if not conn.is_closed():
                    conn.terminate()

    async def _listen(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._on_notify)
        self.backend_pid = conn.get_server_pid()
        self.connected.set()
        logger.info("listening on %s", CHANNEL, extra={"action": "listener_connected"})
        self._wake()
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), timeout=self._ping_interval_s)
            except TimeoutError:
                try:
                    await asyncio.wait_for(
                        conn.execute(queries.PING), timeout=self._ping_interval_s
                    )
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    break
        logger.warning("listener connection lost", extra={"action": "listener_lost"})

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload in self._queues:
            self._wake()
