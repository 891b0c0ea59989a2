"""The handlers the benchmarked worker runs: `python -m pgqueue.worker bench.handlers:registry`."""

from __future__ import annotations

import asyncio
import time

from pgqueue import JobContext, Registry

NOOP = "bench.noop"
LATENCY = "bench.latency"
BLOCK = "bench.block"

registry = Registry()


@registry.handler(NOOP)
async def noop(ctx: JobContext) -> None:
    """Does nothing: what is measured is the queue's own cost per job."""


@registry.handler(LATENCY)
async def latency(ctx: JobContext) -> dict[str, float]:
    """Records the wall clock at its first line; the bench compares it with the enqueue time."""
    started = time.time()
    return {"t": started}


@registry.handler(BLOCK)
async def block(ctx: JobContext) -> None:
    """Holds its slot until the worker cancels it (at shutdown): for the memory figure."""
    await asyncio.Event().wait()
