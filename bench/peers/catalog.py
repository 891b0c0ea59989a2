"""The peers: how to drive each runner, what to sweep, and the SQL that yields their figures.

(Not named after the peers: this directory is on the runners' `sys.path`, where a module called
`pgqueuer.py` would shadow the real package.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True, slots=True)
class PeerSpec:
    """One peer.

    Args:
        name: as in `results.json` `peers.<name>`.
        runner: its runner script (run by the peers' venv).
        setting: what the worker's SETTING argument means.
        settings: the values swept for throughput; the fastest is also used for latency.
        jobs_fraction: the share of `peer_jobs` per throughput run (slow peers get fewer).
        throughput_sql: one row: `jobs` done and `seconds` from first start to last finish.
        latency_setting: the setting of the latency run; None: the fastest for throughput.
        enqueue_batch: the BATCH argument of the runner's `enqueue` command.
        enqueue_key: the figure its rate is compared with (ours, under the same key).
    """

    name: str
    runner: Path
    setting: str
    settings: tuple[int, ...]
    jobs_fraction: float
    throughput_sql: str
    latency_setting: int | None = None
    enqueue_batch: int = 1_000
    enqueue_key: str = "batch_enqueue_jobs_s"


PEERS: dict[str, PeerSpec] = {
    "pgqueuer": PeerSpec(
        name="pgqueuer",
        runner=HERE / "runner_pgqueuer.py",
        setting="batch_size",
        # 10 is PgQueuer's default; its docs advise raising batch_size for throughput.
        settings=(10, 100, 500),
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
        settings=(3, 10, 50),
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
        settings=(1000, 100, 10),
        jobs_fraction=0.25,
        latency_setting=10,  # the shortest swept: its best pickup, whatever the throughput
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
}
