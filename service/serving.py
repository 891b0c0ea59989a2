"""How `python -m service api` serves the app: uvicorn with bounded connections, a quiet log at
the descriptor limit, and live-progress streams ended at shutdown.

- **Connections.** uvicorn's `limit_concurrency` is `API_MAX_CONNECTIONS`, kept below the
  process's file-descriptor limit (whose soft value is raised towards the hard one first):
  past it, a request answers 503 at once and its connection closes, instead of the process
  reaching the limit, where nothing (not `/healthz`) can be accepted any more.
- **The accept-error log.** At the descriptor limit asyncio logs `socket.accept() out of system
  resource` for every attempt, and retries in a loop of up to the listen backlog per tick: 1.1
  GB of log in 5 minutes. `AcceptErrorFilter` lets one through per `ACCEPT_LOG_EVERY_S`,
  saying how many it held back.
- **Idle sockets.** A connection that sends no request within 5 s is closed, as one idle between
  requests already was.
- **Shutdown.** uvicorn runs the app's shutdown only once every connection has closed, and a
  live-progress stream stays open up to `STREAM_MAX_S`: `ApiServer` ends the streams first
  (`event: shutdown`), so SIGTERM stops the API within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.event_hub import EventHub
from service.shutdown import Shutdown

logger = logging.getLogger("service.serving")

# Descriptors the process needs besides its HTTP connections: the pool (10), the listener, a
# drain's pools, log files, the interpreter's own.
FD_RESERVE = 128
ACCEPT_LOG_EVERY_S = 10.0
ACCEPT_ERROR = "socket.accept() out of system resource"


def raise_fd_limit(connections: int) -> None:
    """Raise the soft descriptor limit to fit `connections` plus the reserve, as far as the hard
    limit allows (a soft limit of 1,024 is common, far below the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def connection_limit(configured: int) -> int:
    """The connections the process may serve at once: `configured`, or less when the
    descriptor limit leaves no room for it (and the reserve)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - FD_RESERVE))


class AcceptErrorFilter(logging.Filter):
    """On the `asyncio` logger: one accept error per `every_s`, with a count of those held back."""

    def __init__(self, every_s: float = ACCEPT_LOG_EVERY_S) -> None:
        super().__init__()
        self.every_s = every_s
        self.suppressed = 0
        self._last = -float("inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(ACCEPT_ERROR):
            return True
        now = time.monotonic()
        if now - self._last < self.every_s:
            self.suppressed += 1
            return False
        if self.suppressed:
            record.msg = (
                f"{record.getMessage()}\n({self.suppressed} more like it in the last"
                f" {now - self._last:.0f} s were not logged)"
            )
            record.args = ()
        self._last = now
        self.suppressed = 0
        return True


class IdleClosingH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection that sends no request for
    `timeout_keep_alive` (5 s) from the start too: uvicorn times out only the idle time
    between requests, so sockets that never send one held their descriptors for ever."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )


class ApiServer(uvicorn.Server):
    """uvicorn's server, telling the app's long requests that it stops before it waits for
    them: the live-progress streams end, and the app's `Shutdown` begins (a running drain
    releases its jobs within the grace)."""

    def __init__(self, config: uvicorn.Config, stopping: Shutdown | None) -> None:
        super().__init__(config)
        self._stopping = stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._stopping is not None:
            self._stopping.begin()
        hub = getattr(self.lifespan, "state", {}).get("events")
        if isinstance(hub, EventHub):
            hub.shut_down()
        await super().shutdown(sockets)


def run(app: Starlette, *, host: str, port: int, max_connections: int, access_log: bool) -> bool:
    """Serve `app` until SIGTERM or SIGINT (the `api` command); False when the server could
    not start (e.g. its port is taken)."""
    raise_fd_limit(max_connections)
    limit = connection_limit(max_connections)
    if limit < max_connections:
        logger.warning(
            "API_MAX_CONNECTIONS=%d does not fit the file-descriptor limit; serving %d at once",
            max_connections,
            limit,
        )
    logging.getLogger("asyncio").addFilter(AcceptErrorFilter())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        limit_concurrency=limit,
        http=IdleClosingH11Protocol,
        log_config=None,  # keep pgqueue's log format for uvicorn's records too
        access_log=access_log,
    )
    server = ApiServer(config, getattr(app.state, "shutdown", None))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: a second Ctrl-C
        server.run()
    return server.started
