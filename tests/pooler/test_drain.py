"""The serverless drain with no daemon at all, through PgBouncer in transaction mode.

30 shots, no worker process: only drains, as a cron calls them, every second or so with a
small budget, two of them at a time on two API processes, and one API process killed with
SIGKILL in the middle of its drain (then started again). Promised and checked: every shot
ends `success`; no shot's upstream call ever overlapped another of the same shot (overlapping
drains never run one job twice; a killed drain's job waits for its lease); no drain answered
later than its budget + 2 s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pooler.conftest import pooled_env, start_api
from tests.pooler.test_transaction_pooler import _create_token, _json, _migrate
from tests.service.support import project_body
from tests.support import settings
from tests.support.processes import Processes
from tests.support.upstream import FakeUpstream
from tests.support.wait import wait_for

SHOTS = 30
UPSTREAM_LATENCY_S = 0.4
BUDGET_S = 2.0
DRAIN_EVERY_S = 1.0
SECRET = "cron-secret-for-the-drain-test"
RUN_TIMEOUT_S = 120

pytestmark = pytest.mark.timeout(240)


async def test_thirty_shots_by_overlapping_drains_one_killed(
    pooled_url: str,
    direct_url: str,
    processes: Processes,
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    upstream.latency_s = UPSTREAM_LATENCY_S
    env = settings.service_env(
        pooled_url,
        tmp_path / "media",
        upstream,
        **settings.WORKER_ENV,
        **pooled_env(pooled_url, CRON_SECRET=SECRET),
    )
    _migrate(env)
    headers = {"Authorization": f"Bearer {_create_token(env)}"}
    urls = [await start_api(processes, env, name=f"api-{n}") for n in range(2)]
    secret = {"Authorization": f"Bearer {SECRET}"}
    answers: list[tuple[float, float, int, dict[str, Any] | None]] = []  # budget, took, status

    async def drain(client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        try:
            response = await client.post(
                "/api/worker/drain", params={"budget_s": str(BUDGET_S)}, headers=secret
            )
        except httpx.TransportError:
            return  # the killed one
        answers.append(
            (BUDGET_S, time.monotonic() - started, response.status_code, response.json())
        )

    async with (
        httpx.AsyncClient(base_url=urls[0], timeout=30) as first,
        httpx.AsyncClient(base_url=urls[1], timeout=30) as second,
    ):
        created = await first.post("/api/projects", json=project_body(SHOTS), headers=headers)
        project_id = created.json()["id"]
        status_path = f"/api/projects/{project_id}/storyboards/status"
        generated = await first.post(
            f"/api/projects/{project_id}/storyboards/generate", headers=headers
        )
        assert generated.status_code == 202, generated.text

        # Two drains at once, and the second API process killed in the middle of its own.
        overlapping = [asyncio.create_task(drain(first)), asyncio.create_task(drain(second))]
        await wait_for(
            lambda: len(upstream.calls) >= 4, timeout=30, message="both drains are running"
        )
        victim = processes.started[1]
        victim.kill()
        await asyncio.gather(*overlapping)
        urls[1] = await start_api(processes, env, name="api-1-again")

        async def done() -> dict[str, Any] | None:
            status = await _json(first, status_path, headers)
            return status if status is not None and status["done"] else None

        deadline = time.monotonic() + RUN_TIMEOUT_S
        status = None
        async with httpx.AsyncClient(base_url=urls[1], timeout=30) as again:
            while status is None:
                assert time.monotonic() < deadline, f"not done\n{processes.logs()}"
                # A cron's rhythm: a drain on each process, then a pause.
                await asyncio.gather(drain(first), drain(again))
                await asyncio.sleep(DRAIN_EVERY_S)  # the cron's period, not a wait for a state
                status = await done()

    assert status["status"] == "completed", status
    assert [s["status"] for s in status["storyboards"]] == ["success"] * SHOTS
    for budget_s, took_s, code, body in answers:
        assert code == 200, body
        assert took_s <= budget_s + 2, f"a drain answered after {took_s:.2f}s (budget {budget_s})"
    assert sum(body["succeeded"] for _, _, _, body in answers if body) >= 1
    # No shot was ever called twice at once: drains never ran one job twice.
    by_shot: dict[int, list[tuple[float, float]]] = {}
    for call in upstream.calls_for(project_id):
        by_shot.setdefault(call.shot_number, []).append(
            (call.started, call.ended or time.monotonic())
        )
    for shot, spans in by_shot.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"shot {shot}: calls overlapped {spans}"
    print(
        f"\n{len(answers)} drains answered, slowest {max(t for _, t, _, _ in answers):.2f}s "
        f"(budget {BUDGET_S}s); upstream calls {len(upstream.calls_for(project_id))} for "
        f"{SHOTS} shots"
    )
