"""`Registry`: the handlers a worker runs, by job kind, and the resources they share."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgqueue.worker.context import JobContext
    from pgqueue.worker.events import EventName, Hook

Handler = Callable[["JobContext"], Awaitable[Any]]
Lifespan = Callable[[], contextlib.AbstractAsyncContextManager[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler and its defaults."""

    kind: str
    handler: Handler


class Registry:
    """Maps job kinds to async handlers.

    A handler takes a `JobContext` and returns a JSON-serialisable result (stored in the job's
    `result`) or None. `lifespan`, like Starlette's, is an async context manager factory whose
    yielded value the worker opens once and hands to every handler as `ctx.state`.

    Example:
        registry = Registry()

        @registry.handler("email.send")
        async def send(ctx: JobContext) -> None:
            ...
    """

    def __init__(self, *, lifespan: Lifespan | None = None) -> None:
        self._handlers: dict[str, HandlerSpec] = {}
        self.lifespan: Lifespan = lifespan or _no_state
        self.event_hooks: list[tuple[EventName, Hook]] = []

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        """Decorator: register the decorated coroutine function for `kind`."""

        def register(function: Handler) -> Handler:
            self.add(kind, function)
            return function

        return register

    def add(self, kind: str, function: Handler) -> None:
        """Register `function` for `kind`; a kind has one handler."""
        if kind in self._handlers:
            raise ValueError(f"kind {kind!r} already has a handler; give each kind one handler")
        self._handlers[kind] = HandlerSpec(kind=kind, handler=function)

    def on(self, name: EventName, hook: Hook) -> None:
        """Attach `hook` to every worker that runs this registry (see `Worker.on`).

        This is how a `python -m pgqueue.worker` daemon gets hooks: for example a "failed" or
        "stalled" hook that records, in the application's own tables, a job failed for good.
        """
        self.event_hooks.append((name, hook))

    def get(self, kind: str) -> HandlerSpec | None:
        """The handler of `kind`, or None."""
        return self._handlers.get(kind)

    @property
    def kinds(self) -> list[str]:
        """The registered kinds."""
        return sorted(self._handlers)


@contextlib.asynccontextmanager
async def _no_state() -> AsyncIterator[None]:
    yield None
