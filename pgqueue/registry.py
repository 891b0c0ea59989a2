"""`Registry`: the handlers a worker runs, by job kind, and the resources they share."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pgqueue import schedules
from pgqueue.schedules import Schedule

if TYPE_CHECKING:
    from pgqueue.worker.context import JobContext
    from pgqueue.worker.events import EventName, Hook

Handler = Callable[["JobContext"], Awaitable[Any]]
Lifespan = Callable[[], contextlib.AbstractAsyncContextManager[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Periodic:
    """A job enqueued on a schedule: at most once per tick across every worker.

    Args:
        name: the schedule's name, unique in the database (default: the kind).
        kind: the job's kind.
        schedule: when it is due.
        payload: the job's payload.
        queue: the job's queue (None: the worker's first queue).
        max_attempts: the job's attempts.
    """

    name: str
    kind: str
    schedule: Schedule
    payload: Any = None
    queue: str | None = None
    max_attempts: int = 3


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
        self.periodics: list[Periodic] = []
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
        if not _is_async(function):
            # Refused, not run in a thread: a thread cannot be cancelled, so at a timeout, a
            # cancel or a shutdown its side effects would go on while the job ran again.
            name = getattr(function, "__qualname__", repr(function))
            raise TypeError(
                f"the handler of {kind!r} ({name}) is not a coroutine function: pgqueue awaits"
                " handlers, so write it as `async def`; run blocking code inside it with"
                " `await asyncio.to_thread(...)`"
            )
        self._handlers[kind] = HandlerSpec(kind=kind, handler=function)

    def periodic(
        self,
        schedule: str | float | timedelta,
        kind: str,
        payload: Any = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_attempts: int = 3,
    ) -> Periodic:
        """Enqueue a `kind` job on `schedule`: a cron expression (UTC, the `cron` extra), or an
        interval (seconds or a timedelta, aligned on the epoch).

        Every worker running this registry runs the scheduler; each tick becomes exactly one
        job across the fleet. After an outage the job runs once for the ticks it missed, not
        once per missed tick; a schedule seen for the first time starts with its next tick.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        spec = Periodic(name or kind, kind, schedules.parse(schedule), payload, queue, max_attempts)
        if any(p.name == spec.name for p in self.periodics):
            raise ValueError(f"a schedule named {spec.name!r} exists; give each its own name")
        self.periodics.append(spec)
        return spec

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


def _is_async(function: object) -> bool:
    """A coroutine function, a partial of one, or an object whose `__call__` is one."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - the method, not callable()
    )


@contextlib.asynccontextmanager
async def _no_state() -> AsyncIterator[None]:
    yield None
