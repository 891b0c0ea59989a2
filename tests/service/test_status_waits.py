"""The status answer says why each generating shot waits and when its next attempt may start,
and for the project when it may be done (`eta_s`) and what its upstream calls cost (`spent`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from pgqueue import Queue, Worker, store
from pgqueue.reports import WaitReason
from service import schemas
from service.settings import IMAGE_RATE_LIMIT_KEY, ServiceSettings
from tests.service.support import project_body, wait_done
from tests.support.wait import wait_for


def _claim(limit: int) -> store.ClaimRequest:
    return store.ClaimRequest(["default"], ["storyboard.generate"], limit, "test", 60.0)


async def _generate(client: httpx.AsyncClient, headers: dict[str, str], shots: int) -> str:
    created = await client.post("/api/projects", json=project_body(shots), headers=headers)
    assert created.status_code == 201, created.text
    project_id: str = created.json()["id"]
    answer = await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=headers)
    assert answer.status_code == 202, answer.text
    return project_id


async def _status(
    client: httpx.AsyncClient, project_id: str, headers: dict[str, str]
) -> dict[str, Any]:
    response = await client.get(f"/api/projects/{project_id}/storyboards/status", headers=headers)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def _reasons(status: dict[str, Any]) -> list[str | None]:
    return [s["wait_reason"] for s in status["storyboards"]]


async def test_the_contracts_reasons_are_pgqueues() -> None:
    assert set(schemas.WAIT_REASONS) == {reason.value for reason in WaitReason}


async def test_a_project_never_generated_waits_for_nothing(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    created = await client.post("/api/projects", json=project_body(2), headers=alice)
    status = await _status(client, created.json()["id"], alice)
    assert _reasons(status) == [None, None]
    assert [s["next_attempt_at"] for s in status["storyboards"]] == [None, None]
    assert status["eta_s"] is None and status["spent"] == 0


async def test_each_waiting_shot_says_why(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool, queue: Queue
) -> None:
    project_id = await _generate(client, alice, shots=5)
    status = await _status(client, project_id, alice)
    assert _reasons(status) == ["queued"] * 5
    assert status["eta_s"] is None  # nothing finished yet: no rate to go by
    assert status["spent"] == 0

    # Three start (the project's cap): they are in flight, the other two wait for a slot.
    running = await store.claim(pool, _claim(3))
    assert len(running) == 3
    status = await _status(client, project_id, alice)
    assert _reasons(status) == [None, None, None, "concurrency", "concurrency"]
    assert all(s["next_attempt_at"] is None for s in status["storyboards"])

    # One fails and waits out its backoff.
    first = running[0]
    assert first.lease_token is not None
    retried = await store.fail_attempt(
        pool,
        first.id,
        first.lease_token,
        retryable=True,
        delay_s=60,
        error="upstream 500",
        progress_json=None,
    )
    assert retried is not None
    status = await _status(client, project_id, alice)
    shot = status["storyboards"][0]
    assert shot["status"] == "generating" and shot["wait_reason"] == "retry_scheduled"
    assert datetime.fromisoformat(shot["next_attempt_at"]) == retried.run_at
    assert _reasons(status)[3:] == ["queued", "queued"]  # a slot is free again

    # The upstream allows one call a minute: shot 4 takes it, shot 5 waits for the window.
    await queue.set_rate_limit(IMAGE_RATE_LIMIT_KEY, 1, 60)
    (fourth,) = await store.claim(pool, _claim(1))
    assert fourth.started_at is not None
    status = await _status(client, project_id, alice)
    assert _reasons(status)[3:] == [None, "rate_limit"]
    moment = datetime.fromisoformat(status["storyboards"][4]["next_attempt_at"])
    # The window runs from the start as the key recorded it: after the claim's locks, so a
    # moment after the job's started_at (the claim statement's now()).
    late = moment - (fourth.started_at + timedelta(seconds=60))
    assert timedelta(0) <= late < timedelta(seconds=1)

    # The provider is down: its breaker holds every call back.
    until = await pool.fetchval(
        "UPDATE pgqueue.rate_limits SET breaker_state = 'open',"
        " breaker_until = now() + interval '2 minutes' WHERE key = $1 RETURNING breaker_until",
        IMAGE_RATE_LIMIT_KEY,
    )
    status = await _status(client, project_id, alice)
    assert _reasons(status)[3:] == [None, "upstream_down"]
    assert datetime.fromisoformat(status["storyboards"][4]["next_attempt_at"]) == until


async def test_a_paused_queue_and_a_spent_budget_say_so(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    user: Callable[..., Awaitable[dict[str, str]]],
    pool: asyncpg.Pool,
) -> None:
    project_id = await _generate(client, alice, shots=2)
    # The budget's API is to come: its row, and the jobs' cost, as the claim reads them.
    window_end = await pool.fetchval(
        "INSERT INTO pgqueue.budgets (key, amount, period_s, window_start, spent)"
        " VALUES ('daily', 1, 86400, pgqueue.budget_window(86400, now()), 0.98)"
        " RETURNING window_start + interval '1 day'"
    )
    await pool.execute("UPDATE pgqueue.jobs SET cost = 0.04, budget_keys = '{daily}'")
    status = await _status(client, project_id, alice)
    assert _reasons(status) == ["over_budget", "over_budget"]
    assert datetime.fromisoformat(status["storyboards"][0]["next_attempt_at"]) == window_end

    admin = await user("root", admin=True)
    paused = await client.post("/api/queues/default/pause", headers=admin)
    assert paused.status_code == 200, paused.text
    status = await _status(client, project_id, alice)
    assert _reasons(status) == ["queue_paused", "queue_paused"]
    assert status["eta_s"] is None


async def test_eta_is_the_line_over_the_measured_rate(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    # Sixty jobs of the queue finished in the last minutes: a rate the estimate can use.
    await pool.execute(
        "INSERT INTO pgqueue.finished_counts (queue, state, minute, n)"
        " VALUES ('default', 'succeeded', date_trunc('minute', now()) - interval '1 minute', 60)"
    )
    first = await _generate(client, alice, shots=2)
    second = await _generate(client, alice, shots=3)
    ahead = await _status(client, first, alice)
    behind = await _status(client, second, alice)
    assert isinstance(ahead["eta_s"], int) and ahead["eta_s"] >= 1
    # Behind the first project's two shots in the line: later, never sooner.
    assert behind["eta_s"] >= ahead["eta_s"]
    # 2 of 60 a minute or more: at most 2 s or so for the first; 5 for the second.
    # The rate is 60 over 60-121 s (the counters' minute began that long ago; a read
    # just after a minute turns may see 121): 0.5-1 a second.
    assert 2 <= ahead["eta_s"] <= 5 and behind["eta_s"] <= 11


async def test_spent_sums_the_charges_and_a_done_project_has_no_eta_left(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    pool: asyncpg.Pool,
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
) -> None:
    project_id = await _generate(client, alice, shots=3)
    # Each attempt costs 0.04 credits (what the lead's enqueue will set); the end of each
    # attempt charges its job.
    await pool.execute("UPDATE pgqueue.jobs SET cost = 0.04")
    run_worker(settings)
    status = await wait_done(client, project_id, alice)
    assert status["status"] == "completed"
    assert status["eta_s"] == 0
    assert _reasons(status) == [None, None, None]

    # A job is charged when its attempt ends, which may come just after its storyboard's
    # image is stored (the worker completes jobs in batches).
    async def charged() -> dict[str, Any] | None:
        status = await _status(client, project_id, alice)
        return status if status["spent"] == pytest.approx(0.12) else None

    status = await wait_for(charged, timeout=10, message="three calls charged")
    assert status["eta_s"] == 0


async def test_a_shot_stored_before_its_job_completes_counts_its_charge(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    # The handler marks the shot `success` in its own transaction; pgqueue completes the job,
    # and records its charge, just after (in a batch). A read in between - the stream's
    # `done` is one - says what the same read says a moment later.
    project_id = await _generate(client, alice, shots=1)
    await pool.execute("UPDATE pgqueue.jobs SET cost = 0.04")
    (claimed,) = await store.claim(pool, _claim(1))
    await pool.execute(
        "UPDATE storyboard.storyboards SET status = 'success', image_url = '/media/x.png'"
        " WHERE job_id = $1",
        claimed.id,
    )
    status = await _status(client, project_id, alice)
    assert status["done"] and status["spent"] == pytest.approx(0.04)

    # An attempt that reported it bought nothing (a checkpoint's image) is charged that.
    await pool.execute("UPDATE pgqueue.jobs SET attempt_cost = 0 WHERE id = $1", claimed.id)
    assert (await _status(client, project_id, alice))["spent"] == 0

    assert claimed.lease_token is not None
    await store.complete(pool, [store.Success(claimed.id, claimed.lease_token, "null")])
    assert (await _status(client, project_id, alice))["spent"] == 0


async def test_the_openapi_document_describes_the_new_fields(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    components = document["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        # The answers' schemas are components, named by `$ref`.
        ref = schema.get("$ref")
        return components[ref.rsplit("/", 1)[1]] if ref else schema

    path = document["paths"]["/api/projects/{project_id}/storyboards/status"]
    schema = resolve(path["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    assert {"eta_s", "spent"} <= set(schema["properties"])
    storyboard = resolve(schema["properties"]["storyboards"]["items"])["properties"]
    wait_reason, no_wait = storyboard["wait_reason"]["anyOf"]
    assert set(resolve(wait_reason)["enum"]) == {*schemas.WAIT_REASONS}
    assert no_wait == {"type": "null"}
    assert storyboard["next_attempt_at"]["format"] == "date-time"
