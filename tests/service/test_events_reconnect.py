"""What a standard EventSource does after `done`: it reconnects with the id it last saw, and a
project still done answers 204, which stops it (it used to replay `done` every 3 s)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from service.settings import ServiceSettings
from tests.service.support import bearer
from tests.service.test_events import Served, _finish_shot, _project, serve
from tests.support.sse import open_stream
from tests.support.wait import wait_for


@pytest.fixture
async def served(settings: ServiceSettings) -> AsyncIterator[Served]:
    async with serve(settings) as app:
        await wait_for(app.hub.connected.is_set, 5, "the hub to listen")
        yield app


async def test_a_reconnect_after_done_answers_204_until_the_project_works_again(
    served: Served, db_url: str, pool: asyncpg.Pool
) -> None:
    alice = await bearer(db_url, "alice")
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        project_id = await _project(client, alice, shots=1)
        url = f"/api/projects/{project_id}/storyboards/events"
        async with pool.acquire() as conn:
            await _finish_shot(conn, project_id, 1, "success")
        async with client.stream("GET", url, headers=alice) as response:
            body = (await response.aread()).decode()
        assert "event: done\nid: done\n" in body, body
        # What an EventSource sends when the stream ends: the last id it saw.
        again = {**alice, "Last-Event-ID": "done"}
        answer = await client.get(url, headers=again)
        assert answer.status_code == 204 and answer.content == b""
        # A reconnect with another id (or none) streams as before.
        async with open_stream(client, project_id, alice) as stream:
            assert (await stream.next())[0] == "status"
        # Regenerated, the project is no longer done: the same reconnect follows the new work.
        regenerated = await client.post(
            f"/api/projects/{project_id}/storyboards/generate",
            json={"force": True},
            headers=alice,
        )
        assert regenerated.status_code == 202, regenerated.text
        async with client.stream("GET", url, headers=again) as response:
            assert response.status_code == 200
            first = await anext(response.aiter_lines())
        assert first == "event: status"
