"""Live progress: `GET /api/projects/{id}/storyboards/events` (Server-Sent Events), fed by one
Postgres LISTEN per API process. (Filled in by issue 10, part 1.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.routing import BaseRoute

from pgqueue import Database

ROUTES: list[BaseRoute] = []


class EventHub:
    """Wakes the streams of a project when its storyboards change (one listener for all)."""


@contextlib.asynccontextmanager
async def open_hub(database: Database) -> AsyncIterator[EventHub]:
    """The hub of one API process, for its lifespan."""
    yield EventHub()
