"""The retry policy: pure functions of the attempt number, no I/O.

The delay before attempt n+1 is `base * 2^(n-1)`, capped, then spread by up to +-`jitter` of
itself so that jobs that failed together do not all come back together.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta

DEFAULT_BASE_S = 5.0  # seconds; PGQUEUE_RETRY_DELAY_MS / 1000
DEFAULT_CAP_S = 3600.0  # seconds; no retry waits longer than an hour
DEFAULT_JITTER = 0.1  # fraction of the delay
MAX_DELAY_S = 365 * 86400.0  # seconds; no delay may exceed a year (Postgres must store run_at)


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with a cap and jitter.

    Args:
        base_s: the delay after the first failed attempt, in seconds.
        cap_s: the longest delay, in seconds (before jitter).
        jitter: each delay is multiplied by a uniform factor in [1 - jitter, 1 + jitter].
    """

    base_s: float = DEFAULT_BASE_S
    cap_s: float = DEFAULT_CAP_S
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if not 0 <= self.base_s <= MAX_DELAY_S:
            raise ValueError(
                f"base_s must be within 0-{MAX_DELAY_S:.0f} seconds, got {self.base_s}"
            )
        if not self.cap_s <= MAX_DELAY_S:
            raise ValueError(f"cap_s must be at most {MAX_DELAY_S:.0f} seconds, got {self.cap_s}")
        if self.cap_s < self.base_s:
            raise ValueError(f"cap_s ({self.cap_s}) must be >= base_s ({self.base_s})")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        # min() before the power would overflow for large attempts: cap the exponent first.
        exponent = min(attempt - 1, 64)
        delay = min(self.cap_s, self.base_s * 2.0**exponent)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return delay * (1.0 + spread)

    def next_run_at(
        self, attempt: int, now: datetime, rng: random.Random | None = None
    ) -> datetime:
        """When attempt `attempt + 1` may start, given the failed attempt ended at `now`."""
        return now + timedelta(seconds=self.delay_s(attempt, rng))
