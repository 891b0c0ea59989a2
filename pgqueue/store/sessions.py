"""The dashboard's sessions: rows keyed by the hash of the cookie's key (schema v10).

What a row holds and why: `pgqueue.dashboard.sessions`. Here: only how it is stored.
"""

from __future__ import annotations

from datetime import datetime

from pgqueue import queries
from pgqueue.store._common import Executor


async def open_session(db: Executor, key_hash: bytes, sealed: bytes, max_age_s: float) -> datetime:
    """Store a session for `max_age_s` seconds; when it ends."""
    expires_at: datetime = await db.fetchval(queries.OPEN_SESSION, key_hash, sealed, max_age_s)
    return expires_at


async def read_session(db: Executor, key_hash: bytes) -> bytes | None:
    """The sealed credential of a session that has not ended, or None."""
    sealed: bytes | None = await db.fetchval(queries.READ_SESSION, key_hash)
    return sealed


async def close_session(db: Executor, key_hash: bytes) -> None:
    """End a session now (nothing happens for an unknown one)."""
    await db.execute(queries.CLOSE_SESSION, key_hash)


async def purge_expired_sessions(db: Executor) -> int:
    """Delete the sessions that ended; how many."""
    status = await db.execute(queries.PURGE_EXPIRED_SESSIONS)
    return int(status.split()[-1])
