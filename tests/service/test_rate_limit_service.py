"""IMAGE_RATE_LIMIT and 429s in the storyboard service: every upstream call is held to the limit
across workers, and a 429 with `Retry-After` pauses every call without costing shots attempts."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pydantic
import pytest

from pgqueue import Queue, RateLimit, Worker
from service.jobs import RATE_WINDOW_GUARD_S
from service.settings import IMAGE_RATE_LIMIT_KEY, ServiceSettings
from tests.service.support import http_settings, project_body, wait_done
from tests.support.upstream import Answer, Call, FakeUpstream, error, most_in_window
from tests.support.wait import wait_for

WRITE_GRACE_S = 0.25  # seconds from a 429's answer to the committed pause, and a call claimed
# just before it (a paced key claims one every 20 ms at first) on its way to the upstream


async def _generate(client: httpx.AsyncClient, alice: dict[str, str], shots: int) -> str:
    body = project_body(shots, aspect_ratio="1:1")
    project = (await client.post("/api/projects", json=body, headers=alice)).json()
    response = await client.post(
        f"/api/projects/{project['id']}/storyboards/generate", headers=alice
    )
    assert response.status_code == 202, response.text
    return str(project["id"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("60/min", RateLimit(60, 60.0)), ("20/s", RateLimit(20, 1.0)), ("", None)],
)
def test_the_setting_reads_n_per_period(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: RateLimit | None
) -> None:
    monkeypatch.setenv("IMAGE_RATE_LIMIT", text)
    assert ServiceSettings().rate_limit == expected


@pytest.mark.parametrize("text", ["60", "60/day", "0/min", "fast", "1.5/s"])
def test_a_bad_setting_stops_the_process_saying_why(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("IMAGE_RATE_LIMIT", text)
    with pytest.raises(pydantic.ValidationError, match="IMAGE_RATE_LIMIT"):
        ServiceSettings()


async def test_the_worker_sets_the_limit_and_unset_removes_it(
    settings: ServiceSettings, run_worker: Callable[..., Worker], queue: Queue
) -> None:
    worker = run_worker(settings.model_copy(update={"image_rate_limit": "30/min"}))

    async def limited() -> bool:
        return [(r["key"], r["capacity"], r["period_s"]) for r in await queue.rate_limits()] == [
            (IMAGE_RATE_LIMIT_KEY, 30, 60.0 + RATE_WINDOW_GUARD_S)
        ]

    await wait_for(limited, message="the worker's lifespan set IMAGE_RATE_LIMIT")
    worker.stop()
    run_worker(settings)

    async def unlimited() -> bool:
        # No fixed limit and no ceiling: the rate is learnt (IMAGE_RATE_ADAPTIVE's default),
        # from the first pace of 25 starts a second.
        return [
            (r["ceiling"], r["adaptive"], r["capacity"], r["period_s"])
            for r in await queue.rate_limits()
        ] == [(None, True, 25, 1.0)]

    await wait_for(unlimited, message="a worker without IMAGE_RATE_LIMIT removed it")


async def test_upstream_calls_keep_to_the_limit_across_workers(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
) -> None:
    # 12 shots at 4 a second, two workers of 5 slots each: the project's cap (3 at once) and
    # the 50 ms calls would let about 60 start in a second without the limit.
    upstream.latency_s = 0.05
    worker_settings = http_settings(settings, upstream, image_rate_limit="4/s")
    run_worker(worker_settings, concurrency=5)
    run_worker(worker_settings, concurrency=5)
    project_id = await _generate(client, alice, 12)
    status = await wait_done(client, project_id, alice)
    assert status["status"] == "completed"
    starts = [call.started for call in upstream.calls_for(project_id)]
    assert len(starts) == 12
    assert most_in_window(starts, 1.0) <= 4
    assert max(starts) - min(starts) >= 2.0  # three windows of four


async def test_a_429_pauses_every_call_and_costs_no_attempt(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
    queue: Queue,
) -> None:
    # Shot 1 meets a 429 (Retry-After: 1) more times than it has attempts; it still succeeds,
    # and no call of any shot starts in the second after each 429.
    refusals = settings.max_attempts + 1

    def script(call: Call) -> Answer | None:
        if call.shot_number == 1 and call.nth <= refusals:
            return error(429, "rate limited", retry_after="1")
        return None

    upstream.script = script
    project_id = await _generate(client, alice, 4)
    # Not learning the rate: an adaptive key takes a 429 at the quota it measured for a
    # refusal, which pauses nobody else (tests/integration/test_governor.py), and this
    # upstream's quota is one refused shot, not a rate.
    worker_settings = http_settings(settings, upstream, image_rate_adaptive=False)
    run_worker(worker_settings, concurrency=2)
    run_worker(worker_settings, concurrency=2)
    status = await wait_done(client, project_id, alice, timeout=20)
    assert status["status"] == "completed", status
    calls = upstream.calls_for(project_id)
    answered_429 = [c.ended for c in calls if c.status == 429 and c.ended is not None]
    assert len(answered_429) == refusals
    for moment in answered_429:
        assert not [c for c in calls if moment + WRITE_GRACE_S < c.started < moment + 1.0]
    (shot,) = [s for s in status["storyboards"] if s["shot_number"] == 1]
    job = await queue.get(shot["job_id"])
    assert job is not None and job.attempts == 1  # every throttled attempt was given back


async def test_a_throttle_past_the_storyboard_limit_fails_the_shot(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
    upstream: FakeUpstream,
) -> None:
    # Throttles spend no attempt: the storyboard's own time limit is what ends them.
    # Retry-After: 3 against an 8 s limit: the third 429 comes about 6 s after the generate,
    # and waiting 3 s more would pass it.
    upstream.script = lambda call: error(429, "rate limited", retry_after="3")
    project_id = await _generate(client, alice, 1)
    worker_settings = http_settings(
        settings, upstream, image_timeout_s=1.0, storyboard_timeout_s=8.0
    )
    run_worker(worker_settings)
    status = await wait_done(client, project_id, alice, timeout=20)
    (storyboard,) = status["storyboards"]
    assert storyboard["status"] == "failed"
    assert "since the generate" in storyboard["error"]
    assert "STORYBOARD_TIMEOUT_S=8 s" in storyboard["error"]
    assert len(upstream.calls_for(project_id)) == 3
