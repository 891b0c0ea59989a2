"""A fake image upstream: OpenAI-images-compatible, as CONTRACT.md describes Seedream's API.

A real HTTP server on loopback (uvicorn in a thread of its own, so its timing does not depend
on the caller's event loop) serving `POST {base}/images/generations` and, for `url` answers,
the image files. It checks what a real upstream would reject (the bearer key, the JSON body's
fields), answers each call as the test's `script` says (status, `Retry-After`, `b64_json` or
`url`, latency, or what a broken or hostile upstream sends: bytes that are no image, a body of
any size streamed without holding it, a `url` through redirects), and records every call with its
start and end and its request identity.

Calls are attributed by the `X-Request-Id` header the http provider sends
(`storyboard-<project_id>-<shot_number>-<job_id>`), never by reading the prompt.

It honours `Idempotency-Key` as paying upstreams do (Stripe's rules, which image APIs that take
the header follow): the first call with a key that is answered with an image is charged, and its
answer is remembered; a later call with that key gets the same answer again at once, without a
charge, and without asking the script; a call while a generation with its key is in progress
answers 409 (retryable) and is not charged. A call the script answers with an error neither
charges nor takes the key, so its retry generates afresh. `charges` counts the charged
generations per key (calls without a key under ""). `hold()` keeps every generation waiting
until `release()`; a held generation whose caller has gone (a killed worker) still completes
and is charged, as a real provider's would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

import httpx
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

API_KEY = "test-key"  # the bearer key the fake expects unless told otherwise
API_PREFIX = "/api/v3"  # as Seedream's base URL has it
REQUEST_ID_HEADER = "x-request-id"
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
STORYBOARD_PREFIX = "storyboard-"  # request ids of storyboard shots: <prefix><project>-<shot>-<job>
HANG_S = 30.0  # how long a hung call takes (cut off sooner when the server stops)
START_TIMEOUT_S = 10.0  # seconds the server may take to bind
STOP_TIMEOUT_S = 10.0  # seconds its thread may take to exit
IMAGE_COLOUR = (90, 120, 150)
HOLD_POLL_S = 0.01  # how often a held call looks whether it was released
STREAM_CHUNK = 64 * 1024  # bytes per chunk of a streamed (`stream_bytes`) body

ImageForm = Literal["b64_json", "url"]


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """How the fake answers one call.

    Args:
        status: 200 for an image; anything else answers an OpenAI-style error.
        image: for a 200, the image inline (`b64_json`) or as a `url` to fetch.
        message: for an error, its `error.message`.
        retry_after: the `Retry-After` header's value, if any.
        latency_s: seconds before answering (None: the upstream's `latency_s`).
        data: for a 200, the bytes carried instead of the PNG (e.g. an HTML page).
        url: for a 200 `url` answer, the URL given verbatim instead of the fake's own file
            (e.g. `upstream.redirect_url(...)` or a metadata address).
        stream_bytes: for a 200, a body of this many bytes streamed in chunks without a
            `Content-Length` and never held whole: the `b64_json` answer's JSON itself, or the
            downloaded file of a `url` answer (a PNG signature, then zeros).
    """

    status: int = 200
    image: ImageForm = "b64_json"
    message: str = ""
    retry_after: str | None = None
    latency_s: float | None = None
    data: bytes | None = None
    url: str | None = None
    stream_bytes: int = 0


def error(
    status: int, message: str, *, retry_after: str | None = None, latency_s: float | None = None
) -> Answer:
    """An error answer, e.g. `error(429, "rate limited", retry_after="1.5")`."""
    return Answer(status=status, message=message, retry_after=retry_after, latency_s=latency_s)


def hang(seconds: float = HANG_S) -> Answer:
    """An answer that takes `seconds` (a 504 then), or until the server stops: a hung upstream."""
    return error(504, "hung", latency_s=seconds)


@dataclasses.dataclass(slots=True)
class Call:
    """One request the fake received.

    Args:
        request_id: the `X-Request-Id` header as sent ("" without one).
        project_id: the project of a storyboard request id ("" otherwise).
        shot_number: the shot of a storyboard request id (0 otherwise).
        job_id: the job of a storyboard request id (0 otherwise).
        nth: 1 for the first call of this project and shot, 2 for the next (a retry), ...
        body: the JSON body.
        headers: the request headers (lower-case names).
        started: `time.monotonic()` as it came in.
        ended: ... and as it was answered (None while in flight).
        status: the status it was answered with (None while in flight).
        idempotency_key: the `Idempotency-Key` header as sent ("" without one).
        charged: the call paid for a generation (an image answer that was no replay).
        replayed: the call was answered with the remembered answer of its key.
    """

    request_id: str
    project_id: str
    shot_number: int
    job_id: int
    nth: int
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    ended: float | None = None
    status: int | None = None
    idempotency_key: str = ""
    charged: bool = False
    replayed: bool = False


Script = Callable[[Call], Answer | None]  # a call's answer; None: the default image answer


def parse_request_id(request_id: str) -> tuple[str, int, int]:
    """(project_id, shot_number, job_id) of a storyboard request id; ("", 0, 0) otherwise."""
    if request_id.startswith(STORYBOARD_PREFIX):
        # The project id is a UUID, hyphens included: the last two fields are the numbers.
        project_id, _, rest = request_id[len(STORYBOARD_PREFIX) :].rpartition("-")
        project_id, _, shot = project_id.rpartition("-")
        if project_id and shot.isdigit() and rest.isdigit():
            return project_id, int(shot), int(rest)
    return "", 0, 0


class FakeUpstream:
    """The fake upstream: `start()` it, point `IMAGE_API_BASE` at `base_url`, `stop()` it.

    Args:
        latency_s: how long each call takes before it is answered (an `Answer` may say otherwise).
        image: how a normal answer carries the image: `b64_json` or `url`.
        api_key: the bearer key it accepts (None: any).

    Set `script` to decide each call's answer; read `calls`, `calls_for()`, `max_in_flight`
    (per project), `max_total_in_flight`, `charges` and `charges_for()`. Attributes are safe to
    read from another thread.
    """

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        image: ImageForm = "b64_json",
        api_key: str | None = API_KEY,
    ) -> None:
        self.latency_s = latency_s
        self.image: ImageForm = image
        self.api_key = api_key
        self.script: Script | None = None
        self.calls: list[Call] = []
        self.max_in_flight: dict[str, int] = defaultdict(int)  # project_id -> most at once
        self.max_total_in_flight = 0
        self.charges: dict[str, int] = defaultdict(int)  # idempotency key -> generations paid
        self.port = 0
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = defaultdict(int)
        self._total_in_flight = 0
        self._files: dict[str, bytes | int] = {}  # name -> bytes, or the size of a streamed one
        self._remembered: dict[str, Callable[[Request], Response]] = {}  # key -> its answer
        self._generating: set[str] = set()  # keys whose generation is in progress
        self._released = threading.Event()  # cleared while `hold()` holds generations
        self._released.set()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """`IMAGE_API_BASE` for this server."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    def file_url(self, name: str) -> str:
        """The URL of the file `name` (`add_file`) on this server."""
        return f"http://127.0.0.1:{self.port}/files/{name}"

    def add_file(self, name: str, data: bytes) -> str:
        """Serve `data` as the file `name`; return its URL."""
        self._files[name] = data
        return self.file_url(name)

    def redirect_url(self, to: str, hops: int = 1) -> str:
        """A URL on this server that redirects (302) `hops` times, then to `to`."""
        url = to
        for _ in range(hops):
            url = str(httpx.URL(f"http://127.0.0.1:{self.port}/redirect", params={"to": url}))
        return url

    def calls_for(self, project_id: str, shot_number: int | None = None) -> list[Call]:
        """The calls of one project (and shot), in the order they came in."""
        with self._lock:
            return [
                c
                for c in self.calls
                if c.project_id == project_id
                and (shot_number is None or c.shot_number == shot_number)
            ]

    def charges_for(self, project_id: str) -> dict[str, int]:
        """The charged generations of one project's storyboard calls, per idempotency key."""
        with self._lock:
            return {
                key: count
                for key, count in self.charges.items()
                if parse_request_id(key)[0] == project_id
            }

    def hold(self) -> None:
        """Keep every call from now on that the script answers (not a replay, a 409 or a
        refusal) waiting, in flight, until `release()`; then it is answered as it would have
        been, and charged if it generated, even when its caller has gone."""
        self._released.clear()

    def release(self) -> None:
        """Let the held generations (and every later one) be answered."""
        self._released.set()

    def reset(self) -> None:
        """Forget the calls, the peaks and the charges (between two measurements, with nothing
        in flight); remembered answers stay, as a provider keeps them."""
        with self._lock:
            self.calls = []
            self.charges.clear()
            self.max_in_flight.clear()
            self.max_total_in_flight = self._total_in_flight

    def start(self) -> None:
        """Serve on a free loopback port; return once it accepts connections."""
        app = Starlette(
            routes=[
                Route(f"{API_PREFIX}/images/generations", self._generate, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
                Route("/redirect", self._redirect, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-upstream", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            # A thread, not a coroutine: polling is the only way to see uvicorn bind.
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop serving, cutting off the calls still in flight (hung ones included)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            self._thread.join(timeout=STOP_TIMEOUT_S)

    async def _generate(self, request: Request) -> Response:
        request_id = request.headers.get(REQUEST_ID_HEADER, "")
        project_id, shot_number, job_id = parse_request_id(request_id)
        try:
            body = await request.json()
        except ValueError:
            body = None
        with self._lock:
            nth = 1 + sum(
                1 for c in self.calls if (c.project_id, c.shot_number) == (project_id, shot_number)
            )
            call = Call(
                request_id=request_id,
                project_id=project_id,
                shot_number=shot_number,
                job_id=job_id,
                nth=nth,
                body=body if isinstance(body, dict) else {},
                headers=dict(request.headers),
                started=time.monotonic(),
                idempotency_key=request.headers.get(IDEMPOTENCY_KEY_HEADER, ""),
            )
            self.calls.append(call)
            self._in_flight[project_id] += 1
            self._total_in_flight += 1
            self.max_in_flight[project_id] = max(
                self.max_in_flight[project_id], self._in_flight[project_id]
            )
            self.max_total_in_flight = max(self.max_total_in_flight, self._total_in_flight)
        generating = False  # this call holds its key's generation
        try:
            response = self._refusal(request, body) or self._keyed(request, call)
            if response is None:
                answer = (self.script(call) if self.script else None) or Answer(image=self.image)
                if answer.status == 200 and call.idempotency_key:
                    with self._lock:
                        # Checked again: another call with the key may have begun meanwhile.
                        response = self._keyed(request, call)
                        if response is None:
                            self._generating.add(call.idempotency_key)
                            generating = True
            if response is None:
                await self._wait_released()
                latency_s = self.latency_s if answer.latency_s is None else answer.latency_s
                if latency_s:
                    await asyncio.sleep(latency_s)
                response = self._answer(request, answer, call)
                if response.status_code == 200:
                    self._charge(call, self._replay_of(request, answer, call, response))
            call.status = response.status_code
            return response
        finally:
            with self._lock:
                call.ended = time.monotonic()
                self._in_flight[project_id] -= 1
                self._total_in_flight -= 1
                if generating:
                    self._generating.discard(call.idempotency_key)

    def _keyed(self, request: Request, call: Call) -> Response | None:
        """The answer to a call whose key has been answered (again, free) or is being answered
        (409); None when the call is to generate."""
        key = call.idempotency_key
        if not key:
            return None
        replay = self._remembered.get(key)
        if replay is not None:
            call.replayed = True
            return replay(request)
        if key in self._generating:
            return _error_response(
                409,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry later",
            )
        return None

    def _charge(self, call: Call, replay: Callable[[Request], Response]) -> None:
        with self._lock:
            call.charged = True
            self.charges[call.idempotency_key] += 1
            if call.idempotency_key:
                self._remembered[call.idempotency_key] = replay

    def _replay_of(
        self, request: Request, answer: Answer, call: Call, response: Response
    ) -> Callable[[Request], Response]:
        """How a later call with the same key is answered: the same body, or for a streamed
        answer (never held whole) the same stream again."""
        if isinstance(response, StreamingResponse):
            return lambda again: self._answer(again, answer, call)
        body, media_type = bytes(response.body), response.media_type
        return lambda again: Response(body, status_code=200, media_type=media_type)

    async def _wait_released(self) -> None:
        # A thread's event, polled: the test releases from its own thread and event loop.
        while not self._released.is_set():
            if self._server is not None and self._server.should_exit:
                return
            await asyncio.sleep(HOLD_POLL_S)

    def _refusal(self, request: Request, body: Any) -> Response | None:
        """What a real upstream answers a request it will not take, or None for a valid one."""
        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            return _error_response(401, "invalid_api_key", "wrong or missing bearer key")
        if not isinstance(body, dict):
            return _error_response(400, "invalid_request", "the body must be a JSON object")
        problems = [
            field
            for field, valid in (
                ("model", isinstance(body.get("model"), str) and body["model"]),
                ("prompt", isinstance(body.get("prompt"), str) and body["prompt"]),
                ("size", _size(body.get("size")) is not None),
                ("response_format", body.get("response_format") in ("b64_json", "url")),
                ("n", body.get("n", 1) == 1),
                ("image", _string_list(body.get("image", []))),
            )
            if not valid
        ]
        if problems:
            return _error_response(400, "invalid_request", f"invalid {', '.join(problems)}")
        return None

    def _answer(self, request: Request, answer: Answer, call: Call) -> Response:
        if answer.status != 200:
            headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
            return _error_response(answer.status, f"E{answer.status}", answer.message, headers)
        width, height = _size(call.body["size"]) or (1, 1)
        if answer.image == "url":
            if answer.url is not None:
                return JSONResponse({"data": [{"url": answer.url}]})
            name = f"{len(self._files)}-{call.shot_number}-{call.nth}.png"
            if answer.stream_bytes:
                self._files[name] = answer.stream_bytes
            else:
                self._files[name] = png_bytes(width, height) if answer.data is None else answer.data
            return JSONResponse({"data": [{"url": self.file_url(name)}]})
        if answer.stream_bytes:
            head, tail = b'{"data": [{"b64_json": "', b'"}]}'
            filler = answer.stream_bytes - len(head) - len(tail)
            return StreamingResponse(
                _stream(request, head, b"A", filler, tail), media_type="application/json"
            )
        if answer.data is not None:
            return JSONResponse({"data": [{"b64_json": base64.b64encode(answer.data).decode()}]})
        return JSONResponse({"data": [{"b64_json": _png_base64(width, height)}]})

    async def _file(self, request: Request) -> Response:
        data = self._files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        if isinstance(data, int):
            signature = b"\x89PNG\r\n\x1a\n"
            stream = _stream(request, signature, b"\0", data - len(signature), b"")
            return StreamingResponse(stream, media_type="image/png")
        return Response(data, media_type="image/png")

    async def _redirect(self, request: Request) -> Response:
        return RedirectResponse(request.query_params.get("to", "/"), status_code=302)


async def _stream(
    request: Request, head: bytes, fill: bytes, count: int, tail: bytes
) -> AsyncIterator[bytes]:
    """`head`, then `count` copies of the one byte `fill`, then `tail`, in `STREAM_CHUNK`s;
    stops early once the client has gone (a provider that stopped reading at its limit)."""
    yield head
    chunk = fill * STREAM_CHUNK
    sent = 0
    while count > 0:
        if sent % 16 == 15 and await request.is_disconnected():
            return
        yield chunk[:count]
        count -= STREAM_CHUNK
        sent += 1
    yield tail


def _error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _size(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, str):
        return None
    width, _, height = value.partition("x")
    if not (width.isdigit() and height.isdigit()):
        return None
    return int(width), int(height)


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


_PNGS: dict[tuple[int, int], bytes] = {}
_PNGS_BASE64: dict[tuple[int, int], str] = {}


def most_in_window(starts: Sequence[float], period_s: float) -> int:
    """The most of `starts` (seconds) within any half-open window [t, t + period_s): what a
    rate limit of N per period promises to keep at N or below."""
    ordered = sorted(starts)
    most = 0
    first = 0
    for last, moment in enumerate(ordered):
        while moment - ordered[first] >= period_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def png_bytes(width: int, height: int) -> bytes:
    """The PNG every image answer carries for this size (one flat colour; cached)."""
    if (width, height) not in _PNGS:
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), IMAGE_COLOUR).save(buffer, format="PNG")
        _PNGS[(width, height)] = buffer.getvalue()
    return _PNGS[(width, height)]


def _png_base64(width: int, height: int) -> str:
    if (width, height) not in _PNGS_BASE64:
        _PNGS_BASE64[(width, height)] = base64.b64encode(png_bytes(width, height)).decode()
    return _PNGS_BASE64[(width, height)]


@contextlib.contextmanager
def running(**options: Any) -> Iterator[FakeUpstream]:
    """A started `FakeUpstream` (options as its constructor's), stopped on exit."""
    server = FakeUpstream(**options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Quota:
    """A script (`fake.script = quota`, or called from one) for an upstream whose quota changes
    during a run: `phases` of (seconds, calls allowed per second), the last one's rate going on
    after the end. A call is accepted while fewer than the rate's calls were accepted in the
    sliding second before it; beyond that it answers 429 with `Retry-After` and is not counted.
    Before `start()` every call is accepted. Accepted calls answer None (the script's default
    image answer), so a caller can give them a latency of its own.
    """

    def __init__(
        self,
        phases: Sequence[tuple[float, int]],
        *,
        retry_after: str = "1",
        window_s: float = 1.0,
    ) -> None:
        if not phases:
            raise ValueError("a quota needs at least one phase")
        self.phases = tuple(phases)
        self.retry_after = retry_after
        self.window_s = window_s
        self.started: float | None = None  # time.monotonic() of the first phase's start
        self._accepted: list[float] = []
        self._lock = threading.Lock()

    @property
    def duration_s(self) -> float:
        """The phases' total length, in seconds."""
        return sum(seconds for seconds, _ in self.phases)

    def start(self, at: float | None = None) -> None:
        """The first phase starts `at` (a `time.monotonic()` value; default now)."""
        with self._lock:
            self.started = time.monotonic() if at is None else at
            self._accepted = []

    def rate_at(self, moment: float) -> int:
        """The calls per second allowed at `moment` (the first phase's before the start)."""
        elapsed = 0.0 if self.started is None else moment - self.started
        for seconds, rate in self.phases:
            if elapsed < seconds:
                return rate
            elapsed -= seconds
        return self.phases[-1][1]

    def allowed(self, begin: float, end: float) -> float:
        """The integral of the rate over [begin, end) (seconds since the start): the calls the
        quota lets through in that span at best."""
        total, offset = 0.0, 0.0
        for seconds, rate in self.phases:
            total += rate * max(0.0, min(end, offset + seconds) - max(begin, offset))
            offset += seconds
        return total + self.phases[-1][1] * max(0.0, end - max(begin, offset))

    def __call__(self, call: Call) -> Answer | None:
        if self.started is None:
            return None
        with self._lock:
            horizon = call.started - self.window_s
            self._accepted = [moment for moment in self._accepted if moment > horizon]
            if len(self._accepted) >= self.rate_at(call.started):
                return error(429, "quota exceeded", retry_after=self.retry_after, latency_s=0.0)
            self._accepted.append(call.started)
        return None
