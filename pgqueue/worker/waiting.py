"""Waiting on several things at once: events, futures, a timeout."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def wait_any(
    *flags: asyncio.Event,
    futures: tuple[asyncio.Future[Any], ...] = (),
    timeout: float | None = None,
) -> None:
    """Return when any of `flags` is set or any of `futures` is done, or after `timeout` s.

    The futures are not cancelled; the waiters made for the flags are.
    """
    waiters = [asyncio.ensure_future(flag.wait()) for flag in flags]
    try:
        await asyncio.wait(
            [*waiters, *futures], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)
