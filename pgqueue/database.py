"""`Database`: where pgqueue connects, and how, for a direct server or a transaction pooler.

Behind a transaction-mode pooler (PgBouncer `pool_mode = transaction`, Supabase's pooler on
port 6543, RDS Proxy) one client connection is served by a different server connection from
one transaction to the next, so nothing may outlive a transaction:

- no prepared-statement cache: asyncpg's named statements, prepared on one server connection,
  are missing (or already taken) on the next (`statement_cache_size=0` uses unnamed ones);
- no session settings: startup parameters other than a few are refused by PgBouncer, and a
  `SET` would leak to whichever client gets that server connection next;
- no LISTEN: a notification is delivered to a server session, which the client no longer
  holds; LISTEN goes to `direct_url` when there is one, otherwise workers poll;
- no session-level advisory locks (pgqueue takes only transaction-scoped ones).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import asyncpg

POOL_MODE_VARIABLE = "DATABASE_POOL_MODE"
DIRECT_URL_VARIABLE = "DATABASE_DIRECT_URL"


class PoolMode(enum.StrEnum):
    """How the URL reaches Postgres."""

    SESSION = "session"  # a server directly, or a session-mode pooler
    TRANSACTION = "transaction"  # a transaction-mode pooler


@dataclasses.dataclass(frozen=True, slots=True)
class Database:
    """A database URL and what may be done over it.

    Args:
        url: a libpq URL (`postgresql://user:password@host:port/db`).
        pool_mode: `transaction` when `url` goes through a transaction-mode pooler.
        direct_url: a session-mode URL of the same database, used only for LISTEN when `url`
            is pooled (ignored in session mode, where `url` itself can LISTEN).
    """

    url: str
    pool_mode: PoolMode = PoolMode.SESSION
    direct_url: str | None = None

    @classmethod
    def of(cls, database: str | Database) -> Database:
        """`database` itself, or a URL as a direct (session-mode) database."""
        return database if isinstance(database, Database) else cls(database)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Database | None:
        """`DATABASE_URL`, `DATABASE_POOL_MODE` and `DATABASE_DIRECT_URL` of `environ`.

        For tools that need nothing else (migrations): None without `DATABASE_URL`;
        `ValueError` for a pool mode that is neither `session` nor `transaction`.
        """
        url = environ.get("DATABASE_URL")
        if not url:
            return None
        mode = environ.get(POOL_MODE_VARIABLE, "").strip().lower() or PoolMode.SESSION.value
        try:
            pool_mode = PoolMode(mode)
        except ValueError:
            choices = " or ".join(m.value for m in PoolMode)
            raise ValueError(f"{POOL_MODE_VARIABLE} must be {choices}, got {mode!r}") from None
        return cls(url, pool_mode, direct_url=environ.get(DIRECT_URL_VARIABLE) or None)

    @property
    def pooled(self) -> bool:
        """Whether the URL goes through a transaction-mode pooler."""
        return self.pool_mode is PoolMode.TRANSACTION

    @property
    def listen_url(self) -> str | None:
        """Where LISTEN can be held, or None (pooled without a direct URL: poll instead)."""
        return self.direct_url if self.pooled else self.url

    def options(self, session: Mapping[str, str] | None = None) -> dict[str, Any]:
        """asyncpg keyword arguments: `session` settings where a session exists, else none."""
        if self.pooled:
            # The session settings are optimisations (generic plans, no JIT, async commit);
            # behind the pooler they cannot be set per session, and per-transaction SET LOCAL
            # would cost two round trips more than they save. See docs/deploying.md.
            return {"statement_cache_size": 0}
        return {"server_settings": dict(session)} if session else {}

    async def connect(
        self, *, session: Mapping[str, str] | None = None, **kwargs: Any
    ) -> asyncpg.Connection:
        """One connection to `url`."""
        return await asyncpg.connect(self.url, **self.options(session), **kwargs)

    async def create_pool(
        self, *, session: Mapping[str, str] | None = None, **kwargs: Any
    ) -> asyncpg.Pool:
        """A pool of connections to `url` (`kwargs` go to `asyncpg.create_pool`)."""
        pool = await asyncpg.create_pool(self.url, **self.options(session), **kwargs)
        assert pool is not None
        return pool


POOLER_HINT = (
    "the database answered as if DATABASE_URL goes through a transaction-mode pooler "
    "(PgBouncer, Supabase's pooler on port 6543, RDS Proxy): prepared statements are lost "
    f"between transactions there. Set {POOL_MODE_VARIABLE}=transaction (and, for LISTEN, "
    f"{DIRECT_URL_VARIABLE} to a direct URL), or use a session-mode URL"
)


def pooler_hint(exc: BaseException) -> str | None:
    """`POOLER_HINT` when `exc` (or what caused it) is asyncpg meeting a transaction pooler."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen,
            asyncpg.InvalidSQLStatementNameError | asyncpg.DuplicatePreparedStatementError,
        ) and "__asyncpg_" in str(seen):
            return POOLER_HINT
        # PgBouncer's answer to the session settings a direct connection sends at startup.
        if isinstance(seen, asyncpg.ProtocolViolationError) and "unsupported startup" in str(seen):
            return POOLER_HINT
        seen = seen.__cause__ or seen.__context__
    return None
