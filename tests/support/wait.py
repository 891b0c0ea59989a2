"""Waiting on conditions, never on bare sleeps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

POLL_S = 0.02  # seconds between two checks of a condition


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float = ...,
    message: str = ...,
    *,
    poll_s: float = ...,
) -> T: ...


@overload
async def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = ...,
    message: str = ...,
    *,
    poll_s: float = ...,
) -> T: ...


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    message: str = "",
    *,
    poll_s: float = POLL_S,
) -> Any:
    """Re-check `predicate` until it returns something truthy, and return that.

    Args:
        predicate: a function or coroutine function of no arguments; exceptions it raises
            propagate at once (use that to fail fast, e.g. when a process died).
        timeout: seconds before giving up.
        message: what is awaited, for the error.
        poll_s: seconds between two checks.

    Raises:
        AssertionError: the condition did not hold within `timeout` (with the last value).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message} (last: {last!r})")
        await asyncio.sleep(poll_s)
