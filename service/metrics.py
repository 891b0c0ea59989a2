"""Prometheus metrics: `GET /metrics` on the API, the request counts and latencies it reports,
and the image upstream's calls in whichever process makes them.

Three sources, one page:

- HTTP requests of this app, by method, route template as the OpenAPI document writes it
  (`/api/jobs/{job_id}`, never the raw path nor Starlette's `{job_id:int}`, so the label's
  values stay as few as the routes and match the document) and status, with latency:
  `middleware()`, in a registry of the app's own (two apps in one process share nothing);
- the queue as the database records it (`pgqueue.metrics.DatabaseMetrics`): the
  `pgqueue.queue_stats` gauges and the jobs finished since the app started, by whichever
  worker or drain ran them, read on each scrape from the finished-time index. The API runs
  no jobs but drains, and counting only those would leave the queue's own series empty
  wherever daemons do the work; the workers' own series are on their `--metrics-port`;
- the image upstream's calls (`CountingTransport`, in the httpx client `service.jobs`
  builds), counted in prometheus-client's process-wide registry: in a worker that is what
  its `--metrics-port` serves, in the API it counts the calls its drains made.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any, cast

import httpx
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgqueue import metrics as pgqueue_metrics
from pgqueue import metrics_server
from service.errors import ApiError

SCOPE_KEY = "service.metrics"  # where the middleware leaves this app's metrics for /metrics
UNMATCHED = "unmatched"  # the route label of a request no route took (a 404)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds. API calls take milliseconds; a drain up to its budget; a live stream its whole life.
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0)
UPSTREAM_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# The upstream answers the code tells apart (success, the retryable statuses, no answer):
# their series exist at 0 from the start, so an alert on their increase sees the first one.
UPSTREAM_STATUSES = (
    "200",
    "408",
    "409",
    "425",
    "429",
    "500",
    "502",
    "503",
    "504",
    "timeout",
    "error",
)
# `{job_id:int}` -> `{job_id}`: Starlette's convertor is no part of the path a client sees.
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")

# Process-wide: the calls happen in workers and drains, which know nothing of an app.
UPSTREAM_REQUESTS = Counter(
    "storyboard_upstream_requests",
    "Calls to the image upstream (generation and image downloads), by HTTP status, or "
    "`timeout` / `error` when no answer came",
    ["status"],
)
UPSTREAM_SECONDS = Histogram(
    "storyboard_upstream_request_duration_seconds",
    "Seconds from sending a call to the image upstream to its answer's headers (or failure)",
    ["status"],
    buckets=UPSTREAM_BUCKETS_S,
)
for _status in UPSTREAM_STATUSES:
    UPSTREAM_REQUESTS.labels(_status)
    UPSTREAM_SECONDS.labels(_status)


class CountingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that counts and times every call made through `inner`.

    A transport, not an event hook: hooks see only answers, and a dead or slow upstream
    shows here as `error` and `timeout`. (Calls sent through a proxy from `HTTPS_PROXY` use
    httpx's own proxy transport and are not counted.)
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TimeoutException:
            _count_upstream("timeout", started)
            raise
        except Exception:
            _count_upstream("error", started)
            raise
        # (A call cancelled with its job, at a stop or the job's own timeout, is no answer of
        # the upstream's: it is not counted.)
        _count_upstream(str(response.status_code), started)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _count_upstream(status: str, started: float) -> None:
    UPSTREAM_REQUESTS.labels(status).inc()
    UPSTREAM_SECONDS.labels(status).observe(time.perf_counter() - started)


class _ProcessWide:
    """The process-wide registry's families (upstream calls, process_*), on the app's page."""

    def collect(self) -> Iterator[Metric]:
        yield from prometheus_client.REGISTRY.collect()


class ApiMetrics:
    """One app's metrics: its registry, the request series, the queue's collector.

    Args:
        known_jobs: the (queue, kind) pairs the service enqueues, whose series are present
            at 0 from the first scrape.
    """

    def __init__(self, known_jobs: Iterable[tuple[str, str]] = ()) -> None:
        metrics_server.quiet_created_series()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Seconds from a request's arrival to its response's last byte",
            ["method", "route"],
            buckets=HTTP_BUCKETS_S,
            registry=self.registry,
        )
        self.queue = pgqueue_metrics.DatabaseMetrics(known=known_jobs)
        self.registry.register(self.queue)
        self.registry.register(_ProcessWide())
        # id(endpoint) -> its route template, or None when two routes share the endpoint.
        self._templates: dict[int, str | None] | None = None

    def route_of(self, app: Any, scope: Scope, pristine: Scope) -> str:
        """The template of the route that took the request (`pristine`: its scope as it
        arrived, before routing rewrote the paths)."""
        endpoint = scope.get("endpoint")
        routes: list[BaseRoute] = getattr(app, "routes", [])
        if endpoint is None:
            return UNMATCHED
        if self._templates is None:
            self._templates = {}
            _collect_templates(routes, "", self._templates)
        template = self._templates.get(id(endpoint), UNMATCHED)
        if template is None:  # shared endpoint: route the request again to tell which
            return _match(routes, pristine, "") or UNMATCHED
        return template

    def observe(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        """Count one answered request."""
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(elapsed_s)


def _template(path: str) -> str:
    return _CONVERTOR.sub(r"{\1}", path)


def _collect_templates(routes: list[BaseRoute], prefix: str, into: dict[int, str | None]) -> None:
    def add(endpoint: object, template: str) -> None:
        key = id(endpoint)
        into[key] = template if into.get(key, template) == template else None

    for route in routes:
        if isinstance(route, Mount):
            add(route.app, f"{prefix}{route.path}/{{path}}")  # nothing inside matched
            _collect_templates(route.routes, prefix + route.path, into)
        elif (endpoint := getattr(route, "endpoint", None)) is not None:
            add(endpoint, _template(prefix + str(getattr(route, "path", ""))))


def _match(routes: list[BaseRoute], scope: Scope, prefix: str) -> str | None:
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(route, Mount):
            inner = _match(route.routes, {**scope, **child}, prefix + route.path)
            return inner or f"{prefix}{route.path}/{{path}}"
        return _template(prefix + str(getattr(route, "path", "")))
    return None


class _RequestMetrics:
    """ASGI middleware: times and counts every HTTP request of the app."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[SCOPE_KEY] = self.metrics
        # Routing writes into this scope (endpoint, root_path); what it needs to route the
        # request again, and the app whose routes those are, are kept as they arrived.
        app = scope.get("app")
        pristine = {k: scope[k] for k in ("type", "path", "method") if k in scope}
        pristine["root_path"] = scope.get("root_path", "")
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before its response

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = self.metrics.route_of(app, scope, pristine)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)


def middleware(known_jobs: Iterable[tuple[str, str]] = ()) -> list[Middleware]:
    """The API's middleware for request metrics (one `ApiMetrics` per app)."""
    return [Middleware(_RequestMetrics, metrics=ApiMetrics(known_jobs))]


async def metrics_page(request: Request) -> Response:
    """`GET /metrics`: Prometheus text; needs `Bearer METRICS_TOKEN` when that is set."""
    state = cast(dict[str, Any], request.scope["state"])
    token = state["settings"].metrics_token
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken says nothing of how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(
                401,
                "unauthorized",
                "this page needs 'Authorization: Bearer <METRICS_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
    metrics = cast(ApiMetrics, request.scope[SCOPE_KEY])
    await metrics.queue.refresh(state["pool"])
    return Response(
        prometheus_client.generate_latest(metrics.registry),
        media_type=metrics_server.CONTENT_TYPE,
    )


ROUTES: list[BaseRoute] = [Route("/metrics", metrics_page, methods=["GET"])]
