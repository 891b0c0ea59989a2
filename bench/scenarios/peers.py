"""7. Side by side: the same no-op throughput and latency workloads on PgQueuer, procrastinate
and DBOS Transact.

Each peer runs from `bench/.peers/venv` (installed from PyPI on first use), on the same server,
in fresh databases, with its own worker process, and its figures are read back from its own
tables with SQL, as ours are.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

import asyncpg

from bench.context import Context
from bench.peers import catalog, venv
from bench.stats import percentile
from tests.support import processes
from tests.support.processes import Process
from tests.support.wait import wait_for

COMMAND_TIMEOUT_S = 300.0
MIN_DRAIN_TIMEOUT_S = 60.0  # seconds; or 10 ms a job if longer
LATENCY_TIMEOUT_S = 30.0  # seconds the paced jobs may take to have all started


async def runner(spec: catalog.PeerSpec, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run one runner command to completion in the peers' venv; its stdout."""
    argv = [str(venv.PYTHON), str(spec.runner), *args]
    return await asyncio.to_thread(processes.run, argv, timeout=timeout_s)


def worker(
    ctx: Context, spec: catalog.PeerSpec, label: str, dsn: str, setting: int, *extra: str
) -> Process:
    """Start the peer's worker (`with worker(...) as w:` stops it on exit)."""
    argv = [str(venv.PYTHON), str(spec.runner), "worker", dsn, str(setting), *extra]
    return ctx.processes.start(f"{spec.name}-{label}", argv)


async def throughput(
    ctx: Context, spec: catalog.PeerSpec, setting: int, jobs: int
) -> tuple[float, float]:
    """(enqueue jobs/s, no-op throughput jobs/s) of one drained run in a fresh database."""
    async with ctx.databases.fresh(f"{spec.name}_tput", migrated=False) as dsn:
        await runner(spec, "install", dsn)
        out = await runner(spec, "enqueue", dsn, str(jobs), str(spec.enqueue_batch))
        enqueue_rate = float(json.loads(out)["jobs_s"])
        with worker(ctx, spec, f"throughput-{setting}", dsn, setting, "--drain") as drain:
            await drain.exited(max(MIN_DRAIN_TIMEOUT_S, jobs / 100), expect=0)
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(spec.throughput_sql)
        finally:
            await conn.close()
    if row["jobs"] != jobs:
        raise RuntimeError(
            f"{spec.name} finished {row['jobs']} of {jobs} jobs; see {drain.log_path}"
        )
    return enqueue_rate, row["jobs"] / row["seconds"]


async def latency(ctx: Context, spec: catalog.PeerSpec, setting: int) -> list[float]:
    """Enqueue-to-start latencies (ms) of paced jobs with an idle worker."""
    config = ctx.config
    stamps = ctx.processes.log_dir / f"{spec.name}-latency.stamps"
    stamps.unlink(missing_ok=True)
    async with ctx.databases.fresh(f"{spec.name}_lat", migrated=False) as dsn:
        await runner(spec, "install", dsn)
        with worker(ctx, spec, "latency", dsn, setting, "--stamps", str(stamps)) as idle:
            out = await runner(
                spec,
                "latency",
                dsn,
                str(config.latency_jobs),
                str(config.latency_interval_ms),
                str(stamps),
            )
            sent = {int(seq): t for seq, t in json.loads(out).items()}

            def all_started() -> dict[int, float] | None:
                idle.check_alive()
                stamped = _read_stamps(stamps)
                return stamped if stamped.keys() >= sent.keys() else None

            stamped = await wait_for(
                all_started, LATENCY_TIMEOUT_S, f"{spec.name}'s latency jobs to start", poll_s=0.05
            )
    return [(stamped[seq] - t) * 1000 for seq, t in sent.items()]


def _read_stamps(path: Path) -> dict[int, float]:
    stamps: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            seq, _, t = line.partition(" ")
            if t:
                stamps[int(seq)] = float(t)
    return stamps


async def measure(ctx: Context, spec: catalog.PeerSpec) -> dict[str, Any]:
    """One peer's figures, under the same keys as ours."""
    jobs = max(1_000, int(ctx.config.peer_jobs * spec.jobs_fraction))
    by_setting: dict[int, float] = {}
    enqueue_rates = []
    for setting in spec.settings:
        enqueue_rate, rate = await throughput(ctx, spec, setting, jobs)
        enqueue_rates.append(enqueue_rate)
        by_setting[setting] = rate
        ctx.say(f"peers: {spec.name} {spec.setting}={setting}: {rate:8.0f} jobs/s ({jobs} no-ops)")
    fastest = max(by_setting, key=lambda s: by_setting[s])
    latency_setting = spec.latency_setting if spec.latency_setting is not None else fastest
    latencies = await latency(ctx, spec, latency_setting)
    figures: dict[str, Any] = {
        "throughput_jobs_s": round(by_setting[fastest]),
        "throughput_setting": f"{spec.setting}={fastest}",
        "throughput_by_setting": {f"{spec.setting}={s}": round(r) for s, r in by_setting.items()},
        spec.enqueue_key: round(statistics.median(enqueue_rates)),
        "latency_p50_ms": round(percentile(latencies, 0.50), 2),
        "latency_p95_ms": round(percentile(latencies, 0.95), 2),
        "latency_p99_ms": round(percentile(latencies, 0.99), 2),
        "latency_setting": f"{spec.setting}={latency_setting}",
    }
    if spec.setting == "concurrency" and 3 in by_setting:
        figures["throughput_c3_jobs_s"] = round(by_setting[3])
    ctx.say(
        f"peers: {spec.name}: enqueue {figures[spec.enqueue_key]} jobs/s, latency p50 "
        f"{figures['latency_p50_ms']} ms, p99 {figures['latency_p99_ms']} ms"
    )
    return figures


async def run(ctx: Context) -> dict[str, Any]:
    """Install the peers if needed, measure each, and keep going past one that fails."""
    if not ctx.config.peers:
        return {}
    versions = await asyncio.to_thread(venv.ensure, upgrade=ctx.config.peer_upgrade)
    ctx.say(f"peers: {', '.join(f'{k} {v}' for k, v in versions.items())}")
    peers: dict[str, Any] = {}
    for name in ctx.config.peers:
        spec = catalog.PEERS.get(name)
        if spec is None:
            peers[name] = {"error": f"unknown peer; known: {', '.join(catalog.PEERS)}"}
            continue
        if name not in versions:
            peers[name] = {"error": f"could not be installed into {venv.VENV} (see pip above)"}
            ctx.say(f"peers: {name} FAILED: {peers[name]['error']}")
            continue
        try:
            peers[name] = {"version": versions.get(name), **await measure(ctx, spec)}
        except Exception as exc:  # one peer failing must not lose the other's figures
            peers[name] = {"error": f"{type(exc).__name__}: {exc}"}
            ctx.say(f"peers: {name} FAILED: {peers[name]['error']}")
    return {"peers": peers}
