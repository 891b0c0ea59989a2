"""Wake-ups sent after an enqueue commits, coalesced across the callers of one process.

Why not a NOTIFY inside the enqueue's transaction (what the insert trigger did up to schema
version 3): Postgres serialises the commits of notifying transactions behind one lock that is
held across the commit's WAL flush, group commit included. Measured with pgbench, 10 clients
inserting one row per transaction: 15,238 commits/s into a plain table, 5,397/s with a NOTIFY
trigger; one caller of `enqueue` or fifty made almost no difference.

So an enqueue in autocommit (or in a transaction pgqueue opened itself) commits without a
notification, and then asks this module for one. A NOTIFY sent on its own has no WAL to flush,
so the lock is held for microseconds, and callers that ask while one is in flight share the
next one: however many callers enqueue at once, a process sends at most one NOTIFY at a time
per database, one statement naming every queue that was asked for.

What a caller is promised: when `notify_committed` returns, a NOTIFY sent *after* its commit
has itself committed, on the database the caller enqueued into (an in-flight NOTIFY sent before
that commit does not count: a worker woken by it might have looked too early). This is the same
promise the trigger kept ("when enqueue returns, workers have been woken"); what it adds is one
round trip to the enqueue call, two when a NOTIFY was already in flight, and nothing to the
wake-up latency measured from the moment the enqueue returns.

The coalescing is per process and per event loop: two processes enqueueing at once send their
own NOTIFYs. Nothing here is session state (each NOTIFY is its own statement in its own
autocommit transaction), so it works through transaction-mode poolers too.

A NOTIFY that fails (a connection lost just after the commit) is logged, not raised: the job
is committed, and a caller that saw an error might enqueue it twice. Workers still find it at
their next poll; the queues it named are sent again with the next NOTIFY of this process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

# What sends one NOTIFY of the given queues on a connection (store.notify_queues: the store
# runs pgqueue's SQL; this module only decides when).
Send = Callable[[asyncpg.Connection, Sequence[str]], Awaitable[None]]


class Notifier:
    """Coalesces the wake-ups of the callers of one database in one event loop.

    Rounds are numbered: round n is the n-th NOTIFY statement started, and it names every
    queue asked for before it started. A caller needs the first round that starts after it
    asked, and waits for that round to finish; whichever waiting caller finds no round in
    flight sends the next one on its own connection (so no extra connection is needed, and no
    caller sends on behalf of others for longer than one round).
    """

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._started = 0
        self._finished = 0
        self._sending = False
        self._round_over = asyncio.Event()

    async def notify(self, conn: asyncpg.Connection, queues: Iterable[str], send: Send) -> None:
        """Return once a NOTIFY of `queues`, started after this call, has committed."""
        self._pending.update(queues)
        needed = self._started + 1
        while self._finished < needed:
            if self._sending:
                await self._round_over.wait()
                continue
            if not await self._send(conn, send):
                return  # logged; the queues stay pending for the next round

    async def _send(self, conn: asyncpg.Connection, send: Send) -> bool:
        queues = sorted(self._pending)
        self._pending.clear()
        self._sending = True
        self._started += 1
        self._round_over.clear()
        sent = False
        try:
            await send(conn, queues)
            sent = True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning(
                "could not notify workers of new jobs in %s (%s); they will find them at "
                "their next poll",
                ", ".join(queues),
                exc,
                extra={"action": "notify_failed"},
            )
        finally:
            # Cancelled or failed: the round did not happen. Its queues go back, and a caller
            # still waiting for it finds no round in flight and sends it again.
            self._sending = False
            if sent:
                self._finished = self._started
            else:
                self._started -= 1
                self._pending.update(queues)
            self._round_over.set()
        return sent


# (id of the event loop, the database) -> its notifier. Loops are not all weak-referenceable
# (uvloop's are not), so the loop is kept beside its notifier and a reused id is detected.
_notifiers: dict[tuple[int, Any], tuple[asyncio.AbstractEventLoop, Notifier]] = {}


def _database(conn: asyncpg.Connection) -> Any:
    """Which database `conn` talks to: the address and the database name it connected with.

    A NOTIFY reaches only the listeners of its own database, so callers of different databases
    must never share a round. asyncpg keeps both on every connection (and a pool's connection
    proxy forwards them); a connection without them gets a notifier of its own.
    """
    addr = getattr(conn, "_addr", None)
    database = getattr(getattr(conn, "_params", None), "database", None)
    if addr is None or database is None:
        return ("connection", id(conn))
    return (str(addr), database)


def notifier_for(conn: asyncpg.Connection) -> Notifier:
    """The notifier of `conn`'s database in the running event loop."""
    loop = asyncio.get_running_loop()
    key = (id(loop), _database(conn))
    entry = _notifiers.get(key)
    if entry is None or entry[0] is not loop:
        if len(_notifiers) > 64:  # loops come and go in tests; drop the closed ones' entries
            for stale in [k for k, (lp, _) in _notifiers.items() if lp.is_closed()]:
                del _notifiers[stale]
        entry = (loop, Notifier())
        _notifiers[key] = entry
    return entry[1]


async def notify_committed(conn: asyncpg.Connection, queues: Iterable[str], send: Send) -> None:
    """Wake the workers of `queues` about jobs just committed on `conn`'s database."""
    await notifier_for(conn).notify(conn, queues, send)
