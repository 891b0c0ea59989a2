"""Test tools for the storyboard service: project bodies, an in-process API client, API users,
and waiting for a project to be done.

Importable by tests/service, tests/acceptance and tests/chaos alike; the fake upstream, the
process harness and the worker settings they share with the bench are in tests/support/.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx

from service import auth, jobs
from service.app import create_app
from service.settings import ServiceSettings
from tests.support.upstream import API_KEY, FakeUpstream
from tests.support.wait import wait_for

# -- hold_schedule: the schedule counts as handled up to tick $2 (nothing fires before it)
HOLD_SCHEDULE = """
INSERT INTO pgqueue.schedules (name, kind, queue, schedule, last_tick, next_tick)
VALUES ($1, $3, 'default', $4, $2, $5)
ON CONFLICT (name) DO UPDATE SET last_tick = $2, next_tick = $5
"""


async def hold_service_schedules(db_url: str, *, for_s: float = 3600.0) -> None:
    """Keep the service's periodic jobs (storyboard.expire every minute, media.cleanup at :17)
    from firing for `for_s` seconds, for a test that counts every job of the queue.

    Their ticks are marked handled up to an hour ahead, as if a worker had fired them, so a
    test that crosses a minute (or :17) is not handed an extra job.
    """
    conn = await asyncpg.connect(db_url)
    try:
        now = await conn.fetchval("SELECT now()")
        for periodic in jobs.registry.periodics:
            held = periodic.schedule.latest(now + timedelta(seconds=for_s))
            await conn.execute(
                HOLD_SCHEDULE,
                periodic.name,
                held,
                periodic.kind,
                periodic.schedule.text,
                periodic.schedule.following(held),
            )
    finally:
        await conn.close()


def project_body(
    shots: int = 3, *, style: str = "noir", aspect_ratio: str = "16:9", **extra: Any
) -> dict[str, Any]:
    """A valid project body with `shots` shots; odd shots have Bo, whose reference image goes
    upstream."""
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


def http_settings(
    settings: ServiceSettings, upstream: FakeUpstream, **values: object
) -> ServiceSettings:
    """`settings` with the `http` provider pointed at the fake upstream; `values` on top."""
    update = {
        "image_provider": "http",
        "image_api_base": upstream.base_url,
        "image_api_key": API_KEY,
        "image_model": "seedream-test",
        **values,
    }
    return settings.model_copy(update=update)
