"""Which database errors are worth retrying, and how long to wait between tries."""

from __future__ import annotations

import asyncpg

# Errors after which the same statement may succeed on a fresh connection: the server
# restarted or is starting, the connection dropped, too many clients for a moment, a deadlock
# victim. Anything else is a bug or bad data and is not retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    # What asyncpg raises when a pooled connection the server killed is reset on release.
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)
RETRY_DELAYS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # then every 2 s


def retry_delay_s(failures: int) -> float:
    """Seconds to wait after the `failures`-th consecutive failure (1-based)."""
    return RETRY_DELAYS_S[min(max(failures, 1), len(RETRY_DELAYS_S)) - 1]
