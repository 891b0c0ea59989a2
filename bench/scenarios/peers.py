"""7. Side by side: the same no-op drain and paced latency workloads on PgQueuer, procrastinate,
DBOS Transact, graphile-worker, pg-boss and BullMQ (on Redis and on its PostgreSQL backend),
with ours measured in the same run, in rounds interleaved with theirs.

The Python peers run from `bench/.peers/venv`, the Node ones from `bench/.peers/node` (both
installed on first use), each with its own worker process, on the same Postgres server in fresh
databases (BullMQ: on a Redis the bench starts, AOF everysec). Their figures come from their
own records (tables, timestamps), as ours come from `pgqueue.jobs`.

Steps: each peer's sweep of its settings (and its defaults); then `peer_rounds` rounds of
ours (at our fastest concurrency) followed by every peer at its fastest setting, 20k jobs (the
medians are the figures); then one such round at `peer_big_jobs` (100k); then the paced
latency, ours before and after the peers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from bench.context import Context
from bench.peers import catalog, node_env, redis, venv
from bench.scenarios import latency as our_latency
from bench.scenarios import throughput as our_throughput
from bench.stats import percentile
from tests.support import processes
from tests.support.processes import Process
from tests.support.wait import wait_for

COMMAND_TIMEOUT_S = 300.0
MIN_DRAIN_TIMEOUT_S = 120.0  # seconds; or 10 ms a job if longer (a loaded machine is slow)
LATENCY_TIMEOUT_S = 30.0  # seconds the paced jobs may take to have all started
OUR_DEFAULT_CONCURRENCY = 3  # PGQUEUE_CONCURRENCY's default: ours beside their defaults


def _argv(spec: catalog.PeerSpec) -> list[str]:
    if spec.is_node:
        program = node_env.node()
        if program is None:
            raise RuntimeError("no node: tools/bench-deps.sh installs one")
        return [program, str(spec.runner)]
    return [str(venv.PYTHON), str(spec.runner)]


async def runner(spec: catalog.PeerSpec, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run one runner command to completion; its stdout."""
    return await asyncio.to_thread(processes.run, [*_argv(spec), *args], timeout=timeout_s)


def worker(
    ctx: Context, spec: catalog.PeerSpec, label: str, dsn: str, setting: str, *extra: str
) -> Process:
    """Start the peer's worker (`with worker(...) as w:` stops it on exit)."""
    argv = [*_argv(spec), "worker", dsn, setting, *extra]
    return ctx.processes.start(f"{spec.name}-{label}", argv)


@contextlib.asynccontextmanager
async def store(
    ctx: Context, spec: catalog.PeerSpec, label: str, server: redis.RedisServer | None
) -> AsyncIterator[str]:
    """Where one run's jobs live: a fresh database, or the bench's Redis (emptied by install)."""
    if spec.store == "redis":
        if server is None:
            raise RuntimeError("no Redis for BullMQ: redis-server is missing")
        yield server.url
        return
    async with ctx.databases.fresh(f"{spec.name}_{label}".replace("-", "_"), migrated=False) as dsn:
        yield dsn


def _last_json(process: Process) -> dict[str, Any]:
    for line in reversed(process.output().splitlines()):
        if line.startswith("{"):
            figures: dict[str, Any] = json.loads(line)
            return figures
    raise process.error("printed no figures")


async def throughput(
    ctx: Context,
    spec: catalog.PeerSpec,
    setting: str,
    jobs: int,
    server: redis.RedisServer | None,
) -> tuple[float, float, int]:
    """(enqueue jobs/s, no-op jobs/s, jobs finished) of one drained run on a fresh store."""
    extra = ["--drain"]
    max_seconds = spec.default_max_seconds if setting == spec.default_setting else None
    max_seconds = max_seconds or spec.max_seconds
    if max_seconds is not None and ctx.config.peer_max_seconds is not None:
        max_seconds = min(max_seconds, ctx.config.peer_max_seconds)
    if max_seconds is not None:
        extra += ["--max-seconds", str(max_seconds)]
    timeout = max(MIN_DRAIN_TIMEOUT_S, jobs / 100, (max_seconds or 0) + 60)
    async with store(ctx, spec, "tput", server) as dsn:
        await runner(spec, "install", dsn)
        out = await runner(spec, "enqueue", dsn, str(jobs), str(spec.enqueue_batch))
        enqueue_rate = float(json.loads(out.strip().splitlines()[-1])["jobs_s"])
        label = f"throughput-{setting}".replace(",", "-").replace("=", "")
        with worker(ctx, spec, label, dsn, setting, *extra) as drain:
            await drain.exited(timeout, expect=0)
        if spec.throughput_sql is None:
            row = _last_json(drain)
        else:
            conn = await asyncpg.connect(dsn)
            try:
                row = dict(await conn.fetchrow(spec.throughput_sql))
            finally:
                await conn.close()
    done = int(row["jobs"])
    bounded = max_seconds is not None and done < jobs
    if done != jobs and not bounded:
        raise RuntimeError(f"{spec.name} finished {done} of {jobs} jobs; see {drain.log_path}")
    if not row["seconds"]:
        raise RuntimeError(f"{spec.name} finished no job; see {drain.log_path}")
    return enqueue_rate, done / float(row["seconds"]), done


async def latency(
    ctx: Context, spec: catalog.PeerSpec, setting: str, server: redis.RedisServer | None
) -> list[float]:
    """Enqueue-to-start latencies (ms) of paced jobs with an idle worker."""
    config = ctx.config
    stamps = ctx.processes.log_dir / f"{spec.name}-latency.stamps"
    stamps.unlink(missing_ok=True)
    async with store(ctx, spec, "lat", server) as dsn:
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
            sent = {int(seq): t for seq, t in json.loads(out.strip().splitlines()[-1]).items()}

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


def _percentiles(latencies: list[float], prefix: str = "latency") -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": round(percentile(latencies, 0.50), 2),
        f"{prefix}_p95_ms": round(percentile(latencies, 0.95), 2),
        f"{prefix}_p99_ms": round(percentile(latencies, 0.99), 2),
    }


class Comparison:
    """The figures of one run of the scenario: ours and each peer's, filled step by step."""

    def __init__(self, ctx: Context, specs: list[catalog.PeerSpec]) -> None:
        self.ctx = ctx
        self.specs = specs
        self.peers: dict[str, dict[str, Any]] = {spec.name: {} for spec in specs}
        self.failed: dict[str, str] = {}
        self.fastest: dict[str, str] = {}
        self.rounds: dict[str, list[float]] = {spec.name: [] for spec in specs}
        self.enqueue_rates: dict[str, list[float]] = {spec.name: [] for spec in specs}
        self.server: redis.RedisServer | None = None

    def jobs(self, spec: catalog.PeerSpec, total: int) -> int:
        """The jobs of one of this peer's drains."""
        return max(1_000, int(total * spec.jobs_fraction))

    async def guarded(self, spec: catalog.PeerSpec, step: Any) -> None:
        """Run one step of a peer; a failure marks the peer failed and spares the others."""
        try:
            if spec.name in self.failed:
                return
            await step
        except Exception as exc:  # one peer failing must not lose the others' figures
            self.failed[spec.name] = f"{type(exc).__name__}: {exc}"
            self.ctx.say(f"peers: {spec.name} FAILED: {self.failed[spec.name]}")
        finally:
            step.close()  # a step skipped above is never awaited

    async def sweep(self, spec: catalog.PeerSpec) -> None:
        """Each setting once (the first alone with --quick), then the defaults if apart."""
        ctx, figures = self.ctx, self.peers[spec.name]
        jobs = self.jobs(spec, ctx.config.peer_jobs)
        settings = spec.settings if ctx.config.peer_sweep else spec.settings[:1]
        by_setting: dict[str, float] = {}
        for setting in settings:
            enqueue_rate, rate, _ = await throughput(ctx, spec, setting, jobs, self.server)
            self.enqueue_rates[spec.name].append(enqueue_rate)
            by_setting[setting] = rate
            ctx.say(f"peers: {spec.name} {spec.setting} {setting}: {rate:8.0f} jobs/s ({jobs})")
        self.fastest[spec.name] = max(by_setting, key=lambda s: by_setting[s])
        figures["throughput_by_setting"] = {s: round(r) for s, r in by_setting.items()}
        figures["throughput_setting"] = f"{spec.setting} {self.fastest[spec.name]}"
        default = spec.default_setting if ctx.config.peer_defaults else None
        if default is not None:
            if default in by_setting:
                rate, done = by_setting[default], jobs
            else:
                _, rate, done = await throughput(ctx, spec, default, jobs, self.server)
                ctx.say(f"peers: {spec.name} defaults: {rate:8.0f} jobs/s ({done} of {jobs})")
            figures["throughput_default_jobs_s"] = round(rate, 1)
            figures["throughput_default_setting"] = f"{spec.setting} {default}"
            if done < jobs:
                figures["throughput_default_note"] = f"{done} of {jobs} jobs in the time allowed"

    async def round(self, spec: catalog.PeerSpec, jobs_total: int, key: str) -> None:
        """One drain at the peer's fastest setting; kept under `key` (a list of rates)."""
        jobs = self.jobs(spec, jobs_total)
        ctx, setting = self.ctx, self.fastest[spec.name]
        enqueue_rate, rate, done = await throughput(ctx, spec, setting, jobs, self.server)
        self.peers[spec.name].setdefault(key, []).append(round(rate))
        if key == "throughput_rounds":
            self.enqueue_rates[spec.name].append(enqueue_rate)
        ctx.say(f"peers: {spec.name} {setting}: {rate:8.0f} jobs/s ({done} of {jobs})")

    async def latencies(self, spec: catalog.PeerSpec) -> None:
        """The paced latency at the latency setting (and at the defaults when asked)."""
        figures = self.peers[spec.name]
        setting = spec.latency_setting or self.fastest[spec.name]
        figures.update(_percentiles(await latency(self.ctx, spec, setting, self.server)))
        figures["latency_setting"] = f"{spec.setting} {setting}"
        at_default = spec.latency_at_default and self.ctx.config.peer_defaults
        if at_default and spec.default_setting is not None:
            latencies = await latency(self.ctx, spec, spec.default_setting, self.server)
            figures.update(_percentiles(latencies, "latency_default"))
        self.ctx.say(
            f"peers: {spec.name}: latency p50 {figures['latency_p50_ms']} ms, "
            f"p99 {figures['latency_p99_ms']} ms ({setting})"
        )


async def _ours_drain(ctx: Context, concurrency: int, jobs: int) -> float:
    rate = await our_throughput.measure(ctx, concurrency, jobs)
    ctx.say(f"peers: pgqueue concurrency {concurrency}: {rate:8.0f} jobs/s ({jobs})")
    return rate


async def run(ctx: Context) -> dict[str, Any]:
    """Install the peers if needed, measure ours and each, and keep going past one that fails."""
    config = ctx.config
    if not config.peers:
        return {}
    unknown = [name for name in config.peers if name not in catalog.PEERS]
    specs = [catalog.PEERS[name] for name in config.peers if name in catalog.PEERS]
    versions: dict[str, str] = {}
    if any(not spec.is_node for spec in specs):
        versions.update(await asyncio.to_thread(venv.ensure, upgrade=config.peer_upgrade))
    if any(spec.is_node for spec in specs):
        versions.update(await asyncio.to_thread(node_env.ensure))
        versions["node"] = node_env.node_version() or "missing"
    ctx.say(f"peers: {', '.join(f'{k} {v}' for k, v in versions.items())}")
    comparison = Comparison(ctx, specs)
    for name in unknown:
        comparison.failed[name] = f"unknown peer; known: {', '.join(catalog.PEERS)}"
    for spec in specs:
        if spec.name not in versions:
            comparison.failed[spec.name] = "could not be installed (see the install's output)"
    async with contextlib.AsyncExitStack() as stack:
        if any(s.store == "redis" and s.name not in comparison.failed for s in specs):
            try:
                comparison.server = await stack.enter_async_context(redis.running(ctx.processes))
            except Exception as exc:  # BullMQ fails alone
                for spec in specs:
                    if spec.store == "redis":
                        comparison.failed[spec.name] = f"Redis: {type(exc).__name__}: {exc}"
        ours = await _measure_all(ctx, comparison, specs)
    peers: dict[str, Any] = {}
    for spec in specs:
        figures = comparison.peers[spec.name]
        if spec.name in comparison.failed:
            figures["error"] = comparison.failed[spec.name]
            if "throughput_by_setting" not in figures:  # failed before any figure
                peers[spec.name] = {"version": versions.get(spec.name), **figures}
                continue
        rounds = figures.get("throughput_rounds") or list(figures["throughput_by_setting"].values())
        figures["throughput_jobs_s"] = round(statistics.median(rounds))
        if figures.get("throughput_rounds") and len(figures["throughput_rounds"]) == len(
            ours["throughput_rounds"]
        ):
            # Round by round, ours and theirs met the same machine: the steadiest ratio.
            ratios = [a / b for a, b in zip(ours["throughput_rounds"], rounds, strict=True)]
            figures["throughput_ratio_by_round"] = [round(r, 2) for r in ratios]
            figures["throughput_ratio_median"] = round(statistics.median(ratios), 2)
        if figures.get("throughput_100k_rounds"):
            figures["throughput_100k_jobs_s"] = figures["throughput_100k_rounds"][0]
        figures[spec.enqueue_key] = round(statistics.median(comparison.enqueue_rates[spec.name]))
        peers[spec.name] = {"version": versions.get(spec.name), **figures}
    for name in unknown:
        peers[name] = {"error": comparison.failed[name]}
    return {"peers": peers, "peers_ours": ours}


async def _measure_all(
    ctx: Context, comparison: Comparison, specs: list[catalog.PeerSpec]
) -> dict[str, Any]:
    """The steps, in order; ours between theirs. Returns our figures of this scenario."""
    config = ctx.config
    for spec in specs:
        await comparison.guarded(spec, comparison.sweep(spec))
    concurrency = int(ctx.figures.get("throughput_best_concurrency") or config.peer_our_concurrency)
    ours: dict[str, Any] = {"concurrency": concurrency, "throughput_rounds": []}
    for _ in range(config.peer_rounds):
        ours["throughput_rounds"].append(
            round(await _ours_drain(ctx, concurrency, config.peer_jobs))
        )
        for spec in specs:
            await comparison.guarded(
                spec, comparison.round(spec, config.peer_jobs, "throughput_rounds")
            )
    ours["throughput_jobs_s"] = round(statistics.median(ours["throughput_rounds"]))
    ours["throughput_c3_jobs_s"] = round(
        await _ours_drain(ctx, OUR_DEFAULT_CONCURRENCY, config.peer_jobs)
    )
    if config.peer_big_jobs:
        ours["throughput_100k_jobs_s"] = round(
            await _ours_drain(ctx, concurrency, config.peer_big_jobs)
        )
        ours["big_jobs"] = config.peer_big_jobs
        for spec in specs:
            await comparison.guarded(
                spec, comparison.round(spec, config.peer_big_jobs, "throughput_100k_rounds")
            )
    samples = await our_latency.measure(ctx, "peers-latency-ours-1")
    for spec in specs:
        await comparison.guarded(spec, comparison.latencies(spec))
    samples += await our_latency.measure(ctx, "peers-latency-ours-2")
    ours.update(_percentiles(samples))
    ctx.say(
        f"peers: pgqueue: {ours['throughput_jobs_s']} jobs/s (concurrency {concurrency}), "
        f"latency p50 {ours['latency_p50_ms']} ms, p99 {ours['latency_p99_ms']} ms"
    )
    return ours
