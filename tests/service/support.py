"""Test tools for the storyboard service: a fake image upstream on loopback, an in-process
API client, API users, and worker processes.

Importable by tests/service and tests/acceptance alike; fixtures wrap these in each place.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import auth
from service.app import create_app
from service.settings import ServiceSettings
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVICE_ENV = (
    "DATABASE_URL",
    "IMAGE_PROVIDER",
    "IMAGE_API_BASE",
    "IMAGE_API_KEY",
    "IMAGE_MODEL",
    "IMAGE_TIMEOUT_S",
    "STORYBOARD_CONCURRENCY",
    "STORYBOARD_TIMEOUT_S",
    "MEDIA_DIR",
    "HOST",
    "PORT",
)
API_KEY = "test-key"


def project_body(
    shots: int = 3, *, style: str = "noir", aspect_ratio: str = "16:9", **extra: Any
) -> dict[str, Any]:
    """A valid project body with `shots` shots; `style` tags the project's upstream prompts."""
    body: dict[str, Any] = {
        "title": "Test film",
        "style": style,
        "aspect_ratio": aspect_ratio,
        "characters": [
            {"name": "Ann", "description": "a tired detective in a grey coat"},
            {
                "name": "Bo",
                "description": "a nervous informant",
                "reference_image_url": "https://example.com/bo.png",
            },
        ],
        "shots": [
            {
                "shot_number": n,
                "description": f"scene {n}: rain on the window",
                "duration_seconds": 2.5,
                "characters": ["Ann", "Bo"] if n % 2 else ["Ann"],
            }
            for n in range(1, shots + 1)
        ],
    }
    body.update(extra)
    return body


# -- the fake upstream ----------------------------------------------------------------------


@dataclasses.dataclass
class Call:
    """One request the fake upstream received."""

    project: str  # the prompt's style: tests give each project its own
    shot: int
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    ended: float | None = None
    status: int | None = None


# An action decides the answer of a call: return (status, json body, headers), or None for a
# normal image; it may also sleep (a hang) before answering.
Action = Callable[[Call, int], Any]

_STYLE = re.compile(r"^Style: (.*?)\.$", re.MULTILINE)
_SHOT = re.compile(r"shot (\d+):")


class FakeUpstream:
    """A Seedream-compatible image API on 127.0.0.1 (a real HTTP server in a thread).

    Args:
        latency_s: how long each call takes before answering.
        answer: `b64_json` or `url` (then the image is served at /files/...).
    """

    def __init__(self, *, latency_s: float = 0.0, answer: str = "b64_json") -> None:
        self.latency_s = latency_s
        self.answer = answer
        self.action: Action | None = None
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.max_total_in_flight = 0
        self._total = 0
        self._files: dict[str, bytes] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.port = 0

    @property
    def base_url(self) -> str:
        """IMAGE_API_BASE for this server."""
        return f"http://127.0.0.1:{self.port}/api/v3"

    def calls_for(self, project: str, shot: int | None = None) -> list[Call]:
        """The calls of one project (and shot)."""
        with self._lock:
            return [
                c for c in self.calls if c.project == project and (shot is None or c.shot == shot)
            ]

    def start(self) -> None:
        """Serve on a free loopback port."""
        app = Starlette(
            routes=[
                Route("/api/v3/images/generations", self._generate, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-upstream", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def hang(self, seconds: float = 30.0) -> Any:
        """An action's answer that never comes (until `seconds` pass or the server stops)."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return error(504, "hung")

    def stop(self) -> None:
        """Stop serving, cutting hung calls off."""
        self._stopping = True
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            self._thread.join(timeout=10)

    async def _generate(self, request: Request) -> Response:
        body = await request.json()
        prompt = body.get("prompt", "")
        style = _STYLE.search(prompt)
        shot = _SHOT.search(prompt)
        call = Call(
            project=style.group(1) if style else "",
            shot=int(shot.group(1)) if shot else 0,
            body=body,
            headers=dict(request.headers),
            started=time.monotonic(),
        )
        with self._lock:
            self.calls.append(call)
            nth = sum(1 for c in self.calls if (c.project, c.shot) == (call.project, call.shot))
            self._in_flight[call.project] += 1
            self._total += 1
            self.max_in_flight[call.project] = max(
                self.max_in_flight[call.project], self._in_flight[call.project]
            )
            self.max_total_in_flight = max(self.max_total_in_flight, self._total)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            outcome = self.action(call, nth) if self.action else None
            if asyncio.iscoroutine(outcome):
                outcome = await outcome
            if outcome is not None:
                status, payload, headers = outcome
                call.status = status
                return JSONResponse(payload, status_code=status, headers=headers)
            width, height = (int(v) for v in body["size"].split("x"))
            data = png_bytes(width, height)
            call.status = 200
            if self.answer == "url":
                name = f"{call.project}-{call.shot}-{nth}.png"
                self._files[name] = data
                return JSONResponse(
                    {"data": [{"url": f"http://127.0.0.1:{self.port}/files/{name}"}]}
                )
            return JSONResponse({"data": [{"b64_json": base64.b64encode(data).decode()}]})
        finally:
            call.ended = time.monotonic()
            with self._lock:
                self._in_flight[call.project] -= 1
                self._total -= 1

    async def _file(self, request: Request) -> Response:
        data = self._files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")


_PNG_CACHE: dict[tuple[int, int], bytes] = {}


def png_bytes(width: int, height: int) -> bytes:
    """A small-to-encode PNG of the given size."""
    if (width, height) not in _PNG_CACHE:
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="PNG")
        _PNG_CACHE[(width, height)] = buffer.getvalue()
    return _PNG_CACHE[(width, height)]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    """An OpenAI-style error answer for a fake upstream action."""
    return status, {"error": {"code": f"E{status}", "message": message}}, headers or {}


@contextlib.contextmanager
def running_upstream(**options: Any) -> Iterator[FakeUpstream]:
    """A started FakeUpstream, stopped on exit."""
    server = FakeUpstream(**options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- the API in-process ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def api_client(settings: ServiceSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app, with its lifespan run as uvicorn would run it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        assert state is not None

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            # uvicorn hands every request a shallow copy of the lifespan's state; ASGITransport
            # does not, so do it here.
            await app({**scope, "state": dict(state)}, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def bearer(
    db_url: str, user: str, *, tier: str = "free", admin: bool = False
) -> dict[str, str]:
    """Authorization headers of a new token for `user`."""
    conn = await asyncpg.connect(db_url)
    try:
        token = await auth.create_token(conn, user, tier=tier, admin=admin)  # type: ignore[arg-type]
    finally:
        await conn.close()
    return {"Authorization": f"Bearer {token}"}


# -- worker processes -----------------------------------------------------------------------


class WorkerProcesses:
    """`python -m pgqueue.worker service.jobs:registry` children, killed at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start one worker with extra CLI `args` and environment."""
        log = open(self.log_dir / f"worker-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue.worker", "service.jobs:registry", *args],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(process)
        return process

    def logs(self) -> str:
        """Everything the workers printed."""
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("worker-*.log"))
        )

    def stop_all(self) -> None:
        """SIGTERM every worker still running; SIGKILL any that lingers."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def worker_env(
    db_url: str, upstream: FakeUpstream | None, media_dir: Path, **extra: str
) -> dict[str, str]:
    """The environment of a worker process for the tests: short leases and retry delays."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_") and k not in SERVICE_ENV
    }
    env.update(
        DATABASE_URL=db_url,
        MEDIA_DIR=str(media_dir),
        PGQUEUE_LEASE_S="2",
        PGQUEUE_RETRY_DELAY_MS="100",
        PGQUEUE_POLL_INTERVAL_S="0.5",
        PGQUEUE_SHUTDOWN_GRACE_S="2",
        IMAGE_TIMEOUT_S="5",
    )
    if upstream is not None:
        env.update(
            IMAGE_PROVIDER="http",
            IMAGE_API_BASE=upstream.base_url,
            IMAGE_API_KEY=API_KEY,
            IMAGE_MODEL="seedream-test",
        )
    env.update(extra)
    return env


async def wait_done(
    client: httpx.AsyncClient, project_id: str, headers: dict[str, str], timeout: float = 15.0
) -> dict[str, Any]:
    """Poll the status endpoint until `done`; returns the last status."""

    async def done() -> dict[str, Any] | None:
        response = await client.get(
            f"/api/projects/{project_id}/storyboards/status", headers=headers
        )
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status if status["done"] else None

    return await wait_for(done, timeout=timeout, message=f"project {project_id} done")
