"""Prometheus metrics for pgqueue: what a worker ran, and what the database knows.

Optional: this module needs `prometheus-client` (`pip install 'pgqueue-durable[metrics]'`), and
nothing else in pgqueue imports it, so a queue without metrics pays nothing for them.

- `WorkerMetrics(worker)`: one worker's own attempts, from its public hooks (`Worker.on`) and
  its `Worker.outcomes`. Nothing is added to the worker when it is not used: a worker without
  hooks builds no events at all. With it, each job costs two dictionary updates and a clock
  read at its start and at its end; the Prometheus families are built at scrape time.
- `DatabaseMetrics()`: the queue as the database records it, for a process that runs no jobs
  (an API): the `pgqueue.queue_stats` gauges, and the jobs that finished since this object was
  made, read incrementally on each scrape through the finished-time index; and the
  governor's state per key: `pgqueue_rate_limit_allowed` (a learnt rate too),
  `pgqueue_breaker_state{state}` (every state present, 0 or 1), `pgqueue_budget_spent`,
  `pgqueue_budget_amount`, `pgqueue_budget_reserved`.
- `MetricsServer` (metrics_server.py): `GET /metrics` on a port, inside the worker's event
  loop (no thread: the collectors read the worker's state on the loop that changes it);
  `serve_worker` registers a worker's metrics and starts one.

One name per meaning: a job finished as the database sees it (`pgqueue_jobs_finished_total`,
the API's) and an attempt as a worker sees it (`pgqueue_attempts_finished_total`) are
different things, so a query without a `job=` filter never adds one to the other. Every series
whose labels the code knows (its queues, kinds and outcomes) is there at 0 from the first
scrape, so `increase(...[5m])` sees the first failure; no `*_created` series unless
`PROMETHEUS_DISABLE_CREATED_SERIES` says otherwise (see docs/metrics.md).
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import datetime
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

try:
    import prometheus_client
    from prometheus_client import registry as prometheus_registry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "pgqueue's metrics need prometheus-client: pip install 'pgqueue-durable[metrics]'"
    ) from exc

from pgqueue import governor_metrics, models, reports, store
from pgqueue.metrics_server import MetricsServer
from pgqueue.queue import Queue
from pgqueue.worker import events
from pgqueue.worker.transient import TRANSIENT_ERRORS

if TYPE_CHECKING:
    from pgqueue.worker.core import Worker

logger = logging.getLogger("pgqueue.metrics")

# Seconds. From a no-op's milliseconds to an image call's minute, and a stuck job's ten.
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
# A finished job is counted once no transaction that could still commit it is open. One that
# stays open longer than this (a pg_dump, a forgotten session) no longer holds the counts back:
# past it, a job finished by a transaction still open may be missed (never counted twice).
MAX_SETTLE_LAG_S = 300.0
QUEUE_STATES = ("waiting", "delayed", "active", "completed", "failed", "cancelled")
JOB_OUTCOMES = ("succeeded", "failed", "cancelled")  # a job's end, as the database records it
ATTEMPT_OUTCOMES = ("succeeded", "failed", "cancelled", "retried")  # an attempt's, a worker's
REAPED_OUTCOMES = ("requeued", "failed", "cancelled")


@dataclasses.dataclass(slots=True)
class _Durations:
    """One histogram's buckets, not yet cumulative: counts[i] holds the values in
    (bounds[i-1], bounds[i]]; the last slot is above every bound (+Inf)."""

    counts: list[int]
    total_s: float = 0.0

    @classmethod
    def empty(cls, bounds: Sequence[float]) -> _Durations:
        return cls([0] * (len(bounds) + 1))

    def family_buckets(self, bounds: Sequence[float]) -> list[tuple[str, float]]:
        """The (le, cumulative count) pairs Prometheus expects, +Inf last."""
        buckets, running = [], 0
        for bound, count in zip((*bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((_le(bound), float(running)))
        return buckets


def _le(bound: float) -> str:
    # As Prometheus writes a bucket's bound: 0.005, 1.0, +Inf.
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _histogram(
    name: str,
    documentation: str,
    durations: dict[tuple[str, str], _Durations],
    bounds: Sequence[float],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=("queue", "kind"))
    for (queue, kind), values in sorted(durations.items()):
        family.add_metric([queue, kind], values.family_buckets(bounds), values.total_s)
    return family


def _counter(
    name: str, documentation: str, labels: Sequence[str], values: dict[tuple[str, ...], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), float(value))
    return family


class WorkerMetrics:
    """One worker's own metrics, a Prometheus collector: register it with a registry.

    Counts attempts this worker started and how each ended (`succeeded`, `failed`,
    `cancelled`, `retried`), by queue and kind (each queue it takes from and kind it handles
    at 0 from the start); each attempt's duration from its handler's start to its outcome
    written; the leases it lost and the jobs it released (without kind:
    those ends raise no event, so they come from `Worker.outcomes`); and the expired leases its
    reaper moved on, of any worker.

    Args:
        worker: the worker; its hooks are added here, before it runs.
        buckets: the duration histogram's upper bounds, in seconds.
    """

    def __init__(self, worker: Worker, *, buckets: Sequence[float] = DURATION_BUCKETS_S) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be distinct upper bounds in increasing order")
        self._worker = worker
        self._bounds = tuple(buckets)
        self._started_at: dict[int, float] = {}  # job id -> time.monotonic() at its start
        self._started: dict[tuple[str, ...], int] = {}
        self._finished: dict[tuple[str, ...], int] = {}
        self._durations: dict[tuple[str, str], _Durations] = {}
        self._reaped: dict[tuple[str, ...], int] = {}
        # A job whose end raises no event (lease lost while writing, released at a stop) leaves
        # its start behind; past this many, the starts of jobs no longer held are dropped.
        self._prune_above = 2 * worker.config.concurrency + 64
        # Present at 0 before anything happens: an alert on `increase(...[5m])` needs a series
        # to exist before the first failure, or it reads nothing where it should read 1.
        for queue in worker.config.queues:
            for kind in worker.registry.kinds:
                self._started[(queue, kind)] = 0
                self._durations[(queue, kind)] = _Durations.empty(self._bounds)
                for outcome in ATTEMPT_OUTCOMES:
                    self._finished[(queue, kind, outcome)] = 0
            for outcome in REAPED_OUTCOMES:
                self._reaped[(queue, outcome)] = 0
        worker.on("active", self._on_active)
        worker.on("completed", self._on_completed)
        worker.on("failed", self._on_failed)
        worker.on("stalled", self._on_stalled)

    # -- the worker's side: hooks, on its event loop ---------------------------------------

    def _on_active(self, event: events.Event) -> None:
        job = event.job
        if job is None:
            return
        key = (job.queue, job.kind)
        self._started[key] = self._started.get(key, 0) + 1
        self._started_at[job.id] = time.monotonic()
        if len(self._started_at) > self._prune_above:
            held = set(self._worker.running_job_ids)
            for job_id in [i for i in self._started_at if i not in held]:
                del self._started_at[job_id]

    def _on_completed(self, event: events.Event) -> None:
        if event.job is not None:
            self._ended(event.job, "succeeded")

    def _on_failed(self, event: events.Event) -> None:
        job = event.job
        if job is None:
            return
        if event.will_retry:
            outcome = "retried"
        elif job.state is models.JobState.CANCELLED:
            outcome = "cancelled"
        else:
            outcome = "failed"
        self._ended(job, outcome)

    def _on_stalled(self, event: events.Event) -> None:
        job = event.job
        if job is None:
            return
        if job.state is models.JobState.RUNNING:
            # This worker lost the lease (the job as claimed): counted in `outcomes.lost`.
            self._started_at.pop(job.id, None)
            return
        # The reaper moved an expired lease on: the row as it wrote it.
        outcome = "requeued" if job.state is models.JobState.QUEUED else job.state.value
        key = (job.queue, outcome)
        self._reaped[key] = self._reaped.get(key, 0) + 1

    def _ended(self, job: models.Job, outcome: str) -> None:
        key = (job.queue, job.kind, outcome)
        self._finished[key] = self._finished.get(key, 0) + 1
        started = self._started_at.pop(job.id, None)
        if started is None:
            return
        elapsed_s = time.monotonic() - started
        durations = self._durations.get((job.queue, job.kind))
        if durations is None:
            durations = self._durations[(job.queue, job.kind)] = _Durations.empty(self._bounds)
        # bisect_left: the first bound >= the value, i.e. Prometheus' `le`.
        durations.counts[bisect.bisect_left(self._bounds, elapsed_s)] += 1
        durations.total_s += elapsed_s

    # -- the scraper's side -----------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The Prometheus families (called by the registry on each scrape)."""
        outcomes = self._worker.outcomes
        # `attempts`, not `jobs`: the API's `pgqueue_jobs_finished_total` counts jobs, and
        # one name for both meanings would double count in any query without `job=`.
        yield _counter(
            "pgqueue_attempts_started",
            "Attempts this worker started",
            ("queue", "kind"),
            self._started,
        )
        yield _counter(
            "pgqueue_attempts_finished",
            "Attempts this worker ended, by outcome: succeeded, failed, cancelled, retried",
            ("queue", "kind", "outcome"),
            self._finished,
        )
        yield _histogram(
            "pgqueue_attempt_duration_seconds",
            "Seconds from a handler's start to its outcome written, per attempt of this worker",
            self._durations,
            self._bounds,
        )
        yield CounterMetricFamily(
            "pgqueue_leases_lost",
            "Attempts whose lease this worker lost: their outcome was not its to write",
            value=float(outcomes.lost),
        )
        yield CounterMetricFamily(
            "pgqueue_jobs_released",
            "Attempts this worker gave back at a stop, their attempt not spent",
            value=float(outcomes.released),
        )
        yield _counter(
            "pgqueue_jobs_reaped",
            "Expired leases (of any worker) this worker's reaper moved on: requeued, failed, "
            "cancelled",
            ("queue", "outcome"),
            self._reaped,
        )
        yield GaugeMetricFamily(
            "pgqueue_worker_running_jobs",
            "Jobs this worker holds now",
            value=float(len(self._worker.running_job_ids)),
        )
        yield GaugeMetricFamily(
            "pgqueue_worker_concurrency",
            "Jobs this worker runs at most at once",
            value=float(self._worker.config.concurrency),
        )


class DatabaseMetrics:
    """The queue as the database records it, a Prometheus collector; `await refresh(pool)`
    before each scrape (the registry's collect is synchronous).

    - `pgqueue_jobs{queue,state}`: the `pgqueue.queue_stats` view, as it reads.
    - `pgqueue_jobs_finished_total{queue,kind,outcome}`: jobs that reached `succeeded`,
      `failed` or `cancelled` since this object was made (a counter starts at zero with its
      process, as Prometheus expects), whoever ran them.
    - `pgqueue_job_duration_seconds{queue,kind}`: those jobs' last attempt, `started_at` to
      `finished_at` (both the database's clock).
    - `pgqueue_queue_oldest_waiting_seconds{queue}`: how long the oldest runnable job has
      waited since its `run_at` (0 when none waits); `pgqueue_queue_paused{queue}`.

    The (queue, kind) pairs of `known`, and every pair seen finished since, have all their
    outcomes present, at 0 until counted; the queues of `known` have their gauges at 0.

    Each refresh reads only the jobs finished since the previous one, through the
    finished-time index; the counts trail the truth by the longest transaction open at the
    scrape (at most `MAX_SETTLE_LAG_S`), so a late commit is counted once, late, not missed.

    Args:
        buckets: the duration histogram's upper bounds, in seconds.
        since: count jobs finished from this instant (default: now).
        known: the (queue, kind) pairs the application enqueues, present from the start.
    """

    def __init__(
        self,
        *,
        buckets: Sequence[float] = DURATION_BUCKETS_S,
        since: datetime.datetime | None = None,
        known: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._bounds = tuple(buckets)
        # The client's clock, once: only the counters' origin depends on it, never a lease.
        self._settled = since or datetime.datetime.now(datetime.UTC)
        self._stats: dict[str, reports.QueueStats] | None = None
        self._overview: list[reports.QueueInfo] = []
        self._finished: dict[tuple[str, ...], int] = {}
        self._durations: dict[tuple[str, str], _Durations] = {}
        self._known_queues: set[str] = set()
        for queue, kind in known:
            self._know(queue, kind)
        self._up = False
        self._limits: list[dict[str, Any]] = []
        self._budgets: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()  # two scrapes at once must not count one window twice

    async def refresh(self, pool: asyncpg.Pool) -> bool:
        """Read the view and the newly finished jobs; False (and `pgqueue_database_up 0`)
        when the database did not answer, the last values kept."""
        async with self._lock:
            try:
                queue = Queue(pool)
                self._stats = await queue.stats()
                self._overview = await queue.queues()
                self._limits = await queue.rate_limits()
                self._budgets = await queue.budgets()
                async with pool.acquire() as conn:
                    settled = await store.settled_before(conn, MAX_SETTLE_LAG_S)
                    if settled > self._settled:
                        rows = await store.finished_between(
                            conn, self._settled, settled, self._bounds
                        )
                        self._add(rows)
                        self._settled = settled
            except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
                logger.warning(
                    "metrics: the database did not answer: %s", exc, extra={"action": "metrics_db"}
                )
                self._up = False
                return False
            self._up = True
            return True

    def _know(self, queue: str, kind: str) -> None:
        # Every outcome of a pair at once: the first failure of a kind that has only
        # succeeded so far must be an increase from 0, not a series that starts at 1.
        self._known_queues.add(queue)
        if (queue, kind) in self._durations:
            return
        self._durations[(queue, kind)] = _Durations.empty(self._bounds)
        for outcome in JOB_OUTCOMES:
            self._finished.setdefault((queue, kind, outcome), 0)

    def _add(self, rows: Sequence[asyncpg.Record]) -> None:
        for row in rows:
            queue, kind, jobs = row["queue"], row["kind"], int(row["jobs"])
            self._know(queue, kind)
            key = (queue, kind, row["state"])
            self._finished[key] = self._finished.get(key, 0) + jobs
            if row["bucket"] is None:  # cancelled before it started: no duration
                continue
            durations = self._durations[(queue, kind)]
            durations.counts[row["bucket"]] += jobs
            durations.total_s += float(row["seconds"])

    def collect(self) -> Iterator[Metric]:
        """The Prometheus families, as of the last `refresh`."""
        yield GaugeMetricFamily(
            "pgqueue_database_up",
            "1 when the last scrape read the database, 0 when it did not answer",
            value=1.0 if self._up else 0.0,
        )
        gauge = GaugeMetricFamily(
            "pgqueue_jobs",
            "Jobs per queue and state, as pgqueue.queue_stats reads",
            labels=("queue", "state"),
        )
        stats = self._stats or {}
        for name in sorted(stats.keys() | self._known_queues):
            for state in QUEUE_STATES:
                count = getattr(stats[name], state) if name in stats else 0
                gauge.add_metric([name, state], float(count))
        yield gauge
        yield from self._queue_families()
        yield _counter(
            "pgqueue_jobs_finished",
            "Jobs that ended succeeded, failed or cancelled (any worker or drain), since this "
            "process started",
            ("queue", "kind", "outcome"),
            self._finished,
        )
        yield _histogram(
            "pgqueue_job_duration_seconds",
            "Seconds from the last attempt's start to the job's end, of the jobs finished",
            self._durations,
            self._bounds,
        )
        yield from governor_metrics.families(self._limits, self._budgets)

    def _queue_families(self) -> Iterator[Metric]:
        oldest = GaugeMetricFamily(
            "pgqueue_queue_oldest_waiting_seconds",
            "Seconds the queue's oldest runnable job has waited since its run_at (0: none waits)",
            labels=("queue",),
        )
        paused = GaugeMetricFamily(
            "pgqueue_queue_paused", "1 while the queue is paused", labels=("queue",)
        )
        listed = {info.queue: info for info in self._overview}
        for name in sorted(listed.keys() | self._known_queues):
            info = listed.get(name)
            waited = info.oldest_waiting_s if info is not None else None
            oldest.add_metric([name], max(0.0, waited or 0.0))
            paused.add_metric([name], 1.0 if info is not None and info.paused else 0.0)
        yield oldest
        yield paused


async def serve_worker(
    worker: Worker,
    port: int,
    *,
    host: str = "127.0.0.1",
    registry: prometheus_registry.CollectorRegistry | None = None,
) -> MetricsServer:
    """Register `WorkerMetrics(worker)` in `registry` (default: the global one) and serve it.

    Returns the started server; `await server.close()` when the worker has stopped.
    """
    target = registry or prometheus_client.REGISTRY
    target.register(WorkerMetrics(worker))
    server = MetricsServer(target, host=host, port=port)
    await server.start()
    return server
