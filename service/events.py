"""Live progress: `GET /api/projects/{id}/storyboards/events` (Server-Sent Events), fed by one
Postgres LISTEN per API process.

A change of a project's storyboards notifies `storyboard_events` with the project's id (the
trigger of migration 0006). The `EventHub` of an API process (event_hub.py) holds the one
connection that listens, and wakes the streams of that project; each woken stream re-reads
the status answer, and the streams of one project share that read. So open streams cost
nothing while nothing changes, and one read per changed project when something does, however
many watch it.

The hub (`event_hub.EventHub`) also carries what every stream must learn at once, not at its
next read: the loss of the listening connection (`unavailable`) and the server's shutdown
(`shutdown`, from `serving.ApiServer`). Each read has `READ_TIMEOUT_S`, so a database that
answers nothing holds no stream past its heartbeats or `STREAM_MAX_S`. `StreamSlots`
(stream_slots.py) counts the open streams per user.

Why Starlette's own `StreamingResponse` and not `sse-starlette`: the wire format is two lines
per event, and what matters here (closing when the client goes away, whatever the server's
ASGI version) is a few lines of ours; a dependency would add a second shutdown machinery
(its own exit handling and ping task) to the one the hub already is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import anyio
import asyncpg
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from pgqueue import Queue
from service import auth, storyboards
from service.errors import DATABASE_UNAVAILABLE
from service.event_hub import RECHECK_S, EventHub, Loader, Status
from service.settings import ServiceSettings
from service.stream_slots import StreamSlots

logger = logging.getLogger("service.events")

READ_TIMEOUT_S = 5.0  # seconds one status read may take: a black-holed database answers never
HEARTBEAT_S = 15.0  # seconds of silence before a comment line keeps proxies from closing
OUTAGE_MAX_S = 60.0  # seconds a stream waits for the database to come back before it ends
RETRY_S = 1.0  # seconds between a stream's reads while the database or the listener is away


def sse(event: str, data: Any, *, event_id: str | None = None) -> bytes:
    """One Server-Sent Event: its name, its data as one line of JSON, and an id if given."""
    head = f"event: {event}\n" if event_id is None else f"event: {event}\nid: {event_id}\n"
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# The id of `done`: a standard EventSource reconnects whenever a stream ends, sending the last
# id it saw as Last-Event-ID; a project still done answers that reconnect 204, which tells
# the EventSource to stop (the WHATWG rule), instead of replaying `done` every 3 s for ever.
DONE_ID = "done"


HEARTBEAT = b": heartbeat\n\n"  # a comment line: clients ignore it, proxies see traffic


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` that stops as soon as the client disconnects.

    Starlette watches for the disconnect only under ASGI < 2.4; under 2.4 it learns of it when
    a write fails, which for a quiet stream is at the next heartbeat, 15 s on. Watching
    `receive` ourselves ends the stream (and its subscription) at once under either.

    Args:
        on_close: called once when the stream has ended, however it ended (the end of its
            events, a disconnect, a cancellation): gives its place back.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str],
        on_close: Callable[[], None],
    ) -> None:
        super().__init__(content, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client went away mid-write
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            self._on_close()


def _failure(code: str, message: str) -> bytes:
    # Not `event: error`: EventSource fires its own `error` (a lost connection) under that
    # name, and a client could not tell the two apart.
    return sse("failure", {"code": code, "message": message})


SHUTDOWN = sse(
    "shutdown",
    {"message": "the server is shutting down; the work goes on: open the stream again"},
)


async def stream_events(
    hub: EventHub, project_id: uuid.UUID, user: str, load: Loader, max_s: float
) -> AsyncIterator[bytes]:
    """The events of one stream: `status` at once and after every change, `done` at the end,
    heartbeats in between, `timeout` after `max_s`; `unavailable` while the database is down
    (then `status` again when it is back), `failure` when it stays down for `OUTAGE_MAX_S`;
    `shutdown` when the server stops."""
    clock = time.monotonic
    deadline = clock() + max_s
    last_sent = clock()
    last_read = clock()
    sent: Status | None = None
    outage_since: float | None = None  # when this stream learnt that the database was away

    def unavailable(why: object) -> bytes:
        nonlocal outage_since, sent, last_sent
        outage_since = last_sent = clock()
        sent = None  # the next status goes out even if unchanged: it says the database is back
        logger.warning("stream of %s: database unavailable (%s)", project_id, why)
        return sse("unavailable", {"message": "the database is unavailable; waiting"})

    with hub.subscribe(project_id, user) as subscription:
        while True:
            if hub.stopping:
                yield SHUTDOWN
                return
            if hub.outage and outage_since is None:
                yield unavailable("the listening connection was lost")
            status: Status | None = None
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    status = await subscription.read(load)
            except Exception as exc:  # the stream's boundary: end it clearly, log why
                # While the database goes away under a read, asyncpg may fail a pool
                # connection's query in ways of its own (an InternalClientError): the outage's.
                if not isinstance(exc, DATABASE_UNAVAILABLE) and not hub.outage:
                    logger.exception("stream of %s failed", project_id)
                    yield _failure("internal_error", "the stream failed")
                    return
                if outage_since is None:
                    yield unavailable(repr(exc))
                elif clock() - outage_since > OUTAGE_MAX_S:
                    yield _failure(
                        "database_unavailable",
                        f"the database was unavailable for {OUTAGE_MAX_S:g} s;"
                        " the stream ends: read the status again later",
                    )
                    return
            last_read = clock()
            if status is not None:
                if not hub.outage:
                    outage_since = None
                if status != sent:
                    yield sse("status", status)
                    sent = status
                    last_sent = clock()
                if status["done"]:
                    yield sse("done", status, event_id=DONE_ID)
                    return
            # While the database or the listener is away no notification comes: read again
            # soon. Otherwise wait for one, reading anyway after RECHECK_S of quiet.
            recheck_s = RETRY_S if status is None or hub.outage else RECHECK_S
            while not hub.stopping:
                now = clock()
                if now >= deadline:
                    yield sse(
                        "timeout",
                        {
                            "message": f"stopped waiting after {max_s:g} s; the work goes on:"
                            " read the status again to see where it is",
                            "after_s": max_s,
                        },
                    )
                    return
                wake_at = min(deadline, last_sent + HEARTBEAT_S, last_read + recheck_s)
                if await subscription.wait(wake_at - now):
                    break  # a change (or the hub's news): read it
                now = clock()
                if now >= last_read + recheck_s:
                    break  # long quiet: read anyway (the read repairs what nobody notifies)
                if now >= last_sent + HEARTBEAT_S:
                    yield HEARTBEAT
                    last_sent = now


async def events(request: Request) -> Response:
    """GET /api/projects/{id}/storyboards/events"""
    state = request.scope["state"]
    pool = cast(asyncpg.Pool, state["pool"])
    queue = cast(Queue, state["queue"])
    settings = cast(ServiceSettings, state["settings"])
    hub = cast(EventHub, state["events"])
    slots = cast(StreamSlots, state["stream_slots"])
    user = await auth.authenticate(pool, request.headers.get("authorization"))
    project_id = storyboards.parse_project_id(request.path_params["project_id"])

    async def load() -> Status:
        return await storyboards.project_status(pool, queue, user, project_id, settings)

    # Before the stream starts, so another user's project (or none) answers a JSON 404, and a
    # database that does not answer a 503.
    async with asyncio.timeout(READ_TIMEOUT_S):
        status = await load()
    if request.headers.get("last-event-id") == DONE_ID and status["done"]:
        return Response(status_code=204)  # an EventSource's reconnect after `done`: stop
    slots.take(user.name)  # a 429 past STREAM_MAX_PER_USER; no await between it and the stream
    return EventStreamResponse(
        stream_events(hub, project_id, user.name, load, settings.stream_max_s),
        # Proxies (nginx) must pass events on as they come, not buffer them.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        on_close=lambda: slots.give_back(user.name),
    )


ROUTES: list[BaseRoute] = [
    Route("/api/projects/{project_id}/storyboards/events", events, methods=["GET"]),
]
