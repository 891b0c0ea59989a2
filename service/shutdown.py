"""`Shutdown`: what long requests hear when the API server begins to stop.

On SIGTERM or SIGINT uvicorn stops accepting connections, then waits for the requests in
flight before the application's lifespan ends, so a request that runs long (a drain) must
learn of the stop itself, or it holds the process until an orchestrator kills it mid-run.
`service.serving`'s server begins the application's `Shutdown` first, from the event loop, as
its own shutdown begins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Shutdown:
    """Set once, when the server begins to stop; long requests wait on it or check it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._hooks: list[Callable[[], None]] = []

    @property
    def started(self) -> bool:
        """Whether the server is stopping."""
        return self._event.is_set()

    def on_start(self, hook: Callable[[], None]) -> None:
        """Call `hook()` (a plain function) when the shutdown begins (at once if it has)."""
        self._hooks.append(hook)
        if self.started:
            hook()

    def begin(self) -> None:
        """The server stops: wake every waiter and call every hook, once."""
        if self.started:
            return
        self._event.set()
        for hook in self._hooks:
            hook()

    async def wait(self) -> None:
        """Until the server begins to stop."""
        await self._event.wait()
