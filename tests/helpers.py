"""Waiting on conditions (never on bare sleeps) and other small test tools."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_S = 0.02  # how often a condition is re-checked


async def wait_for(
    predicate: Callable[[], Awaitable[T] | T], timeout: float = 10.0, message: str = ""
) -> T:
    """Re-check `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message} (last: {last!r})")
        await asyncio.sleep(POLL_S)
