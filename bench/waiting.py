"""Waiting on conditions (not on fixed sleeps), and the percentiles of what was measured."""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.02  # seconds between two checks of a condition


async def wait_until(
    predicate: Callable[[], Awaitable[T] | T],
    *,
    timeout_s: float,
    what: str,
    poll_s: float = POLL_S,
) -> T:
    """Re-check `predicate` until it returns something truthy; raise after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(poll_s)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0-1) of `values`."""
    if not values:
        raise ValueError("no values to take a percentile of")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
