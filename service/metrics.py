"""Prometheus metrics: `GET /metrics` on the API, and the request counts and latencies it
reports. (Filled in by issue 10, part 4.)"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []


def middleware() -> list[Middleware]:
    """The API's middleware for request metrics."""
    return []
