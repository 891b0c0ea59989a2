"""9. Fair turns: one user's 150 queued shots, three users who arrive a second later (issue 16).

The parts of `fleet` (the fake upstream at `--makespan-latency-s`, 0.5 s, the real API, two real
`python -m service worker` processes with production PGQUEUE_* defaults), with ten slots in
the fleet (two workers of 5) and `STORYBOARD_CONCURRENCY=10`, so the per-project cap is the
fleet's size and does not hide the order the claim takes jobs in. One user generates 150
shots (projects of 100 and 50); a second later three other users each generate a 3-shot
project. Run twice, each on a fresh database: `STORYBOARD_FAIRNESS=user` (each user's jobs take
turns: the latecomers' slot in at the head of the queue) and `none` (oldest first: they wait
behind the backlog). Figures: each small project's time from just before its generate until
its last storyboard is finished, in rounds of the upstream latency (target <= 2), and the
whole batch's makespan against the ideal `ceil(159 / 10) x latency` (target <= 1.1x).
Completion is read from the database every 20 ms.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import ops
from bench.context import Context
from bench.scenarios import makespan
from bench.stats import percentile
from tests.support import settings, upstream

WORKERS = 2
WORKER_CONCURRENCY = 5
SLOTS = WORKERS * WORKER_CONCURRENCY
SMALL_USERS = 3
SMALL_SHOTS = 3
ARRIVAL_S = 1.0  # the small users' generate, after the big one's
MAX_PROJECT_SHOTS = 100  # the API's largest project
ROUNDS_TARGET = 2.0
RATIO_TARGET = 1.1
VARIANTS = ("user", "none")  # STORYBOARD_FAIRNESS; the first is the headline
# -- finished storyboards per project
FINISHED = """
SELECT project_id, count(*) FILTER (WHERE status IN ('success', 'failed')) AS finished,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM storyboard.storyboards WHERE project_id = ANY ($1::uuid[])
GROUP BY project_id
"""


@dataclasses.dataclass
class Run:
    """One variant's timings, in seconds from the big user's generate."""

    makespan_s: float
    small_generate_s: list[float]  # each small project's generate
    small_done_s: list[float]  # ... and when its last shot finished
    big_done_s: float
    calls: list[upstream.Call]  # the upstream's record, `started` on time.monotonic()
    started: float  # time.monotonic() of the big user's generate
    small_ids: list[str]


async def _generate(client: httpx.AsyncClient, project_id: str) -> float:
    """POST generate; the time.perf_counter() just before it."""
    started = time.perf_counter()
    answer = await client.post(f"/api/projects/{project_id}/storyboards/generate")
    if answer.status_code != 202:
        raise RuntimeError(f"generate answered {answer.status_code}: {answer.text}")
    return started


async def _timed(
    dsn: str,
    fake: upstream.FakeUpstream,
    big: list[tuple[httpx.AsyncClient, str, int]],
    small: list[tuple[httpx.AsyncClient, str, int]],
    timeout_s: float,
) -> Run:
    shots = {pid: count for _, pid, count in big + small}
    ids = [uuid.UUID(pid) for pid in shots]
    done: dict[str, float] = {}
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        started_monotonic = time.monotonic()
        await asyncio.gather(*(_generate(client, pid) for client, pid, _ in big))

        async def arrive() -> list[float]:
            await asyncio.sleep(started + ARRIVAL_S - time.perf_counter())
            return list(await asyncio.gather(*(_generate(client, pid) for client, pid, _ in small)))

        arrival = asyncio.create_task(arrive())
        while len(done) < len(shots):
            now = time.perf_counter()
            if now > started + timeout_s:
                raise TimeoutError(f"the fairness run was not done after {timeout_s:.0f}s")
            for row in await conn.fetch(FINISHED, ids):
                pid = str(row["project_id"])
                if row["failed"]:
                    raise RuntimeError(f"project {pid}: {row['failed']} storyboard(s) failed")
                if pid not in done and row["finished"] >= shots[pid]:
                    done[pid] = now - started
            await asyncio.sleep(makespan.STATUS_POLL_S)
        small_started = await arrival
    finally:
        await conn.close()
    return Run(
        makespan_s=max(done.values()),
        small_generate_s=[moment - started for moment in small_started],
        small_done_s=[done[pid] for _, pid, _ in small],
        big_done_s=max(done[pid] for _, pid, _ in big),
        calls=list(fake.calls),
        started=started_monotonic,
        small_ids=[pid for _, pid, _ in small],
    )


async def _one_run(ctx: Context, fairness: str, big_shots: int, latency_s: float) -> Run:
    ideal_s = math.ceil((big_shots + SMALL_USERS * SMALL_SHOTS) / SLOTS) * latency_s
    with (
        tempfile.TemporaryDirectory(prefix="bench-media-") as media,
        upstream.running(latency_s=latency_s) as fake,
    ):
        async with ctx.databases.fresh(f"fairness_{fairness}") as dsn:
            env = settings.service_env(
                dsn,
                Path(media),
                fake,
                STORYBOARD_CONCURRENCY=str(SLOTS),
                STORYBOARD_FAIRNESS=fairness,
            )
            async with makespan.service_fleet(
                ctx, f"fair-{fairness}", env, workers=WORKERS, concurrency=WORKER_CONCURRENCY
            ) as (client, _):
                big: list[tuple[httpx.AsyncClient, str, int]] = []
                for first in range(0, big_shots, MAX_PROJECT_SHOTS):
                    count = min(MAX_PROJECT_SHOTS, big_shots - first)
                    pid = await makespan.create_project(client, count, f"big {first}")
                    big.append((client, pid, count))
                small: list[tuple[httpx.AsyncClient, str, int]] = []
                clients: list[httpx.AsyncClient] = []
                try:
                    for n in range(SMALL_USERS):
                        token = await makespan.create_token(env, f"small-{n}")
                        other = httpx.AsyncClient(
                            base_url=client.base_url,
                            headers={"Authorization": f"Bearer {token}"},
                            timeout=makespan.HTTP_TIMEOUT_S,
                        )
                        clients.append(other)
                        pid = await makespan.create_project(other, SMALL_SHOTS, f"small {n}")
                        small.append((other, pid, SMALL_SHOTS))
                    await ops.settle(ctx)
                    fake.reset()
                    return await _timed(
                        dsn, fake, big, small, max(makespan.READY_TIMEOUT_S, 4 * ideal_s)
                    )
                finally:
                    for other in clients:
                        await other.aclose()


async def run(ctx: Context) -> dict[str, Any]:
    """Both variants, one after the other, each on its own database and fleet."""
    latency_s = ctx.config.makespan_latency_s
    big_shots = ctx.config.fairness_big_shots
    total = big_shots + SMALL_USERS * SMALL_SHOTS
    ideal_s = math.ceil(total / SLOTS) * latency_s
    out: dict[str, Any] = {
        "fairness_ideal_s": round(ideal_s, 3),
        "fairness_shots": total,
        "fairness_slots": SLOTS,
    }
    for fairness in VARIANTS:
        result = await _one_run(ctx, fairness, big_shots, latency_s)
        rounds = [
            (done - generate) / latency_s
            for generate, done in zip(result.small_generate_s, result.small_done_s, strict=True)
        ]
        ratio = result.makespan_s / ideal_s
        ctx.say(
            f"fairness: STORYBOARD_FAIRNESS={fairness}: {big_shots} shots of one user, then "
            f"{SMALL_USERS} users x {SMALL_SHOTS} shots {ARRIVAL_S:g} s later, {WORKERS} "
            f"workers x {WORKER_CONCURRENCY}, cap {SLOTS}: small projects done "
            + ", ".join(f"{r:.2f}" for r in rounds)
            + f" rounds of {latency_s:g} s after their generate (target <= {ROUNDS_TARGET:g}); "
            f"makespan {result.makespan_s:.3f}s, ideal ceil({total} / {SLOTS}) x {latency_s:g} "
            f"= {ideal_s:.3f}s, ratio {ratio:.3f} (target <= {RATIO_TARGET}); the big user's "
            f"last shot at {result.big_done_s:.3f}s"
        )
        # Calls started per round of the latency (all of them / the small users'), and the
        # gap from an answer to the call that took its slot: where the time went.
        rounds_seen = math.ceil(result.makespan_s / latency_s) + 1
        per_round = [0] * rounds_seen
        small_per_round = [0] * rounds_seen
        for call in result.calls:
            n = min(rounds_seen - 1, max(0, int((call.started - result.started) / latency_s)))
            per_round[n] += 1
            small_per_round[n] += call.project_id in result.small_ids
        gaps = makespan.handoff_gaps(result.calls, SLOTS)
        ctx.say(
            f"fairness: {fairness}: calls started per {latency_s:g} s round (small users'): "
            + " ".join(
                f"{n}({k})" if k else str(n)
                for n, k in zip(per_round, small_per_round, strict=True)
            )
            + f"; answer to next call p50 {percentile(gaps, 0.5) * 1000 if gaps else 0:.0f} ms,"
            f" max {max(gaps, default=0) * 1000:.0f} ms"
        )
        prefix = f"fairness_{fairness}"
        out[f"{prefix}_small_rounds_max"] = round(max(rounds), 2)
        out[f"{prefix}_small_rounds"] = [round(r, 2) for r in rounds]
        out[f"{prefix}_makespan_s"] = round(result.makespan_s, 3)
        out[f"{prefix}_makespan_ratio"] = round(ratio, 3)
        out[f"{prefix}_big_done_s"] = round(result.big_done_s, 3)
        out[f"{prefix}_calls_per_round"] = per_round
        out[f"{prefix}_handoff_p50_ms"] = round(percentile(gaps, 0.5) * 1000, 1) if gaps else 0.0
        out[f"{prefix}_handoff_max_ms"] = round(max(gaps, default=0.0) * 1000, 1)
    return out
