"""The event hub of one API process: the one Postgres LISTEN (or, behind a transaction pooler,
the one shared poll) that wakes the storyboard event streams (`events`) of a changed project.

A change of a project's storyboards notifies `storyboard_events` with the project's id (the
trigger of migration 0006). The hub holds the one connection that listens, and wakes the
streams of that project; each woken stream re-reads the status answer, and the streams of one
project share that read (`_Topic`). Behind a transaction pooler without `DATABASE_DIRECT_URL`
there is no session to LISTEN on; the hub then runs one query per `POLL_S` for the projects of
all open streams together. It also carries what every stream must learn at once: the loss of
the listening connection (`outage`) and the server's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from pgqueue import Database
from service.errors import DATABASE_UNAVAILABLE

logger = logging.getLogger("service.events")

CHANNEL = "storyboard_events"  # what the trigger of migration 0006 notifies
POLL_S = 1.0  # seconds between the shared polls when no LISTEN is possible
PING_S = 15.0  # seconds between checks that the listening connection still answers
PING_TIMEOUT_S = 5.0  # seconds a check may take before the connection counts as dead
CONNECT_TIMEOUT_S = 5.0
RECONNECT_MIN_S = 0.2  # first wait before reconnecting; doubles up to RECONNECT_MAX_S
RECONNECT_MAX_S = 5.0
RECHECK_S = 30.0  # seconds a stream waits for a change before reading again anyway

# The shared poll (pool mode): per watched project, what changes whenever a storyboard does.
# The storyboards' primary key (project_id, shot_number) serves it; it lives here, not in
# `queries`, because only the hub runs it.
POLL_CHANGES = """
SELECT project_id, max(updated_at) AS changed_at, count(*) AS total
FROM storyboard.storyboards
WHERE project_id = ANY($1::uuid[])
GROUP BY project_id
"""
PING = "SELECT 1"

Status = dict[str, Any]
Loader = Callable[[], Awaitable[Status]]


class _Topic:
    """The streams of one project, and the status they last read (per owner)."""

    __slots__ = ("cache", "lock", "version", "wakers")

    def __init__(self) -> None:
        self.wakers: set[asyncio.Event] = set()
        self.version = 0  # bumped by every wake; a read at an older version is stale
        # user name -> (version, monotonic read time, status). Only the owner can open a
        # project's stream; keyed by user all the same, so one user never reads another's.
        self.cache: dict[str, tuple[int, float, Status]] = {}
        self.lock = asyncio.Lock()  # one read at a time: the others take its answer


class Subscription:
    """One stream's registration with the hub (from `EventHub.subscribe`)."""

    def __init__(self, hub: EventHub, topic: _Topic, user: str) -> None:
        self._hub = hub
        self._topic = topic
        self._user = user
        self.woken = asyncio.Event()
        self.woken.set()  # the first read happens at once

    async def wait(self, timeout_s: float) -> bool:
        """Wait until the project changed (True) or `timeout_s` passed (False)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout_s)):
                await self.woken.wait()
        return self.woken.is_set()

    async def read(self, load: Loader) -> Status:
        """The project's status: read by `load`, or the answer another stream just read.

        A cached answer serves while no wake came after it and it is younger than
        `RECHECK_S` (the read also repairs what no notification reports: a storyboard whose
        worker died, failed after STORYBOARD_TIMEOUT_S).
        """
        topic = self._topic
        self.woken.clear()  # before the read: a change during it wakes us again
        async with topic.lock:
            cached = topic.cache.get(self._user)
            now = time.monotonic()
            if cached is not None and cached[0] == topic.version and now - cached[1] < RECHECK_S:
                return cached[2]
            version = topic.version
            # In a task of its own: a read cut short by the stream's timeout is cancelled, and
            # its clean-up (which may wait on a dead link too) does not hold the stream.
            task = self._hub.detach(load())
            try:
                status = await asyncio.shield(task)
            except BaseException:
                task.cancel()
                raise
            self._hub.reads += 1
            topic.cache[self._user] = (version, now, status)
            return status


class EventHub:
    """Wakes the streams of a project when its storyboards change (one listener for all).

    Args:
        database: the API's database; LISTEN goes to its `listen_url`, and without one (a
            transaction pooler and no direct URL) the hub polls over `database.url`.
    """

    def __init__(self, database: Database | None = None) -> None:
        self.database = database
        self._topics: dict[uuid.UUID, _Topic] = {}
        self.connected = asyncio.Event()  # listening (or polling) right now
        self.reads = 0  # status reads by streams, for tests and measurements
        self.polls = 0  # shared polls run (pool mode)
        self._signatures: dict[uuid.UUID, tuple[Any, ...]] = {}
        # The listener was lost and is not back: notifications are missed, the database is
        # probably away. Set at the loss itself, so streams say so at once, not at a read.
        self.outage = False
        self.stopping = False  # the server shuts down: every stream ends
        self._detached: set[asyncio.Task[Any]] = set()

    def detach(self, work: Awaitable[Status]) -> asyncio.Task[Status]:
        """`work` as a task the hub keeps a reference to until it ends."""
        task = asyncio.ensure_future(work)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        return task

    def abandon_reads(self) -> None:
        """Cancel the reads still running (streams gave up on them): the process stops."""
        for task in list(self._detached):
            task.cancel()

    def shut_down(self) -> None:
        """End every stream (with `event: shutdown`) and refuse new ones: the server stops."""
        self.stopping = True
        self.wake_all()

    @property
    def mode(self) -> str:
        """`listen` (notifications), `poll` (one shared query per POLL_S) or `off`."""
        if self.database is None:
            return "off"
        return "listen" if self.database.listen_url else "poll"

    @property
    def watching(self) -> int:
        """How many streams are open."""
        return sum(len(topic.wakers) for topic in self._topics.values())

    @contextlib.contextmanager
    def subscribe(self, project_id: uuid.UUID, user: str) -> Iterator[Subscription]:
        """Register a stream of `project_id` for the `with` block; it is woken on changes."""
        topic = self._topics.setdefault(project_id, _Topic())
        subscription = Subscription(self, topic, user)
        topic.wakers.add(subscription.woken)
        try:
            yield subscription
        finally:
            topic.wakers.discard(subscription.woken)
            if not topic.wakers and self._topics.get(project_id) is topic:
                del self._topics[project_id]
                self._signatures.pop(project_id, None)

    def wake(self, project_id: uuid.UUID) -> None:
        """The storyboards of `project_id` changed: wake its streams."""
        topic = self._topics.get(project_id)
        if topic is None:
            return
        topic.version += 1
        for woken in topic.wakers:
            woken.set()

    def wake_all(self) -> None:
        """Wake every stream (after a reconnect: notifications may have been missed)."""
        for project_id in list(self._topics):
            self.wake(project_id)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            project_id = uuid.UUID(payload)
        except ValueError:
            logger.warning("ignoring notification %r on %s", payload[:100], channel)
            return
        self.wake(project_id)

    async def run(self) -> None:
        """Listen (or poll) until cancelled, reconnecting after every loss of the database."""
        if self.database is None:
            return
        delay_s = RECONNECT_MIN_S
        while True:
            try:
                if self.database.listen_url:
                    await self._listen(self.database.listen_url)
                else:
                    await self._poll(self.database)
            except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError, OSError) as exc:
                if self.connected.is_set():
                    delay_s = RECONNECT_MIN_S  # it had worked: a fresh outage
                    self._lost()
                logger.warning(
                    "live-progress %s connection lost (%r); reconnecting in %.1f s",
                    self.mode,
                    exc,
                    delay_s,
                    extra={"action": "events_reconnect"},
                )
            except Exception:  # a side loop's boundary: log it, and listen again
                logger.exception("live-progress %s loop failed; restarting it", self.mode)
                if self.connected.is_set():
                    self._lost()
            finally:
                self.connected.clear()
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, RECONNECT_MAX_S)

    def _lost(self) -> None:
        """The listener (or poller) connection is gone: every stream learns it now."""
        self.outage = True
        self.wake_all()

    def _back(self) -> None:
        """Listening (or polling) again: what changed meanwhile was not notified, every stream
        reads."""
        self.outage = False
        self.connected.set()
        self.wake_all()

    async def _listen(self, url: str) -> None:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(CHANNEL, self._on_notify)
            self._back()
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_S):
                        await lost.wait()
                if lost.is_set():
                    raise ConnectionError("the listening connection was closed")
                # A cut network sends nothing: only a query finds out that the link is dead.
                await conn.fetchval(PING, timeout=PING_TIMEOUT_S)
        finally:
            conn.terminate()

    async def _poll(self, database: Database) -> None:
        conn = await database.connect(timeout=CONNECT_TIMEOUT_S)
        try:
            self._back()
            while True:
                watched = list(self._topics)
                if watched:
                    rows = await conn.fetch(POLL_CHANGES, watched, timeout=PING_TIMEOUT_S)
                    self.polls += 1
                    seen = {row["project_id"]: (row["changed_at"], row["total"]) for row in rows}
                    for project_id in watched:
                        signature = seen.get(project_id, (None, 0))
                        before = self._signatures.get(project_id)
                        self._signatures[project_id] = signature
                        # At a project's first poll too: a change between its streams'
                        # first read and this poll would otherwise go unseen.
                        if before != signature:
                            self.wake(project_id)
                await asyncio.sleep(POLL_S)
        finally:
            conn.terminate()


@contextlib.asynccontextmanager
async def open_hub(database: Database) -> AsyncIterator[EventHub]:
    """The hub of one API process, for its lifespan: its listener runs as a task beside it."""
    hub = EventHub(database)
    task = asyncio.get_running_loop().create_task(hub.run(), name="storyboard-events-hub")
    try:
        yield hub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        hub.abandon_reads()
