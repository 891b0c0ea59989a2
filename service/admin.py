"""The queue's admin surface: `/api/jobs` (list, retry, cancel), `/api/queues` (pause, resume),
and pgqueue's dashboard mounted at `/dashboard`. (Filled in by issue 10, part 3.)"""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
