"""5. Storyboard makespan: 30 shots, one worker, a fake upstream of fixed latency, cap 3.

On a fresh database: a fake Seedream upstream on loopback (`tests.support.upstream`, answering after
`--makespan-latency-s`, 0.5 s), the real API (`python -m service api`) and ONE real worker
(`python -m service worker`) as subprocesses, with `IMAGE_PROVIDER=http` and
`STORYBOARD_CONCURRENCY=3`. For each worker concurrency (3, then 10: more slots than the cap, so
only the per-project cap bounds it), a 1-shot warm-up project proves the worker is up, then a
30-shot project is timed from just before `POST .../storyboards/generate` until `GET
.../storyboards/status` (polled every 20 ms) says `done`. The ideal is `ceil(30 / 3) * latency`:
the cap's three shots at a time, back to back. The fake upstream also records the most calls in
flight at once, which the cap must hold to 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench import ops
from bench.context import Context
from bench.stats import percentile
from tests.support import processes, settings, upstream
from tests.support.ports import free_port
from tests.support.processes import Process

LOG_LEVEL = "WARNING"
STATUS_POLL_S = 0.02  # seconds between two status reads while the storyboard generates
READY_TIMEOUT_S = 30.0  # seconds the API, or the worker's warm-up project, may take
HTTP_TIMEOUT_S = 10.0  # seconds per API request


def service_env(dsn: str, fake: upstream.FakeUpstream, media_dir: Path, cap: int) -> dict[str, str]:
    """The environment of the API and the worker: the fake upstream, the cap, a temp MEDIA_DIR.

    The worker runs with the production PGQUEUE_* defaults (3 s poll, 30 s lease), not the
    tests' fast ones: what is measured is what a deployment gets.
    """
    return settings.service_env(dsn, media_dir, fake, STORYBOARD_CONCURRENCY=str(cap))


async def create_token(env: dict[str, str], user: str = "bench") -> str:
    """`python -m service create-token --user <user>`: the token on its last line."""
    argv = processes.python_command("-m", "service", "create-token", "--user", user)
    output = await asyncio.to_thread(
        processes.run, argv, env={**settings.child_env(), **env}, timeout=READY_TIMEOUT_S
    )
    return output.strip().splitlines()[-1]


@contextlib.asynccontextmanager
async def service_fleet(
    ctx: Context, label: str, env: dict[str, str], *, workers: int, concurrency: int
) -> AsyncIterator[tuple[httpx.AsyncClient, list[Process]]]:
    """The API and `workers` worker processes of the service on `env`, warmed up.

    Yields a client signed in as a fresh user, once a warm-up project of one shot per worker
    has generated (so every worker has run a job and listens), and the workers. On exit every
    worker is checked alive, then all are stopped.
    """
    port = free_port()
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(
            ctx.processes.service(
                "api", "--port", str(port), "--log-level", LOG_LEVEL, name=f"{label}-api", env=env
            )
        )
        fleet = [
            stack.enter_context(
                ctx.processes.service(
                    "worker",
                    "--concurrency",
                    str(concurrency),
                    "--log-level",
                    LOG_LEVEL,
                    name=f"{label}-worker-{n}",
                    env=env,
                )
            )
            for n in range(workers)
        ]
        token = await create_token(env)
        url = f"http://127.0.0.1:{port}"
        await processes.wait_ready(f"{url}/readyz", api, READY_TIMEOUT_S)
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_S
        ) as client:
            warm_up = await create_project(client, workers, f"{label} warm-up")
            _, status = await generate_until_done(client, warm_up, fleet[0], READY_TIMEOUT_S)
            check_completed(status, workers, fleet[0])
            yield client, fleet
        for worker in fleet:
            worker.check_alive()


def handoff_gaps(calls: Sequence[upstream.Call], cap: int) -> list[float]:
    """Seconds from each answer to the start of the call that took its place: the k-th call
    to come in (k >= cap) follows the (k - cap)-th answer, when `cap` calls run at a time."""
    starts = sorted(call.started for call in calls)
    ends = sorted(call.ended for call in calls if call.ended is not None)
    return [starts[k] - ends[k - cap] for k in range(cap, min(len(starts), len(ends) + cap))]


def project_body(shots: int, title: str) -> dict[str, Any]:
    """A project of `shots` shots and one character."""
    return {
        "title": title,
        "style": "pencil sketch",
        "aspect_ratio": "16:9",
        "characters": [{"name": "Ann", "description": "a tired detective in a grey coat"}],
        "shots": [
            {
                "shot_number": n,
                "description": f"shot {n}: rain on the office window",
                "duration_seconds": 2.5,
                "characters": ["Ann"],
            }
            for n in range(1, shots + 1)
        ],
    }


async def create_project(client: httpx.AsyncClient, shots: int, title: str) -> str:
    """POST a project; its id."""
    response = await client.post("/api/projects", json=project_body(shots, title))
    if response.status_code != 201:
        raise RuntimeError(f"creating a project answered {response.status_code}: {response.text}")
    return str(response.json()["id"])


async def generate_until_done(
    client: httpx.AsyncClient, project_id: str, worker: Process, timeout_s: float
) -> tuple[float, dict[str, Any]]:
    """POST generate, poll the status until done: (seconds from just before the POST, status)."""
    started = time.perf_counter()
    response = await client.post(f"/api/projects/{project_id}/storyboards/generate")
    if response.status_code != 202:
        raise RuntimeError(f"generate answered {response.status_code}: {response.text}")
    deadline = started + timeout_s
    while True:
        response = await client.get(f"/api/projects/{project_id}/storyboards/status")
        if response.status_code != 200:
            raise RuntimeError(f"status answered {response.status_code}: {response.text}")
        status: dict[str, Any] = response.json()
        if status["done"]:
            return time.perf_counter() - started, status
        worker.check_alive()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"project not done after {timeout_s:.0f}s: {status['status']}")
        await asyncio.sleep(STATUS_POLL_S)


def check_completed(status: dict[str, Any], shots: int, worker: Process) -> None:
    """Raise unless every shot succeeded."""
    if status["status"] != "completed" or status["succeeded"] != shots:
        errors = {s.get("error") for s in status["storyboards"] if s.get("error")}
        raise RuntimeError(
            f"storyboard {status['status']}, {status['succeeded']}/{shots} succeeded, errors "
            f"{sorted(errors)[:3]}; see {worker.log_path}\n{worker.tail()}"
        )


async def measure(
    ctx: Context,
    client: httpx.AsyncClient,
    fake: upstream.FakeUpstream,
    env: dict[str, str],
    concurrency: int,
) -> dict[str, float | int]:
    """One worker at `concurrency`: warm up with one shot, then time the 30-shot project."""
    config = ctx.config
    shots, latency_s = config.makespan_shots, config.makespan_latency_s
    ideal_s = math.ceil(shots / config.makespan_cap) * latency_s
    with ctx.processes.service(
        "worker",
        *("--concurrency", str(concurrency), "--log-level", LOG_LEVEL),
        name=f"makespan-worker-c{concurrency}",
        env={**env, "PGQUEUE_CONCURRENCY": str(concurrency)},
    ) as worker:
        # Created before the clock starts, as the warm-up proves the worker is up and listening.
        warm_up = await create_project(client, 1, f"warm-up c{concurrency}")
        project_id = await create_project(client, shots, f"makespan c{concurrency}")
        _, status = await generate_until_done(client, warm_up, worker, READY_TIMEOUT_S)
        check_completed(status, 1, worker)
        await ops.settle(ctx)
        fake.reset()
        makespan_s, status = await generate_until_done(
            client, project_id, worker, max(READY_TIMEOUT_S, 4 * ideal_s)
        )
        check_completed(status, shots, worker)
    gaps = handoff_gaps(fake.calls, config.makespan_cap)
    return {
        "makespan_s": round(makespan_s, 3),
        "ideal_s": round(ideal_s, 3),
        "ratio": round(makespan_s / ideal_s, 3),
        "max_inflight": fake.max_total_in_flight,
        "upstream_calls": len(fake.calls),
        "handoff_p50_ms": round(percentile(gaps, 0.5) * 1000, 1) if gaps else 0.0,
        "handoff_max_ms": round(max(gaps, default=0.0) * 1000, 1),
    }


def figures(results: dict[int, dict[str, float | int]]) -> dict[str, Any]:
    """Flat keys: the first concurrency unprefixed, the others as `storyboard_c<N>_...`."""
    first = next(iter(results))
    out: dict[str, Any] = {"storyboard_worker_concurrency": first}
    for concurrency, result in results.items():
        prefix = "storyboard" if concurrency == first else f"storyboard_c{concurrency}"
        out[f"{prefix}_makespan_s"] = result["makespan_s"]
        out[f"{prefix}_ideal_s"] = result["ideal_s"]
        out[f"{prefix}_makespan_ratio"] = result["ratio"]
        out[f"{prefix}_max_inflight"] = result["max_inflight"]
        out[f"{prefix}_handoff_p50_ms"] = result["handoff_p50_ms"]
        out[f"{prefix}_handoff_max_ms"] = result["handoff_max_ms"]
    return out


async def run(ctx: Context) -> dict[str, Any]:
    """The API and the fake upstream once; one worker per concurrency in turn."""
    config = ctx.config
    results: dict[int, dict[str, float | int]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-media-") as media,
        upstream.running(latency_s=config.makespan_latency_s) as fake,
    ):
        async with ctx.databases.fresh("makespan") as dsn:
            env = service_env(dsn, fake, Path(media), config.makespan_cap)
            port = free_port()
            with ctx.processes.service(
                "api", "--port", str(port), "--log-level", LOG_LEVEL, name="makespan-api", env=env
            ) as api:
                token = await create_token(env)
                url = f"http://127.0.0.1:{port}"
                await processes.wait_ready(f"{url}/readyz", api, READY_TIMEOUT_S)
                async with httpx.AsyncClient(
                    base_url=url,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=HTTP_TIMEOUT_S,
                ) as client:
                    for concurrency in dict.fromkeys(config.makespan_concurrencies):
                        result = await measure(ctx, client, fake, env, concurrency)
                        results[concurrency] = result
                        held = (
                            ""
                            if result["max_inflight"] <= config.makespan_cap
                            else " (CAP EXCEEDED)"
                        )
                        ctx.say(
                            f"makespan: worker concurrency {concurrency:>3}: "
                            f"{result['makespan_s']:.3f}s for {config.makespan_shots} shots, "
                            f"ideal {result['ideal_s']:.3f}s, ratio {result['ratio']:.3f}, "
                            f"max in flight {result['max_inflight']}{held}, answer to next "
                            f"call p50 {result['handoff_p50_ms']:.0f} ms, "
                            f"max {result['handoff_max_ms']:.0f} ms"
                        )
    return figures(results)
