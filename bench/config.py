"""The sizes and settings of one benchmark run; the CLI fills them in."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(slots=True)
class Config:
    """What to run, and how big.

    The defaults make a full run (peers included, their first install aside) about 70 minutes on
    2 cores; `--quick` shrinks everything for a smoke run.
    """

    throughput_jobs: int = 20_000  # no-op jobs per throughput run
    concurrencies: tuple[int, ...] = (3, 10, 50, 200, 500, 1000)  # swept; 3 is always included
    enqueue_jobs: int = 50_000  # jobs enqueued with enqueue_many
    enqueue_batch: int = 1_000  # specs per enqueue_many call
    single_enqueue_jobs: int = 3_000  # jobs enqueued one call each (per caller count)
    single_enqueue_callers: tuple[int, ...] = (1, 10, 50)  # concurrent callers, each measured
    pgbench_seconds: float = 3.0  # per pgbench ceiling run (one per caller count and table)
    pgbench_notify: bool = True  # also the NOTIFY-trigger ceiling (what notifying commits cost)
    latency_jobs: int = 200
    latency_interval_ms: float = 20.0
    floor_rounds: int = 2  # floor and ours alternated this many times, samples pooled
    claim_history_rows: int = 1_000_000  # finished rows behind the claim; 0 skips that half
    claim_queued_rows: int = 10_000
    claim_samples: int = 300  # claims timed per table size
    claim_limit: int = 10  # jobs per claim, like a worker with 10 free slots
    sustained_s: float = 600.0  # ten minutes: the growth of finished rows has time to show
    sustained_concurrency: int | None = None  # default: the fastest found by `throughput`
    sustained_runs: int = 3  # the figure is the median run's
    held_rate: int = 5_000  # jobs/s the producer enqueues in `held_snapshot`
    held_before_s: float = 15.0  # seconds before the snapshot is taken
    held_s: float = 120.0  # seconds the snapshot is held
    held_after_s: float = 30.0  # seconds after it is released
    makespan_shots: int = 30  # shots of the one storyboard project
    makespan_cap: int = 3  # STORYBOARD_CONCURRENCY: most shots of the project generating at once
    makespan_latency_s: float = 0.5  # seconds the fake upstream takes per image
    makespan_concurrencies: tuple[int, ...] = (3, 10)  # worker slots; the first is the headline
    adaptive_phase_s: float = 20.0  # seconds of each of the quota's three phases (8, 3, 12/s)
    adaptive_variants: tuple[str, ...] = ()  # the runs of `adaptive` to make (empty: all)
    fairness_big_shots: int = 150  # the first user's queued shots in `fairness`
    crash_jobs: int = 10_000  # acknowledged enqueues before the kill -9
    crash_callers: int = 10  # enqueueing at once (ours and BullMQ's alike)
    rss_jobs: int = 100_000
    rss_concurrency: int = 3
    peers: tuple[str, ...] = (
        "pgqueuer",
        "procrastinate",
        "dbos",
        "graphile-worker",
        "pg-boss",
        "bullmq",
        "bullmq-postgres",
    )
    peer_jobs: int = 20_000  # no-op jobs per peer throughput run (some peers: a quarter)
    peer_sweep: bool = True  # every setting of each peer; False: its documented fast one only
    peer_defaults: bool = True  # also each peer at its own defaults (drain and pickup)
    peer_rounds: int = 3  # interleaved rounds of ours and each peer at its fastest (medians)
    peer_big_jobs: int = 100_000  # one more such round at this size; 0 skips it
    peer_our_concurrency: int = 50  # ours in those rounds, unless `throughput` found better
    peer_max_seconds: float | None = None  # caps each peer's own drain time limit (see catalog)
    peer_upgrade: bool = False  # reinstall the peers' latest releases even when present

    @classmethod
    def quick(cls) -> Config:
        """Small sizes: every scenario runs end to end in about a minute (figures are rough)."""
        return cls(
            throughput_jobs=3_000,
            concurrencies=(3, 50),
            enqueue_jobs=10_000,
            single_enqueue_jobs=500,
            pgbench_seconds=1.0,
            latency_jobs=50,
            floor_rounds=1,
            claim_history_rows=100_000,
            claim_queued_rows=2_000,
            claim_samples=50,
            sustained_s=12.0,
            sustained_runs=1,
            held_s=20.0,
            adaptive_phase_s=5.0,
            fairness_big_shots=60,
            rss_jobs=10_000,
            crash_jobs=2_000,
            peer_jobs=3_000,
            peer_sweep=False,
            peer_defaults=False,
            peer_rounds=1,
            peer_big_jobs=0,
            peer_max_seconds=5.0,
        )
