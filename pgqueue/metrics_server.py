"""`GET /metrics` on a port, served by the running event loop (no thread: the collectors read a
worker's state on the loop that changes it), and the page's format.

Optional, as `metrics` is: it needs `prometheus-client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

try:
    import prometheus_client
    from prometheus_client import registry as prometheus_registry
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "pgqueue's metrics need prometheus-client: pip install 'pgqueue-durable[metrics]'"
    ) from exc

logger = logging.getLogger("pgqueue.metrics")

# The classic text format, which every Prometheus (2.x and 3.x) reads. prometheus-client's
# CONTENT_TYPE_LATEST moved to version=1.0.0 in 0.22, which a 2.x server does not know; what
# generate_latest writes (metric names escaped to underscores) is valid 0.0.4 either way.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT_S = 10.0  # seconds a scraper may take to send its request line and headers
MAX_REQUEST_BYTES = 16 * 1024

CREATED_SERIES_ENV = "PROMETHEUS_DISABLE_CREATED_SERIES"


def quiet_created_series() -> None:
    """No `*_created` series on the pages made here, unless the environment asks for them.

    prometheus-client adds a `_created` sample (the time a counter was made) to every
    counter and histogram child: noise to most dashboards, and a series per child. Its own
    switch is process-wide and read at scrape time; an explicit `PROMETHEUS_DISABLE_CREATED_SERIES`
    (which prometheus-client reads itself) wins over this default.
    """
    if CREATED_SERIES_ENV not in os.environ:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class MetricsServer:
    """`GET /metrics` of `registry` on `host:port`, served by the running event loop.

    Args:
        registry: what to serve (default: prometheus-client's global registry, where a
            service's own metrics go).
        host: the address to listen on; loopback by default, as a scraper on the same host
            or a sidecar reaches it (put a proxy in front to expose it).
        port: the port; 0 picks a free one (see `port` once started).
    """

    def __init__(
        self,
        registry: prometheus_registry.CollectorRegistry | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0-65535, got {port}")
        quiet_created_series()
        self.registry = registry or prometheus_client.REGISTRY
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one picked, when started with 0)."""
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen (raises `OSError` when the port is taken)."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self._port, limit=MAX_REQUEST_BYTES
        )
        logger.info(
            "metrics on http://%s:%d/metrics",
            self.host,
            self.port,
            extra={"action": "metrics_listening"},
        )

    async def close(self) -> None:
        """Stop listening and end the connections still open."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            if path != "/metrics":
                status, content_type, body = "404 Not Found", "text/plain", b"see /metrics\n"
            elif method not in ("GET", "HEAD"):
                status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            else:
                status = "200 OK"
                content_type = CONTENT_TYPE
                body = prometheus_client.generate_latest(self.registry)
            headers = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(headers.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except ConnectionError:
            pass  # the scraper went away; it will come back at its next interval
        except Exception:  # a collector's bug must not stop the worker: log it, answer nothing
            logger.exception("metrics: scrape failed", extra={"action": "metrics_failed"})
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
