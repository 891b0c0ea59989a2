"""`GET /api/projects/{id}/storyboards/events`: live progress over Server-Sent Events.

httpx's ASGITransport buffers whole bodies, so these tests serve the app with uvicorn on a
loopback port inside the test's event loop: the streams are real HTTP, and the hub (and the
loop's tasks) can be inspected directly. Changes are made with plain SQL on the storyboards,
as a worker's writes would be, so the time from a commit to its event can be measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import uvicorn

from devserver.embedded import EmbeddedPostgres
from pgqueue import PoolMode
from service import event_hub, events, queries
from service.app import create_app
from service.event_hub import EventHub
from service.settings import ServiceSettings
from service.stream_slots import StreamSlots
from tests.service.support import bearer, project_body
from tests.support import db
from tests.support.ports import free_port
from tests.support.proxy import freezable_proxy
from tests.support.sse import open_stream
from tests.support.wait import wait_for

CHANGE_LATENCY_S = 1.0  # the promise: an event within 1 s of every change
UNAVAILABLE_WITHIN_S = 2.0  # from the database's stop to `event: unavailable`
STREAMS = 200
PROJECTS = 20  # the 200 streams watch 10 projects each


class Served:
    """The app on a loopback port, with its hub and its count of streams."""

    def __init__(self, url: str, hub: EventHub, slots: StreamSlots) -> None:
        self.url = url
        self.hub = hub
        self.slots = slots


@contextlib.asynccontextmanager
async def serve(settings: ServiceSettings) -> AsyncIterator[Served]:
    """The app under uvicorn in this event loop, stopped at the end."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), 10, "uvicorn to start")
        assert not task.done(), "uvicorn did not start"
        state = server.lifespan.state
        yield Served(f"http://127.0.0.1:{port}", state["events"], state["stream_slots"])
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _project(
    client: httpx.AsyncClient, headers: dict[str, str], shots: int = 3, generate: bool = True
) -> str:
    created = await client.post("/api/projects", json=project_body(shots), headers=headers)
    assert created.status_code == 201, created.text
    project_id: str = created.json()["id"]
    if generate:  # no worker runs: the storyboards stay `generating` until the test says
        answer = await client.post(
            f"/api/projects/{project_id}/storyboards/generate", headers=headers
        )
        assert answer.status_code == 202, answer.text
    return project_id


async def _finish_shot(
    conn: asyncpg.Connection, project_id: str, shot: int, status: str = "failed"
) -> None:
    """What a worker's final write does: one storyboard ends, then the project's status."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE storyboard.storyboards SET status = $3, error = 'boom', updated_at = now(),"
            " image_url = CASE WHEN $3 = 'success' THEN '/media/x.png' END"
            " WHERE project_id = $1 AND shot_number = $2",
            project_id,
            shot,
            status,
        )
        await conn.execute(queries.FINISH_PROJECT, project_id)


async def _touch(conn: asyncpg.Pool | asyncpg.Connection, project_id: str) -> None:
    """A change of a storyboard that leaves it generating (as a retry's attempt count)."""
    await conn.execute(
        "UPDATE storyboard.storyboards SET attempts = attempts + 1, updated_at = now()"
        " WHERE project_id = $1 AND shot_number = 1",
        project_id,
    )


@pytest.fixture
async def alice(db_url: str) -> dict[str, str]:
    return await bearer(db_url, "alice")


@pytest.fixture
async def served(settings: ServiceSettings) -> AsyncIterator[Served]:
    # One user holds every stream of these tests; the cap per user has a test of its own.
    async with serve(settings.model_copy(update={"stream_max_per_user": STREAMS})) as app:
        await wait_for(app.hub.connected.is_set, 5, "the hub to listen")
        yield app


@pytest.fixture
async def client(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=STREAMS + 20)
    async with httpx.AsyncClient(base_url=served.url, timeout=10, limits=limits) as c:
        yield c


async def test_status_at_once_then_within_a_second_of_each_change_then_done(
    served: Served, client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    assert served.hub.mode == "listen"
    project_id = await _project(client, alice)
    async with open_stream(client, project_id, alice) as stream:
        name, status = await stream.next()
        assert name == "status"
        assert status["generating"] == 3 and not status["done"]
        async with pool.acquire() as conn:
            for shot in (1, 2):
                changed = time.monotonic()
                await _finish_shot(conn, project_id, shot)
                name, status = await stream.until("status", timeout=CHANGE_LATENCY_S)
                assert name == "status", f"no status within {CHANGE_LATENCY_S} s of the change"
                assert time.monotonic() - changed < CHANGE_LATENCY_S
                assert status["failed"] == shot
                assert status["storyboards"][shot - 1]["error"] == "boom"
            await _finish_shot(conn, project_id, 3, "success")
        name, status = await stream.until("done", timeout=CHANGE_LATENCY_S)
        assert name == "done" and status["done"] and status["status"] == "partial"
        assert await stream.next() == ("closed", None)
    await wait_for(lambda: served.hub.watching == 0, 5, "the stream's subscription to end")


async def test_a_project_never_generated_is_not_done_and_its_stream_waits_for_the_generate(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    # `done` means every storyboard finished: a client that opens the stream and then calls
    # generate must see the work, not a `done` of nothing.
    project_id = await _project(client, alice, shots=2, generate=False)
    async with open_stream(client, project_id, alice) as stream:
        name, status = await stream.next()
        assert name == "status" and status["status"] == "pending" and not status["done"]
        answer = await client.post(
            f"/api/projects/{project_id}/storyboards/generate", headers=alice
        )
        assert answer.status_code == 202, answer.text
        name, status = await stream.until("status", timeout=CHANGE_LATENCY_S)
        assert name == "status" and status["generating"] == 2 and not status["done"]
        async with pool.acquire() as conn:
            for shot in (1, 2):
                await _finish_shot(conn, project_id, shot, "success")
        name, status = await stream.until("done", timeout=CHANGE_LATENCY_S)
        assert name == "done" and status["status"] == "completed"


async def test_the_status_of_a_project_never_generated_is_pending_and_not_done(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    project_id = await _project(client, alice, generate=False)
    answer = await client.get(f"/api/projects/{project_id}/storyboards/status", headers=alice)
    assert answer.status_code == 200
    assert answer.json()["status"] == "pending" and answer.json()["done"] is False


async def test_streams_per_user_are_capped_and_a_closed_stream_frees_its_place(
    settings: ServiceSettings, alice: dict[str, str], db_url: str
) -> None:
    capped = settings.model_copy(update={"stream_max_per_user": 2})
    bob = await bearer(db_url, "bob")
    async with (
        serve(capped) as app,
        httpx.AsyncClient(base_url=app.url, timeout=10) as client,
    ):
        project_id = await _project(client, alice)
        bobs = await _project(client, bob)
        url = f"/api/projects/{project_id}/storyboards/events"
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(open_stream(client, project_id, alice))
            await stack.enter_async_context(open_stream(client, project_id, alice))
            refused = await client.get(url, headers=alice)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_streams"
            assert int(refused.headers["retry-after"]) > 0
            # The cap is per user: bob's stream opens.
            async with open_stream(client, bobs, bob) as other:
                assert (await other.next())[0] == "status"
            # A client that goes away mid-stream frees its place.
            assert (await first.next())[0] == "status"
            await first.response.aclose()
            await wait_for(lambda: app.slots.of("alice") == 1, 5, "the closed stream's place")
            async with open_stream(client, project_id, alice) as again:
                assert (await again.next())[0] == "status"
        await wait_for(lambda: app.slots.open == 0, 5, "every place to be free")


async def test_a_token_is_needed_and_another_users_project_is_not_found(
    client: httpx.AsyncClient, alice: dict[str, str], db_url: str
) -> None:
    project_id = await _project(client, alice)
    url = f"/api/projects/{project_id}/storyboards/events"
    assert (await client.get(url)).status_code == 401
    bob = await bearer(db_url, "bob")
    answer = await client.get(url, headers=bob)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


async def test_heartbeat_comments_while_nothing_changes(
    served: Served,
    client: httpx.AsyncClient,
    alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "HEARTBEAT_S", 0.2)  # 15 s in production
    project_id = await _project(client, alice)
    async with open_stream(client, project_id, alice) as stream:
        assert (await stream.next())[0] == "status"
        reads = served.hub.reads
        for _ in range(3):
            assert await stream.next(timeout=2) == ("comment", "heartbeat")
        assert served.hub.reads == reads, "a heartbeat must not read the database"


async def test_timeout_after_stream_max_s(settings: ServiceSettings, alice: dict[str, str]) -> None:
    async with (
        serve(settings.model_copy(update={"stream_max_s": 0.5})) as app,
        httpx.AsyncClient(base_url=app.url, timeout=10) as client,
    ):
        project_id = await _project(client, alice)
        started = time.monotonic()
        async with open_stream(client, project_id, alice) as stream:
            assert (await stream.next())[0] == "status"
            name, data = await stream.next(timeout=3)
            assert name == "timeout" and data["after_s"] == 0.5
            assert "stopped waiting after 0.5 s" in data["message"]
            assert 0.5 <= time.monotonic() - started < 2.5
            assert (await stream.next())[0] == "closed"
        await wait_for(lambda: app.hub.watching == 0, 5, "the subscription to end")


async def test_a_client_that_goes_away_leaves_no_task_and_no_subscription(
    served: Served, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    project_id = await _project(client, alice)
    before = asyncio.all_tasks()
    for _ in range(3):
        async with open_stream(client, project_id, alice) as stream:
            assert (await stream.next())[0] == "status"
            assert served.hub.watching == 1
        # Leaving the block closes the connection mid-stream, as a closed tab does.
    await wait_for(lambda: served.hub.watching == 0, 5, "the subscriptions to end")

    def leaked() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() - before if not t.done()}

    # uvicorn ends a connection's task when its stream ends: nothing of ours may be left.
    await wait_for(lambda: not leaked(), 5, "the streams' tasks to end")


@pytest.mark.timeout(120)
async def test_two_hundred_streams_cost_reads_per_change_not_per_stream(
    served: Served,
    client: httpx.AsyncClient,
    alice: dict[str, str],
    pool: asyncpg.Pool,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reads counted are the changes' alone: no stream re-reads after a quiet RECHECK_S
    # (30 s) while the test waits for the statistics below.
    monkeypatch.setattr(events, "RECHECK_S", 300.0)
    projects = [await _project(client, alice, shots=2) for _ in range(PROJECTS)]
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(open_stream(client, projects[i % PROJECTS], alice))
            for i in range(STREAMS)
        ]
        await asyncio.gather(*(s.next() for s in streams))
        assert served.hub.watching == STREAMS

        # Quiet: 200 open streams run no query at all (the listener's ping aside). Counted
        # on a connection of our own; the counting itself shows as a few transactions.
        database = db.database_of(db_url)
        quiet_s = 5.0
        counter = await asyncpg.connect(db_url)
        try:
            # Postgres 15 reports an idle backend's last counts up to 10 s late: the streams'
            # opening reads would land in the quiet window (8-47 transactions/s were seen).
            # Watched from another database: the watching's own transactions must not count.
            watcher = await asyncpg.connect(urlsplit(db_url)._replace(path="/postgres").geturl())
            try:
                await wait_for(
                    lambda: _counts_reported(watcher, database), 30, "the opening reads' counts"
                )
            finally:
                await watcher.close()
            before = await _transactions(counter, database)
            await asyncio.sleep(quiet_s)  # measuring what happens while nothing does
            quiet = await _transactions(counter, database) - before
        finally:
            await counter.close()
        # Changes: each of 10 changes wakes 10 streams, which share one status read.
        reads = served.hub.reads
        started = time.monotonic()
        for project_id in projects[:10]:
            woken = [s for i, s in enumerate(streams) if projects[i % PROJECTS] == project_id]
            await _touch(pool, project_id)
            results = await asyncio.gather(*(s.until("status", 2) for s in woken))
            assert all(name == "status" for name, _ in results)
        elapsed = time.monotonic() - started
        shared_reads = served.hub.reads - reads
        print(
            f"\n{STREAMS} streams on {PROJECTS} projects: {quiet / quiet_s:.1f} transactions/s"
            f" while quiet; 10 changes ({elapsed:.2f} s) woke {10 * STREAMS // PROJECTS}"
            f" streams with {shared_reads} status reads"
        )
        # Polling streams would be 200 a second or more.
        assert quiet / quiet_s <= 2, f"{quiet} transactions in {quiet_s} s, {STREAMS} streams"
        assert shared_reads <= 12, shared_reads  # one per change, and a re-read at most twice


async def _counts_reported(conn: asyncpg.Connection, database: str) -> bool:
    """Whether every other backend of `database` has reported its counts: idle for longer than
    the 10 s after which Postgres 15 reports an idle backend's pending statistics."""
    reported: bool = await conn.fetchval(
        "SELECT coalesce(bool_and(state = 'idle' AND state_change < now() - interval '10.5 s'),"
        " true) FROM pg_stat_activity WHERE datname = $1",
        database,
    )
    return reported


async def _transactions(conn: asyncpg.Connection, database: str) -> int:
    """Transactions committed in `database` so far (the statistics collector's count)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    count: int = await conn.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1", database
    )
    return count


async def test_behind_a_pooler_without_a_direct_url_one_shared_poll_serves_every_stream(
    settings: ServiceSettings, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    pooled = settings.model_copy(
        update={"database_pool_mode": PoolMode.TRANSACTION, "stream_max_per_user": 30}
    )
    async with (
        serve(pooled) as app,
        httpx.AsyncClient(base_url=app.url, timeout=10) as client,
    ):
        assert app.hub.mode == "poll"
        projects = [await _project(client, alice) for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(open_stream(client, p, alice))
                for p in projects * 10
            ]
            await asyncio.gather(*(s.next() for s in streams))
            polls, started = app.hub.polls, time.monotonic()
            changed = time.monotonic()
            async with pool.acquire() as conn:
                await _finish_shot(conn, projects[0], 1)
            name, status = await streams[0].until("status", timeout=event_hub.POLL_S + 1)
            assert name == "status" and status["failed"] == 1
            assert time.monotonic() - changed < event_hub.POLL_S + CHANGE_LATENCY_S
            await wait_for(lambda: app.hub.polls >= polls + 3, 5, "three more polls")
            per_s = (app.hub.polls - polls) / (time.monotonic() - started)
            assert per_s < 1.5 / event_hub.POLL_S, f"{per_s:.1f} polls/s for {len(streams)} streams"


# -- a database restart ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def restartable() -> Iterator[EmbeddedPostgres]:
    """A server of this module's own, which the test may stop."""
    with db.own_server("events") as postgres:
        yield postgres


@pytest.mark.timeout(120)
async def test_a_stream_survives_a_database_restart(
    restartable: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No read of the stream's own falls into the outage (RECHECK_S is 30 s): it learns of it
    # from the hub, whose listening connection the stop closes.
    name = db.unique_name("events")
    await db.create_database(restartable.url, name)
    url = restartable.url_for(name)
    await asyncio.to_thread(db.migrate, url)
    headers = await bearer(url, "alice")
    settings = ServiceSettings(database_url=url, media_dir=tmp_path / "media")
    async with (
        serve(settings) as app,
        httpx.AsyncClient(base_url=app.url, timeout=10) as client,
    ):
        project_id = await _project(client, headers)
        async with open_stream(client, project_id, headers) as stream:
            assert (await stream.next())[0] == "status"
            stopping = asyncio.create_task(asyncio.to_thread(restartable.stop))
            name, data = await stream.until("unavailable", timeout=UNAVAILABLE_WITHIN_S)
            assert name == "unavailable" and "database is unavailable" in data["message"]
            await stopping
            await asyncio.to_thread(restartable.start)
            await wait_for(app.hub.connected.is_set, 15, "the hub to listen again")
            # Back: the status again (unchanged), which tells the client so.
            name, status = await stream.until("status", timeout=5)
            assert name == "status" and status["failed"] == 0
            conn = await asyncpg.connect(url)
            try:
                await _finish_shot(conn, project_id, 1)
            finally:
                await conn.close()
            name, status = await stream.until("status", timeout=5)
            assert name == "status" and status["failed"] == 1  # it resumed


@pytest.mark.timeout(60)
async def test_on_a_black_holed_database_heartbeats_and_stream_max_s_still_hold(
    settings: ServiceSettings, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cut link answers nothing and closes nothing: only the stream's own clock ends a read.
    monkeypatch.setattr(events, "HEARTBEAT_S", 0.3)
    # So that a read falls into the cut (the streams' waits and the shared reads' cache).
    monkeypatch.setattr(events, "RECHECK_S", 0.3)
    monkeypatch.setattr(event_hub, "RECHECK_S", 0.3)
    monkeypatch.setattr(events, "READ_TIMEOUT_S", 0.5)
    max_s = 4.0
    target = urlsplit(settings.database_url or "")
    async with freezable_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        # The user and password as given (the embedded server has a password), the proxy's port.
        userinfo = target.netloc.rpartition("@")[0]
        proxied = target._replace(netloc=f"{userinfo}@127.0.0.1:{proxy.port}").geturl()
        cut = settings.model_copy(update={"database_url": proxied, "stream_max_s": max_s})
        async with (
            serve(cut) as app,
            httpx.AsyncClient(base_url=app.url, timeout=10) as client,
        ):
            project_id = await _project(client, alice)
            started = time.monotonic()
            async with open_stream(client, project_id, alice) as stream:
                assert (await stream.next())[0] == "status"
                proxy.freeze()
                try:
                    name, _ = await stream.until("unavailable", timeout=2.0)
                    assert name == "unavailable"
                    heartbeats = 0
                    while (event := await stream.next(timeout=2.0))[0] == "comment":
                        heartbeats += 1
                    assert event[0] == "timeout", stream.events
                    assert heartbeats >= 3, stream.events
                    assert time.monotonic() - started < max_s + 2.0
                finally:
                    proxy.thaw()


@pytest.mark.timeout(120)
async def test_a_database_away_for_outage_max_s_ends_the_stream_with_failure_not_error(
    restartable: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `error` is EventSource's own event (a lost connection): ours must not be mistaken for it.
    monkeypatch.setattr(events, "OUTAGE_MAX_S", 1.0)
    name = db.unique_name("events")
    await db.create_database(restartable.url, name)
    url = restartable.url_for(name)
    await asyncio.to_thread(db.migrate, url)
    headers = await bearer(url, "alice")
    settings = ServiceSettings(database_url=url, media_dir=tmp_path / "media")
    async with (
        serve(settings) as app,
        httpx.AsyncClient(base_url=app.url, timeout=10) as client,
    ):
        project_id = await _project(client, headers)
        async with open_stream(client, project_id, headers) as stream:
            assert (await stream.next())[0] == "status"
            await asyncio.to_thread(restartable.stop)
            try:
                assert (await stream.until("unavailable", timeout=5))[0] == "unavailable"
                event, data = await stream.until("failure", timeout=10)
                assert event == "failure", stream.events
                assert data["code"] == "database_unavailable"
                assert "error" not in {name for name, _ in stream.events}
                assert (await stream.next())[0] == "closed"
            finally:
                await asyncio.to_thread(restartable.start)
