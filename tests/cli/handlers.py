"""The handlers of the command-line tests, for `python -m pgqueue.worker
tests.cli.handlers:registry`.

- `cli.ok`: succeeds at once.
- `cli.flaky`: fails its first `payload["fail_times"]` attempts with "boom on attempt N", then
  succeeds: a job with an attempt history.
- `cli.fail`: always fails ("always fails").
- `cli.block`: runs until cancelled (a running job for `cancel` and `workers`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pgqueue import JobContext, Registry

registry = Registry()


@registry.handler("cli.ok")
async def ok(ctx: JobContext) -> Any:
    """Succeed at once."""
    return {"ok": True}


@registry.handler("cli.flaky")
async def flaky(ctx: JobContext) -> Any:
    """Fail the first `fail_times` attempts, then succeed."""
    if ctx.attempt <= int(ctx.job.payload["fail_times"]):
        raise RuntimeError(f"boom on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@registry.handler("cli.fail")
async def fail(ctx: JobContext) -> Any:
    """Fail every attempt."""
    raise RuntimeError("always fails")


@registry.handler("cli.block")
async def block(ctx: JobContext) -> Any:
    """Run until cancelled (by a cancel request, or the worker's stop)."""
    await asyncio.Event().wait()
