"""`python -m bench [--only a,b] [--skip a,b] [--quick] ...`: run the benchmarks, print a table."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench import machine, report
from bench.config import Config
from bench.context import Context
from bench.scenarios import SCENARIOS
from tests.support import db
from tests.support.processes import ROOT, Processes

# BENCH_DATABASE_URL, then TEST_DATABASE_URL, else :5432, else an embedded server of our own.
DATABASE_VARIABLES = ("BENCH_DATABASE_URL", "TEST_DATABASE_URL")
EMBEDDED_DIR = ROOT / ".pgdata-bench"
LOG_DIR = ROOT / "bench" / ".logs"  # one log per process the bench starts


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    return names


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 3,10,50; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give positive numbers, e.g. 3,10,50")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("give a positive number")
    return value


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Config]:
    """The command line, and the Config it describes."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark pgqueue (and its peers) on a real Postgres; writes "
        "bench/results.json and bench/results.md.",
    )
    parser.add_argument("--only", type=_names, help=f"run only these: {','.join(SCENARIOS)}")
    parser.add_argument("--skip", type=_names, default=[], help="run all but these")
    parser.add_argument("--quick", action="store_true", help="small sizes: a rough smoke run")
    parser.add_argument("--jobs", type=int, help="no-op jobs per throughput run")
    parser.add_argument("--concurrency", type=_ints, help="concurrencies to sweep, e.g. 3,50,100")
    parser.add_argument("--latency-jobs", type=int, help="jobs in the latency run (200)")
    parser.add_argument(
        "--claim-rows", type=int, help="finished rows behind the claim (1000000; 0 skips)"
    )
    parser.add_argument("--sustained-s", type=float, help="length of the sustained run (60)")
    parser.add_argument("--sustained-concurrency", type=int, help="default: the fastest found")
    parser.add_argument(
        "--sustained-runs", type=_positive, help="sustained runs; the median is reported (3)"
    )
    parser.add_argument("--held-rate", type=int, help="jobs/s in held_snapshot (5000)")
    parser.add_argument("--held-s", type=float, help="seconds the snapshot is held (120)")
    parser.add_argument(
        "--makespan-latency-s", type=float, help="the fake upstream's latency per image (0.5)"
    )
    parser.add_argument(
        "--makespan-concurrency", type=_ints, help="worker concurrencies for makespan (3,10)"
    )
    parser.add_argument(
        "--adaptive-phase-s", type=float, help="seconds of each quota phase in adaptive (20)"
    )
    parser.add_argument(
        "--adaptive-variants",
        help="runs of adaptive to make: adaptive,adaptive_c20,adaptive_fixed8 (default: all)",
    )
    parser.add_argument(
        "--crash-jobs", type=_positive, help="acknowledged enqueues before the crash (10000)"
    )
    parser.add_argument("--rss-jobs", type=int, help="queued jobs behind the RSS reading (100000)")
    parser.add_argument(
        "--peers",
        help="peers to compare with: pgqueuer,procrastinate,dbos,graphile-worker,pg-boss,bullmq,"
        "bullmq-postgres (or 'none')",
    )
    parser.add_argument("--peer-jobs", type=int, help="no-op jobs per peer throughput run")
    parser.add_argument(
        "--peer-rounds", type=_positive, help="interleaved rounds, ours and peers' fastest (3)"
    )
    parser.add_argument(
        "--peer-big-jobs", type=int, help="jobs of the big round (100000; 0 skips it)"
    )
    parser.add_argument(
        "--peer-upgrade", action="store_true", help="reinstall the peers' latest releases"
    )
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    overrides: dict[str, Any] = {
        "throughput_jobs": args.jobs,
        "concurrencies": args.concurrency,
        "latency_jobs": args.latency_jobs,
        "claim_history_rows": args.claim_rows,
        "sustained_s": args.sustained_s,
        "sustained_concurrency": args.sustained_concurrency,
        "sustained_runs": args.sustained_runs,
        "held_rate": args.held_rate,
        "held_s": args.held_s,
        "makespan_latency_s": args.makespan_latency_s,
        "makespan_concurrencies": args.makespan_concurrency,
        "adaptive_phase_s": args.adaptive_phase_s,
        "rss_jobs": args.rss_jobs,
        "crash_jobs": args.crash_jobs,
        "peer_jobs": args.peer_jobs,
        "peer_rounds": args.peer_rounds,
        "peer_big_jobs": args.peer_big_jobs,
    }
    if args.peers is not None:
        overrides["peers"] = tuple(
            p.strip() for p in args.peers.split(",") if p.strip() and p.strip() != "none"
        )
    if args.adaptive_variants is not None:
        overrides["adaptive_variants"] = tuple(
            v.strip() for v in args.adaptive_variants.split(",") if v.strip()
        )
    if args.peer_upgrade:
        overrides["peer_upgrade"] = True
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    return args, config


async def run(args: argparse.Namespace, config: Config, argv: Sequence[str]) -> int:
    """Run the chosen scenarios; print and write the figures. Returns the exit status."""
    chosen = [name for name in (args.only or SCENARIOS) if name not in args.skip]
    admin_url, embedded = await db.find_server(DATABASE_VARIABLES, EMBEDDED_DIR)
    where = "embedded" if embedded else admin_url.rsplit("@", 1)[-1]
    print(f"bench: Postgres at {where}; scenarios: {', '.join(chosen)}", flush=True)
    databases = db.Databases(admin_url, prefix="bench")
    processes = Processes(LOG_DIR)
    ctx = Context(config=config, databases=databases, processes=processes)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": await machine.describe(admin_url),
        "server": "embedded (fsync off)" if embedded else where,
        "argv": list(argv),
        "scenarios": chosen,
        "config": dataclasses.asdict(config),
    }
    failed: dict[str, str] = {}
    try:
        for name in chosen:
            print(f"bench: {name}", flush=True)
            started = time.monotonic()
            try:
                figures = await SCENARIOS[name](ctx)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                traceback.print_exc()
                failed[name] = f"{type(exc).__name__}: {exc}"
                ctx.say(f"{name}: FAILED: {failed[name]}")
                continue
            ctx.figures.update(figures)
            ctx.say(f"{name}: done in {time.monotonic() - started:.1f}s")
    finally:
        processes.close()
        await databases.close()
        if embedded is not None:
            embedded.stop()
    results.update(ctx.figures)
    if failed:
        results["failed"] = failed
    print("\n" + report.write(results), flush=True)
    print(f"\nbench: wrote {report.RESULTS_JSON} and {report.RESULTS_MD}", flush=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, config = parse_args(argv)
    return asyncio.run(run(args, config, argv))


if __name__ == "__main__":
    sys.exit(main())
