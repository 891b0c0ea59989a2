"""Chaos: Postgres restarts under an open event stream of `python -m service api`.

A 5 s restart once showed no `event: unavailable` at all: a stream learnt of the outage only at
its next read, 30 s on. The API's listening connection drops with the server, and that must
reach every stream at once; when the server is back, the stream says so with a `status` and
goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devserver.embedded import EmbeddedPostgres
from tests.service.support import bearer, project_body
from tests.support import db, settings
from tests.support.ports import free_port
from tests.support.processes import Processes, wait_ready
from tests.support.sse import open_stream

UNAVAILABLE_WITHIN_S = 2.0  # from the server's stop to the stream's `unavailable`

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    """An embedded Postgres for this module alone, which the test stops and starts."""
    with db.own_server("streams") as postgres:
        yield postgres


async def test_a_restart_reaches_an_open_stream_at_once_and_the_stream_goes_on(
    server: EmbeddedPostgres, processes: Processes, tmp_path: Path
) -> None:
    name = db.unique_name("streams")
    await db.create_database(server.url, name)
    url = server.url_for(name)
    await asyncio.to_thread(db.migrate, url)
    headers = await bearer(url, "alice")
    port = free_port()
    api = processes.service(
        "api", "--port", str(port), env=settings.service_env(url, tmp_path / "media")
    )
    base = f"http://127.0.0.1:{port}"
    await wait_ready(f"{base}/readyz", api)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        created = await client.post("/api/projects", json=project_body(2), headers=headers)
        project_id = created.json()["id"]
        generated = await client.post(
            f"/api/projects/{project_id}/storyboards/generate", headers=headers
        )
        assert generated.status_code == 202, generated.text
        async with open_stream(client, project_id, headers) as stream:
            assert (await stream.next())[0] == "status"
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            started = time.monotonic()
            try:
                event, data = await stream.until("unavailable", timeout=UNAVAILABLE_WITHIN_S)
                assert event == "unavailable", stream.events
                assert time.monotonic() - started < UNAVAILABLE_WITHIN_S
                assert "database is unavailable" in data["message"]
            finally:
                await stopping
                await asyncio.to_thread(server.start)
            # Back: the status again, though unchanged, tells the client so.
            event, status = await stream.until("status", timeout=20)
            assert event == "status" and status["generating"] == 2, stream.events
    api.check_alive()
