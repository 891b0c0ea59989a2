"""What both peer runners share: the command line and the paced latency client (stdlib only).

A runner module supplies a `Peer` and calls `main(peer)`. Commands:

    install DSN
    enqueue DSN JOBS BATCH                 -> {"jobs_s": ...}
    worker DSN SETTING [--drain] [--stamps FILE]   (SETTING: batch size or concurrency)
    latency DSN JOBS INTERVAL_MS STAMPS    -> {"<seq>": time.time() just before enqueue}

Handlers append `<seq> <time.time()>` to STAMPS at their first line (`-1` for probes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

READY_TIMEOUT_S = 20.0
PROBE = -1  # the seq of a probe job

# enqueue_one(seq): a probe (no-op that stamps -1) when seq is PROBE, else a latency job
EnqueueOne = Callable[[int], Awaitable[None]]


@dataclasses.dataclass
class Peer:
    """One peer's operations."""

    install: Callable[[str], Awaitable[None]]
    enqueue: Callable[[str, int, int], Awaitable[float]]
    worker: Callable[[str, int, bool, str | None], Awaitable[None]]
    client: Callable[[str], Any]  # async context manager yielding an EnqueueOne
    run: Callable[[Awaitable[None]], None]  # the event loop runner (uvloop)


def count_probes(path: str) -> int:
    """How many probe jobs have started."""
    if not os.path.exists(path):
        return 0
    with open(path) as stamps:
        return sum(1 for line in stamps if line.startswith(f"{PROBE} "))


async def latency(peer: Peer, dsn: str, jobs: int, interval_ms: float, stamps: str) -> None:
    """Wait until the worker idles and listens, enqueue paced jobs, print their send times."""
    async with peer.client(dsn) as enqueue_one:
        for expected in (1, 2):  # the second probe can only be picked up through NOTIFY
            await enqueue_one(PROBE)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while count_probes(stamps) < expected:
                if time.monotonic() > deadline:
                    raise TimeoutError("the worker did not pick up the probe job")
                await asyncio.sleep(0.02)
        sent: dict[int, float] = {}
        next_at = time.monotonic()
        for seq in range(jobs):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # pacing
            next_at += interval_ms / 1000
            sent[seq] = time.time()
            await enqueue_one(seq)
    print(json.dumps(sent))


def main(peer: Peer) -> None:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install").add_argument("dsn")
    p = commands.add_parser("enqueue")
    p.add_argument("dsn")
    p.add_argument("jobs", type=int)
    p.add_argument("batch", type=int)
    p = commands.add_parser("worker")
    p.add_argument("dsn")
    p.add_argument("setting", type=int)
    p.add_argument("--drain", action="store_true")
    p.add_argument("--stamps")
    p = commands.add_parser("latency")
    p.add_argument("dsn")
    p.add_argument("jobs", type=int)
    p.add_argument("interval_ms", type=float)
    p.add_argument("stamps")
    args = parser.parse_args()
    if args.command == "install":
        peer.run(peer.install(args.dsn))
    elif args.command == "enqueue":

        async def enqueue() -> None:
            print(json.dumps({"jobs_s": await peer.enqueue(args.dsn, args.jobs, args.batch)}))

        peer.run(enqueue())
    elif args.command == "worker":
        peer.run(peer.worker(args.dsn, args.setting, args.drain, args.stamps))
    else:
        peer.run(latency(peer, args.dsn, args.jobs, args.interval_ms, args.stamps))
