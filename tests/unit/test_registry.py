"""Registering handlers: what a worker can await, and nothing else."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from pgqueue import JobContext, Registry


def test_a_plain_def_handler_is_refused_at_registration() -> None:
    # Accepted, it ran its side effects, then failed on the await and was retried: three times
    # the side effects for one job.
    registry = Registry()
    ran: list[str] = []

    def send(ctx: JobContext) -> str:
        ran.append("sent")
        return "done"

    with pytest.raises(TypeError, match=r"'email\.send'.*async def.*asyncio\.to_thread"):
        registry.add("email.send", send)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a coroutine function"):
        registry.handler("email.other")(send)  # type: ignore[arg-type]
    assert registry.kinds == [] and ran == []


def test_coroutine_functions_partials_and_async_callables_are_taken() -> None:
    registry = Registry()

    async def send(ctx: JobContext, channel: str) -> None:
        return None

    class Sender:
        async def __call__(self, ctx: JobContext) -> Any:
            return None

    registry.add("a", functools.partial(send, channel="mail"))
    registry.add("b", Sender())

    @registry.handler("c")
    async def plain(ctx: JobContext) -> None:
        return None

    assert registry.kinds == ["a", "b", "c"]
