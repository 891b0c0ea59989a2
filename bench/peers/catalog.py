"""The peers: how to drive each runner, what to sweep, and the SQL that yields their figures.

(Not named after the peers: this directory is on the runners' `sys.path`, where a module called
`pgqueuer.py` would shadow the real package.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"  # the Node peers' runners, package.json and lock
NODE_MODULES = HERE.parent / ".peers" / "node" / "node_modules"  # tools/bench-deps.sh fills it


@dataclasses.dataclass(frozen=True, slots=True)
class PeerSpec:
    """One peer.

    Args:
        name: as in `results.json` `peers.<name>`.
        runner: its runner script (Python: run by the peers' venv; `.mjs`: by the Node peers' node).
        setting: what the worker's SETTING argument means.
        settings: the values swept for throughput; the fastest is also used for latency. The
            first is the peer's documented fast configuration: `--quick` runs it alone.
        jobs_fraction: the share of `peer_jobs` per throughput run (slow peers get fewer).
        throughput_sql: one row: `jobs` done and `seconds` from first start to last finish;
            None: the drained worker prints them (its last line, JSON), from its own records.
        latency_setting: the setting of the latency run; None: the fastest for throughput.
        enqueue_batch: the BATCH argument of the runner's `enqueue` command.
        enqueue_key: the figure its rate is compared with (ours, under the same key).
        default_setting: the peer's own defaults, measured apart (throughput, and latency when
            `latency_at_default`); None: not measured, or already among `settings`.
        latency_at_default: also time the paced latency workload at `default_setting`.
        max_seconds: every drain may stop after this long (Node runners' `--max-seconds`); its
            figure is then the jobs finished by then over the time taken (for a backend that
            drains a few hundred jobs a second or fewer).
        default_max_seconds: the same for the drain at `default_setting` alone (defaults
            that take minutes over a drain).
        store: `postgres` (a fresh database per run) or `redis` (the bench's own Redis).
    """

    name: str
    runner: Path
    setting: str
    settings: tuple[str, ...]
    jobs_fraction: float
    throughput_sql: str | None
    latency_setting: str | None = None
    enqueue_batch: int = 1_000
    enqueue_key: str = "batch_enqueue_jobs_s"
    default_setting: str | None = None
    latency_at_default: bool = False
    max_seconds: float | None = None
    default_max_seconds: float | None = None
    store: str = "postgres"

    @property
    def is_node(self) -> bool:
        """Whether the runner is one of the Node peers'."""
        return self.runner.suffix == ".mjs"


PEERS: dict[str, PeerSpec] = {
    "pgqueuer": PeerSpec(
        name="pgqueuer",
        runner=HERE / "runner_pgqueuer.py",
        setting="batch_size",
        # 10 is PgQueuer's default; its docs advise raising batch_size for throughput.
        settings=("100", "10", "500"),
        default_setting="10",  # its default (swept)
        jobs_fraction=1.0,
        # pgqueuer deletes finished jobs; its log table keeps every status change.
        throughput_sql="""
            SELECT count(*) FILTER (WHERE status = 'successful') AS jobs,
                   extract(epoch FROM max(created) FILTER (WHERE status = 'successful')
                                    - min(created) FILTER (WHERE status = 'picked'))::float8
                       AS seconds
            FROM pgqueuer_log
        """,
    ),
    "procrastinate": PeerSpec(
        name="procrastinate",
        runner=HERE / "runner_procrastinate.py",
        setting="concurrency",
        settings=("50", "3", "10"),
        default_setting="1",
        jobs_fraction=0.25,
        throughput_sql="""
            SELECT count(*) FILTER (WHERE type = 'succeeded') AS jobs,
                   extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')
                                    - min(at) FILTER (WHERE type = 'started'))::float8
                       AS seconds
            FROM procrastinate_events
        """,
    ),
    "dbos": PeerSpec(
        name="dbos",
        runner=HERE / "runner_dbos.py",
        # DBOS polls its queues; the interval (default 1 s) is its documented latency knob.
        setting="polling_interval_ms",
        settings=("10", "1000", "100"),
        default_setting="1000",  # its default polling interval (swept)
        jobs_fraction=0.25,
        latency_setting="10",  # the shortest swept: its best pickup, whatever the throughput
        # No batch enqueue in DBOS: one workflow per call, 50 calls at once, beside ours with
        # 50 concurrent callers.
        enqueue_batch=50,
        enqueue_key="single_enqueue_c50_jobs_s",
        # started_at_epoch_ms: set when a worker dequeues; completed_at: when it finished.
        throughput_sql="""
            SELECT count(*) FILTER (WHERE status = 'SUCCESS') AS jobs,
                   ((max(coalesce(completed_at, updated_at)) FILTER (WHERE status = 'SUCCESS')
                     - min(started_at_epoch_ms)) / 1000.0)::float8 AS seconds
            FROM dbos.workflow_status
        """,
    ),
    "graphile-worker": PeerSpec(
        name="graphile-worker",
        runner=NODE_DIR / "runner_graphile.mjs",
        # Its performance page's preset: concurrentJobs 24, maxPoolSize 25, localQueue 500,
        # completeJobBatchDelay 0; then the same with other concurrencies.
        setting="worker",
        settings=("preset", "c=10", "c=50", "c=100"),
        jobs_fraction=1.0,
        throughput_sql=None,  # it deletes finished jobs: the runner times the drain
        default_setting="default",  # concurrentJobs 1, no local queue, no batching
        latency_at_default=True,
        default_max_seconds=30.0,
    ),
    "pg-boss": PeerSpec(
        name="pg-boss",
        runner=NODE_DIR / "runner_pgboss.mjs",
        # v12's levers: batchSize, localConcurrency, burstWhenBatchFull, LISTEN/NOTIFY.
        setting="work",
        settings=("b=500,c=2", "b=100,c=1", "b=1000,c=4"),
        jobs_fraction=1.0,
        throughput_sql=None,  # the runner reads started_on/completed_on from pgboss.job
        # One job per fetch and a poll every 2 s (0.5 jobs/s): timed for 10 s; its paced
        # latency would take minutes, so it is not timed at the defaults.
        default_setting="default",
        default_max_seconds=10.0,
    ),
    "bullmq": PeerSpec(
        name="bullmq",
        runner=NODE_DIR / "runner_bullmq.mjs",
        setting="worker",
        settings=("c=200", "c=10", "c=50", "c=500"),
        jobs_fraction=1.0,
        throughput_sql=None,  # the runner times first start to last `completed` event
        default_setting="default",  # concurrency 1
        latency_at_default=True,
        default_max_seconds=60.0,
        store="redis",
    ),
    "bullmq-postgres": PeerSpec(
        name="bullmq-postgres",
        runner=NODE_DIR / "runner_bullmq.mjs",
        setting="worker",
        settings=("c=50", "c=200"),
        jobs_fraction=0.25,
        throughput_sql=None,
        default_setting="default",
        max_seconds=20.0,
    ),
}
