"""A fake Seedream-compatible image API on loopback: a fixed latency per call, and a count of
the calls in flight (the storyboard makespan scenario reads the most seen at once)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

START_TIMEOUT_S = 10.0  # seconds the server may take to bind
STOP_TIMEOUT_S = 10.0  # seconds its thread may take to exit


def tiny_png() -> bytes:
    """A valid 1x1 RGB PNG (stdlib only): what every call answers with."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit, truecolour
    pixels = zlib.compress(b"\x00\x5a\x78\x96")  # filter byte 0, one RGB pixel
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


class FakeUpstream:
    """`POST /images/generations` answered after `latency_s` with `data[0].b64_json`.

    Served by uvicorn in a thread of its own, so its timing does not depend on the caller's
    event loop. The counters are touched only by that thread's event loop.

    Args:
        latency_s: how long every call takes before it is answered.
    """

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.starts: list[float] = []  # time.monotonic() as each call came in
        self.ends: list[float] = []  # ... and as each was answered
        self.port = 0
        self._answer = {"data": [{"b64_json": base64.b64encode(tiny_png()).decode()}]}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """IMAGE_API_BASE for this server."""
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Start counting afresh (between two measurements, with nothing in flight)."""
        self.calls = 0
        self.max_in_flight = self.in_flight
        self.starts, self.ends = [], []

    def handoff_gaps(self, cap: int) -> list[float]:
        """Seconds from each answer to the start of the call that took its place: the k-th call
        to come in (k >= cap) follows the (k - cap)-th answer, when `cap` calls run at a time."""
        starts, ends = sorted(self.starts), sorted(self.ends)
        return [starts[k] - ends[k - cap] for k in range(cap, min(len(starts), len(ends) + cap))]

    def start(self) -> None:
        """Serve on a free loopback port; return once it accepts connections."""
        app = Starlette(routes=[Route("/images/generations", self._generate, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-upstream", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop serving, cutting off calls still in flight."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            self._thread.join(timeout=STOP_TIMEOUT_S)

    async def _generate(self, request: Request) -> JSONResponse:
        await request.body()  # read the request as a real upstream would
        self.calls += 1
        self.starts.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency_s)
            return JSONResponse(self._answer)
        finally:
            self.ends.append(time.monotonic())
            self.in_flight -= 1


@contextlib.contextmanager
def running(latency_s: float) -> Iterator[FakeUpstream]:
    """A started `FakeUpstream`, stopped on exit."""
    server = FakeUpstream(latency_s)
    server.start()
    try:
        yield server
    finally:
        server.stop()
