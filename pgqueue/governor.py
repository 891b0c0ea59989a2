"""The governor's half of `Queue`: how jobs of a key spend their upstream.

Rate limits (fixed or learnt), a circuit breaker per rate-limit key, and budgets. All of it
lives in Postgres and is decided in the claim, so every worker and drain obeys the same rules
(see schema v8 for how). `Queue` inherits these methods; they need only its pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg

from pgqueue import models, store

DAY_S = 86_400.0


class GovernorMethods:
    """`Queue`'s methods for rate limits, breakers and budgets."""

    _pool: asyncpg.Pool

    async def set_rate_limit(self, key: str, limit: int, period_s: float) -> models.RateLimit:
        """Let at most `limit` jobs of rate-limit key `key` start in any window of `period_s`
        seconds, across every worker and drain on the database (a burst of `limit` at most).

        The limit belongs to the key, not to each job: every job naming the key
        (`rate_limit_key=`) obeys the one limit, however it was enqueued, and changing it takes
        effect for the jobs already queued. Starts already in the window count against a new
        limit. Held-back jobs wait `queued`; workers wake when the key allows a start again.

        Args:
            key: the rate-limit key, 1-200 characters (e.g. the upstream's name).
            limit: starts per period, 1-10000.
            period_s: the window, in seconds (e.g. 60 for "per minute"), at most a day.

        Returns:
            The limit as set.

        Raises:
            ValueError: an argument is out of range (nothing is changed).
        """
        rate = models.RateLimit(limit, float(period_s))
        await store.set_rate_limit(self._pool, models.check_rate_limit_key(key), rate)
        return rate

    async def remove_rate_limit(self, key: str) -> None:
        """Key `key` has no limit any more: its jobs start as fast as slots allow (a throttle
        a handler set on it still runs out)."""
        await store.remove_rate_limit(self._pool, models.check_rate_limit_key(key))

    async def rate_limits(self) -> list[dict[str, Any]]:
        """Every key with a limit or a throttle: `key`, `capacity` and `period_s` (None for a
        key with only a throttle), `paused_until`, `recent_starts` (in the current window) and
        `blocked_until` (when it next allows a start; None: now)."""
        return await store.list_rate_limits(self._pool)

    async def set_adaptive_rate_limit(
        self, key: str, *, ceiling: int | None = None, period_s: float = 1.0
    ) -> None:
        """Learn key `key`'s start rate from its upstream's answers, fleet-wide.

        Its starts are paced, one every `period_s / learnt`, starting from `ceiling`, or with no
        ceiling from 25 starts a window. A 429 (a handler's `RetryLater(throttle_s=...)`) that says
        the quota fell pauses the key for its Retry-After, halves the rate (once a window; never
        below one start) and notes what the upstream took in that window (its starts less its
        429s). While the pace binds, successes climb back additively: to the rate last held a whole
        window, then to 97% of the quota seen, where it holds before probing past it with a step
        that grows fourfold each half window the upstream keeps accepting, and doubling the rate
        once the upstream took more than it knew. A 429 while it probes, or with its window at the
        quota, is a refusal: the refused job waits its Retry-After, the key goes back to 97% of the
        quota with no pause and holds longer before the next probe. It never exceeds `ceiling`
        starts a window. A rate already learnt is kept when this is called again with the same
        ceiling and window (every worker calls it as it starts); a new ceiling or window starts the
        learning anew. `set_rate_limit` or `remove_rate_limit` end the learning.

        Raises:
            ValueError: an argument is out of range (nothing is changed).
        """
        if ceiling is not None:
            models.RateLimit(ceiling, float(period_s))  # the same ranges as a fixed limit
        elif not 0 < period_s <= models.MAX_RATE_PERIOD_S:
            raise ValueError("period_s must be more than 0 and at most a day")
        await store.set_adaptive_rate(
            self._pool, models.check_rate_limit_key(key), ceiling, float(period_s)
        )

    async def set_breaker(
        self, key: str, *, threshold: int = 5, window_s: float = 30.0, open_s: float = 30.0
    ) -> models.Breaker:
        """Give rate-limit key `key` a circuit breaker (see `models.Breaker` and
        `errors.UpstreamDown`): after `threshold` transient upstream failures in a row within
        `window_s`, no job of the key starts on any worker for `open_s`; then one probe does.
        An open breaker stays open when this is called again.

        Raises:
            ValueError: an argument is out of range (nothing is changed).
        """
        breaker = models.Breaker(threshold, float(window_s), float(open_s))
        await store.set_breaker(self._pool, models.check_rate_limit_key(key), breaker)
        return breaker

    async def remove_breaker(self, key: str) -> None:
        """Key `key` has no breaker; jobs an open one held start again."""
        await store.remove_breaker(self._pool, models.check_rate_limit_key(key))

    async def set_budget(
        self,
        key: str,
        amount: float | Decimal,
        *,
        period_s: float = DAY_S,
        conn: asyncpg.Connection | None = None,
    ) -> None:
        """Let jobs naming budget `key` (`budget_keys=`) spend at most `amount` per window of
        `period_s` seconds (windows aligned to the epoch: the default is a UTC day).

        A claim reserves a job's `cost` against each of its budgets and starts it only if it
        fits; one that does not stays `queued` (parked, never failed for it) and starts when
        the budget allows: the next window, or at once when this raises the amount (the
        queues are woken). What was spent in the current window counts. With `conn`, inside
        that connection's transaction (its wake-up is sent when it commits).

        Raises:
            ValueError: an argument is out of range (nothing is changed).
        """
        value = models.check_amount(amount, "a budget's amount")
        if not 1 <= period_s <= 366 * DAY_S:
            raise ValueError("a budget's period_s must be at least 1 s and at most a year")
        db = self._pool if conn is None else conn
        await store.set_budget(db, models.check_key(key, "budget key"), value, float(period_s))

    async def remove_budget(self, key: str, *, conn: asyncpg.Connection | None = None) -> None:
        """Budget `key` is gone: the jobs it parked start (their queues are woken)."""
        db = self._pool if conn is None else conn
        await store.remove_budget(db, models.check_key(key, "budget key"))

    async def budgets(self, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The budgets `keys` (None: every one): `key`, `amount`, `period_s`, `spent` (in the
        current window), `reserved` (by running attempts), `available` and `window_ends_at`."""
        return await store.list_budgets(self._pool, keys)
