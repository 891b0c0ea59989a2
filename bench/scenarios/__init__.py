"""The scenarios, in the order they run. Each is `async run(ctx) -> figures`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bench.context import Context
from bench.scenarios import (
    adaptive,
    claim,
    crash,
    enqueue,
    fairness,
    fleet,
    floor,
    held_snapshot,
    latency,
    makespan,
    memory,
    peers,
    rate_limit,
    sustained,
    throughput,
)

Scenario = Callable[[Context], Awaitable[dict[str, Any]]]

# throughput runs before sustained, which reuses the fastest concurrency it found.
SCENARIOS: dict[str, Scenario] = {
    "throughput": throughput.run,
    "enqueue": enqueue.run,
    "latency": latency.run,
    "floor": floor.run,
    "claim": claim.run,
    "sustained": sustained.run,
    "held_snapshot": held_snapshot.run,
    "makespan": makespan.run,
    "fleet": fleet.run,
    "rate_limit": rate_limit.run,
    "adaptive": adaptive.run,
    "fairness": fairness.run,
    "memory": memory.run,
    "peers": peers.run,
    "crash": crash.run,
}
