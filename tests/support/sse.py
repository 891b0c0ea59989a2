"""A client of the API's Server-Sent Events streams, for tests: events as (name, data)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx


class Stream:
    """One open event stream: its events as (name, data), comments as ("comment", text)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: list[tuple[str, Any]] = []
        self.closed = False
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> tuple[str, Any]:
        """The next event or comment."""
        name, data = "", None
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line.startswith(":"):
                    self.events.append(("comment", line[1:].strip()))
                    return self.events[-1]
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                elif line == "" and name:
                    self.events.append((name, data))
                    return name, data
        self.closed = True
        return "closed", None

    async def until(self, name: str, timeout: float = 5.0) -> tuple[str, Any]:
        """Skip to the next event called `name`."""
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(0.01, deadline - time.monotonic()))
            if event[0] in (name, "closed"):
                return event


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, project_id: str, headers: dict[str, str]
) -> AsyncIterator[Stream]:
    url = f"/api/projects/{project_id}/storyboards/events"
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)
