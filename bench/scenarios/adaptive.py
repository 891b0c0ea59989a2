"""8. Adaptive rate: an upstream whose real quota changes during the run (issue 16).

The parts of `rate_limit` (the fake upstream, the real API, two real `python -m service worker`
processes of 10 slots with production PGQUEUE_* defaults), against a fake whose quota is
8 calls/s for 20 s, 3/s for 20 s, then 12/s for 20 s (`--adaptive-phase-s`): a sliding second
of accepted calls; a call beyond it answers 429 with `Retry-After: 1` and is not counted
(`upstream.Quota`). Accepted calls take 0.2-0.5 s (uniform, seeded). Seven projects of 100
shots (cap 20 each) keep the backlog from running dry: the fleet could start 40-100 calls a
second.

Three runs, each on a fresh database: `IMAGE_RATE_ADAPTIVE=true` with no `IMAGE_RATE_LIMIT`
(no limit until the first 429), the same with a ceiling of `20/s`, and the old way, a fixed
`IMAGE_RATE_LIMIT=8/s` (`IMAGE_RATE_ADAPTIVE=false`). Figures per run and per phase: goodput
(calls answered 200 that started in the span) / the quota's integral over it, and 429s / all
calls. The targets (the no-ceiling run): goodput >= 0.9x, 429s <= 5% of calls. The run also
keeps, per second, the calls started, the 200s and 429s, and the key's learnt rate and
capacity as `pgqueue.rate_limits` had them (sampled every 100 ms), in `results.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from bench import ops
from bench.context import Context
from bench.scenarios import makespan
from service.payloads import JOB_KIND
from service.settings import IMAGE_RATE_LIMIT_KEY
from tests.support import settings, upstream

PHASE_RATES = (8, 3, 12)  # the quota, calls per second, one phase after another
PROJECTS = 7
SHOTS = 100  # per project: the API's largest
WORKERS = 2
WORKER_CONCURRENCY = 10
CAP = 20  # STORYBOARD_CONCURRENCY: not what holds the calls back
LATENCY_S = (0.2, 0.5)  # an accepted call's latency, uniform
SEED = 16
SAMPLE_S = 0.1  # seconds between two reads of the key's row
WINDOW_S = 1.1  # the key's window (1 s) and the 50 ms more it keeps, and a margin
DRAIN_S = 0.6  # after the last phase: the calls it started are answered by then
GOODPUT_TARGET = 0.9
THROTTLED_TARGET = 0.05

# (name, settings): the runs, the first is the headline.
VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("adaptive", {"IMAGE_RATE_ADAPTIVE": "true"}),
    ("adaptive_c20", {"IMAGE_RATE_ADAPTIVE": "true", "IMAGE_RATE_LIMIT": "20/s"}),
    ("adaptive_fixed8", {"IMAGE_RATE_ADAPTIVE": "false", "IMAGE_RATE_LIMIT": "8/s"}),
)

# -- the key's row as the claim sees it
KEY_ROW = """
SELECT capacity, learnt, sustained, ceiling, paused_until > now() AS paused
FROM pgqueue.rate_limits WHERE key = $1
"""

# -- shots still waiting when the run ends (the backlog never ran dry if > 0)
QUEUED = """
SELECT count(*) FROM pgqueue.jobs WHERE state = 'queued' AND kind = $1
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """The key's row at `at` (seconds since the first phase began)."""

    at: float
    capacity: int | None
    learnt: float | None
    paused: bool


@dataclasses.dataclass
class Result:
    """One run's figures."""

    figures: dict[str, Any]
    per_second: dict[str, list[Any]]


async def _sample(dsn: str, since: float, samples: list[Sample], stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            row = await conn.fetchrow(KEY_ROW, IMAGE_RATE_LIMIT_KEY)
            if row is not None:
                samples.append(
                    Sample(
                        time.monotonic() - since,
                        row["capacity"],
                        row["learnt"],
                        bool(row["paused"]),
                    )
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _sampling(dsn: str, since: float) -> AsyncIterator[list[Sample]]:
    samples: list[Sample] = []
    stop = asyncio.Event()
    task = asyncio.create_task(_sample(dsn, since, samples, stop))
    try:
        yield samples
    finally:
        stop.set()
        await task


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 3) if whole else 0.0


def _figures(
    name: str,
    quota: upstream.Quota,
    calls: list[upstream.Call],
    samples: list[Sample],
    phase_s: float,
) -> Result:
    assert quota.started is not None
    total_s = quota.duration_s
    moments = [(call.started - quota.started, call.status) for call in calls]

    def count(begin: float, end: float, status: int | None = None) -> int:
        return sum(
            1
            for at, answered in moments
            if begin <= at < end and (status is None or answered == status)
        )

    figures: dict[str, Any] = {}
    spans = [("", 0.0, total_s)] + [
        (f"_p{n + 1}", n * phase_s, (n + 1) * phase_s) for n in range(len(PHASE_RATES))
    ]
    for suffix, begin, end in spans:
        allowed = quota.allowed(begin, end)
        ok, throttled, made = count(begin, end, 200), count(begin, end, 429), count(begin, end)
        figures[f"{name}{suffix}_goodput_ratio"] = _ratio(ok, allowed)
        figures[f"{name}{suffix}_429_share"] = _ratio(throttled, made)
        if not suffix:
            figures[f"{name}_quota_calls"] = round(allowed, 1)
            figures[f"{name}_ok_calls"] = ok
            figures[f"{name}_429_calls"] = throttled
            figures[f"{name}_calls"] = made
    seconds = range(int(total_s))
    per_second: dict[str, list[Any]] = {
        "quota": [quota.rate_at(quota.started + s) for s in seconds],
        "starts": [count(s, s + 1) for s in seconds],
        "ok": [count(s, s + 1, 200) for s in seconds],
        "throttled": [count(s, s + 1, 429) for s in seconds],
        # The key's row at the end of each second (None: no row yet, or no limit).
        "capacity": [],
        "learnt": [],
        "paused_share": [],
    }
    for s in seconds:
        within = [sample for sample in samples if s <= sample.at < s + 1]
        last = within[-1] if within else None
        per_second["capacity"].append(last.capacity if last else None)
        per_second["learnt"].append(
            round(last.learnt, 2) if last and last.learnt is not None else None
        )
        per_second["paused_share"].append(
            _ratio(sum(sample.paused for sample in within), len(within)) if within else None
        )
    return Result(figures, per_second)


async def _one_run(
    ctx: Context, name: str, extra: dict[str, str], phase_s: float
) -> tuple[Result, int]:
    """One variant on a fresh database: (its figures, shots still queued at the end)."""
    quota = upstream.Quota([(phase_s, rate) for rate in PHASE_RATES], retry_after="1")
    rng = random.Random(SEED)

    def script(call: upstream.Call) -> upstream.Answer | None:
        return quota(call) or upstream.Answer(latency_s=rng.uniform(*LATENCY_S))

    with (
        tempfile.TemporaryDirectory(prefix="bench-media-") as media,
        upstream.running(latency_s=LATENCY_S[0]) as fake,
    ):
        async with ctx.databases.fresh(f"adaptive_{name}") as dsn:
            env = settings.service_env(
                dsn,
                Path(media),
                fake,
                STORYBOARD_CONCURRENCY=str(CAP),
                STORYBOARD_MAX_PENDING_PER_USER=str(PROJECTS * SHOTS),
                **extra,
            )
            async with makespan.service_fleet(
                ctx, f"adaptive-{name}", env, workers=WORKERS, concurrency=WORKER_CONCURRENCY
            ) as (client, _):
                project_ids = [
                    await makespan.create_project(client, SHOTS, f"adaptive {name} {p}")
                    for p in range(PROJECTS)
                ]
                await ops.settle(ctx)
                # The warm-up's calls reached the fake before its quota counts anything: they
                # leave the key's window too before the quota starts (else the key would count
                # starts the upstream never saw when it measures its first 429's window).
                await asyncio.sleep(WINDOW_S)
                fake.reset()
                fake.script = script
                quota.start()
                assert quota.started is not None
                async with _sampling(dsn, quota.started) as samples:
                    answers = await asyncio.gather(
                        *(
                            client.post(f"/api/projects/{pid}/storyboards/generate")
                            for pid in project_ids
                        )
                    )
                    for answer in answers:
                        if answer.status_code != 202:
                            raise RuntimeError(
                                f"generate answered {answer.status_code}: {answer.text}"
                            )
                    await asyncio.sleep(quota.started + quota.duration_s - time.monotonic())
                    left = await _queued(dsn)
                    await asyncio.sleep(DRAIN_S)
                calls = [call for call in fake.calls if call.project_id]
    return _figures(name, quota, calls, samples, phase_s), left


async def _queued(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value: int = await conn.fetchval(QUEUED, JOB_KIND)
        return value
    finally:
        await conn.close()


def _series(values: list[Any]) -> str:
    return " ".join("-" if value is None else f"{value:g}" for value in values)


async def run(ctx: Context) -> dict[str, Any]:
    """The three runs, one after the other, each on its own database and fleet."""
    phase_s = ctx.config.adaptive_phase_s
    out: dict[str, Any] = {"adaptive_phase_s": phase_s, "adaptive_phase_rates": PHASE_RATES}
    known = {name for name, _ in VARIANTS}
    unknown = set(ctx.config.adaptive_variants) - known
    if unknown:
        raise ValueError(f"unknown adaptive variants {sorted(unknown)}; known: {sorted(known)}")
    for name, extra in VARIANTS:
        if ctx.config.adaptive_variants and name not in ctx.config.adaptive_variants:
            continue
        result, left = await _one_run(ctx, name, extra, phase_s)
        figures = result.figures
        settings_text = ", ".join(f"{key}={value}" for key, value in extra.items())
        ctx.say(
            f"adaptive: {name} ({settings_text}): goodput {figures[f'{name}_ok_calls']} of a "
            f"quota of {figures[f'{name}_quota_calls']:g} = "
            f"{figures[f'{name}_goodput_ratio']:.3f}x (target >= {GOODPUT_TARGET}); 429s "
            f"{figures[f'{name}_429_calls']} of {figures[f'{name}_calls']} calls = "
            f"{figures[f'{name}_429_share']:.1%} (target <= {THROTTLED_TARGET:.0%}); per phase "
            + ", ".join(
                f"{rate}/s: {figures[f'{name}_p{n + 1}_goodput_ratio']:.2f}x, "
                f"{figures[f'{name}_p{n + 1}_429_share']:.0%} 429"
                for n, rate in enumerate(PHASE_RATES)
            )
            + f"; {left} shots still queued at the end"
        )
        for key in ("starts", "ok", "throttled", "capacity", "learnt", "paused_share"):
            ctx.say(f"adaptive: {name}: {key:>12} per second: {_series(result.per_second[key])}")
        if not left:
            ctx.say(f"adaptive: {name}: THE BACKLOG RAN DRY: the figures undercount")
        out.update(figures)
        out[f"{name}_per_second"] = result.per_second
        out[f"{name}_queued_at_end"] = left
    return out
