"""5. Storyboard makespan: 30 shots, one worker, a fake upstream of fixed latency, cap 3.

On a fresh database: a fake Seedream upstream on loopback (`bench.upstream`, answering after
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
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import daemon, server, upstream
from bench.context import Context
from bench.waiting import percentile, wait_until

LOG_LEVEL = "WARNING"
STATUS_POLL_S = 0.02  # seconds between two status reads while the storyboard generates
READY_TIMEOUT_S = 30.0  # seconds the API, or the worker's warm-up project, may take
HTTP_TIMEOUT_S = 10.0  # seconds per API request
# The service's settings, not inherited from the caller's environment (the Daemon drops PGQUEUE_*).
SERVICE_ENV = (
    "IMAGE_PROVIDER",
    "IMAGE_API_BASE",
    "IMAGE_API_KEY",
    "IMAGE_MODEL",
    "IMAGE_TIMEOUT_S",
    "STORYBOARD_CONCURRENCY",
    "STORYBOARD_TIMEOUT_S",
    "STORYBOARD_QUEUE",
    "MEDIA_DIR",
    "HOST",
    "PORT",
)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_env(dsn: str, fake: upstream.FakeUpstream, media_dir: Path, cap: int) -> dict[str, str]:
    """The environment of the API and the worker: the fake upstream, the cap, a temp MEDIA_DIR."""
    return {
        "DATABASE_URL": dsn,
        "IMAGE_PROVIDER": "http",
        "IMAGE_API_BASE": fake.base_url,
        "IMAGE_API_KEY": "x",
        "IMAGE_MODEL": "bench",
        "STORYBOARD_CONCURRENCY": str(cap),
        "MEDIA_DIR": str(media_dir),
    }


def service_daemon(name: str, args: list[str], env: dict[str, str]) -> daemon.Daemon:
    """`python -m service <args>` as a `Daemon`, with only our service settings in its env."""
    process = daemon.Daemon(name, [sys.executable, "-m", "service", *args], {})
    for key in SERVICE_ENV:
        process.env.pop(key, None)
    process.env.update(env)
    return process


async def create_token(env: dict[str, str]) -> str:
    """`python -m service create-token --user bench`: the token on its last line."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "service", "create-token", "--user", "bench"),
        cwd=server.ROOT,
        env={**{k: v for k, v in os.environ.items() if k not in SERVICE_ENV}, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"create-token exited {process.returncode}: {err.decode()[-500:]}")
    return out.decode().strip().splitlines()[-1]


async def wait_api(client: httpx.AsyncClient, api: daemon.Daemon) -> None:
    """Wait until the API answers `/readyz`."""

    async def ready() -> bool:
        api.check_alive()
        try:
            return (await client.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_until(ready, timeout_s=READY_TIMEOUT_S, what="the API to answer")


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
    client: httpx.AsyncClient, project_id: str, worker: daemon.Daemon, timeout_s: float
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


def check_completed(status: dict[str, Any], shots: int, worker: daemon.Daemon) -> None:
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
    worker = service_daemon(
        f"makespan-worker-c{concurrency}",
        ["worker", "--concurrency", str(concurrency), "--log-level", LOG_LEVEL],
        {**env, "PGQUEUE_CONCURRENCY": str(concurrency)},
    )
    async with worker:
        # Created before the clock starts, as the warm-up proves the worker is up and listening.
        warm_up = await create_project(client, 1, f"warm-up c{concurrency}")
        project_id = await create_project(client, shots, f"makespan c{concurrency}")
        _, status = await generate_until_done(client, warm_up, worker, READY_TIMEOUT_S)
        check_completed(status, 1, worker)
        fake.reset()
        makespan_s, status = await generate_until_done(
            client, project_id, worker, max(READY_TIMEOUT_S, 4 * ideal_s)
        )
        check_completed(status, shots, worker)
    gaps = fake.handoff_gaps(config.makespan_cap)
    return {
        "makespan_s": round(makespan_s, 3),
        "ideal_s": round(ideal_s, 3),
        "ratio": round(makespan_s / ideal_s, 3),
        "max_inflight": fake.max_in_flight,
        "upstream_calls": fake.calls,
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
        upstream.running(config.makespan_latency_s) as fake,
    ):
        async with ctx.databases.fresh("makespan") as dsn:
            env = service_env(dsn, fake, Path(media), config.makespan_cap)
            port = free_port()
            api = service_daemon(
                "makespan-api", ["api", "--port", str(port), "--log-level", LOG_LEVEL], env
            )
            async with api:
                token = await create_token(env)
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=HTTP_TIMEOUT_S,
                ) as client:
                    await wait_api(client, api)
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
