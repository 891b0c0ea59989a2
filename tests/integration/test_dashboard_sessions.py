"""The dashboard's sessions: the cookie holds a key, never the credential; sessions end on
time and at sign-out (server-side, whatever the browser keeps); sign-out refuses other sites;
the cookie is Secure behind a TLS proxy the server trusts, or when told to be."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from pgqueue import Queue
from pgqueue.dashboard import COOKIE, create_app
from tests.support.wait import wait_for

TOKEN = "pgq_admin_0123456789abcdef"
HOST = "http://dash.test"


def _authorize(request: Request, credential: str | None) -> bool:
    return credential == TOKEN


def _host(queue: Queue, **options: Any) -> Starlette:
    return Starlette(
        routes=[Mount("/dashboard", app=create_app(queue, authorize=_authorize, **options))]
    )


def _client(app: Any, base_url: str = HOST) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
async def client(queue: Queue) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(_host(queue)) as client:
        yield client


async def _sign_in(client: httpx.AsyncClient) -> httpx.Response:
    answer = await client.post("/dashboard/sign-in", data={"token": TOKEN})
    assert answer.status_code == 303, answer.text
    return answer


async def test_the_cookie_holds_a_session_key_and_the_database_no_token(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    answer = await _sign_in(client)
    header = answer.headers["set-cookie"]
    key = client.cookies[COOKIE]
    assert TOKEN not in header and key != TOKEN and len(key) == 43
    assert "Max-Age=28800" in header and "HttpOnly" in header and "Secure" not in header
    (row,) = await pool.fetch("SELECT key_hash, sealed FROM pgqueue.dashboard_sessions")
    assert TOKEN.encode() not in bytes(row["sealed"]) and key.encode() not in row["key_hash"]
    assert (await client.get("/dashboard/")).status_code == 200
    # A made-up key, or the token itself as the cookie (what the cookie used to hold), is no
    # session.
    for forged in (TOKEN, "A" * 43):
        client.cookies.set(COOKIE, forged)
        assert (await client.get("/dashboard/")).status_code == 401


async def test_sign_out_refuses_other_sites_and_ends_the_session_everywhere(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await _sign_in(client)
    key = client.cookies[COOKIE]
    foreign = await client.post("/dashboard/sign-out", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert (await client.get("/dashboard/")).status_code == 200  # still signed in
    out = await client.post("/dashboard/sign-out", headers={"Origin": HOST})
    assert out.status_code == 303
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.dashboard_sessions") == 0
    # A copy of the cookie kept elsewhere is refused, and told to go.
    client.cookies.set(COOKIE, key)
    replay = await client.get("/dashboard/")
    assert replay.status_code == 401 and f'{COOKIE}=""' in replay.headers["set-cookie"]


async def test_a_session_ends_on_time_whatever_the_browser_sends(queue: Queue) -> None:
    async with _client(_host(queue, session_max_age_s=1)) as client:
        answer = await _sign_in(client)
        assert "Max-Age=1;" in answer.headers["set-cookie"]
        assert (await client.get("/dashboard/")).status_code == 200

        async def refused() -> bool:
            return (await client.get("/dashboard/")).status_code == 401

        await wait_for(refused, timeout=5, message="the session ended")
    with pytest.raises(ValueError, match="session_max_age_s"):
        create_app(queue, authorize=_authorize, session_max_age_s=0)


async def test_the_cookie_is_secure_behind_a_trusted_tls_proxy_or_when_told(queue: Queue) -> None:
    # What uvicorn --proxy-headers --forwarded-allow-ips does in front of the app.
    proxied = ProxyHeadersMiddleware(_host(queue), trusted_hosts="127.0.0.1")
    async with _client(proxied) as client:
        answer = await client.post(
            "/dashboard/sign-in",
            data={"token": TOKEN},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert answer.status_code == 303 and "Secure" in answer.headers["set-cookie"]
    async with _client(_host(queue, secure_cookie=True)) as client:
        assert "Secure" in (await _sign_in(client)).headers["set-cookie"]
    async with _client(_host(queue), base_url="https://dash.test") as client:
        assert "Secure" in (await _sign_in(client)).headers["set-cookie"]


async def test_a_schedule_no_worker_has_any_more_shows_as_stale(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    for name, unseen in (("removed", "2 hours"), ("live", "1 minute")):
        await pool.execute(
            "INSERT INTO pgqueue.schedules (name, kind, queue, schedule, last_tick, next_tick,"
            " seen_at) VALUES ($1, 'k', 'default', 'every 60s', now(), now() + interval '1m',"
            " now() - $2::text::interval)",
            name,
            unseen,
        )
    await _sign_in(client)
    page = (await client.get("/dashboard/")).text
    assert page.count('data-part="stale"') == 1
    # By name: live, then removed with its mark.
    assert page.index("<td>live") < page.index("<td>removed") < page.index('data-part="stale"')


async def test_a_schedule_that_never_fired_shows_no_last_tick(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    # A schedule's last_tick starts at the due time before it was registered (so that it does
    # not fire at once): until it fires, that is no tick a person should read as one.
    await pool.execute(
        "INSERT INTO pgqueue.schedules (name, kind, queue, schedule, last_tick, next_tick)"
        " VALUES ('hourly', 'k', 'default', '17 * * * *', now() - interval '40 min',"
        " now() + interval '20 min')"
    )
    await _sign_in(client)
    page = (await client.get("/dashboard/")).text
    row = page[page.index("<td>hourly") :]
    row = row[: row.index("</tr>")]
    assert "40 min ago" not in row and row.count("none yet") == 2  # last tick, last job
    job = await pool.fetchval("INSERT INTO pgqueue.jobs (kind) VALUES ('k') RETURNING id")
    await pool.execute("UPDATE pgqueue.schedules SET last_job_id = $1", job)
    page = (await client.get("/dashboard/")).text
    row = page[page.index("<td>hourly") :]
    assert "40 min ago" in row[: row.index("</tr>")]
