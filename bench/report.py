"""The final table, `bench/results.json` and `bench/results.md`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_JSON = Path(__file__).resolve().parent / "results.json"
RESULTS_MD = Path(__file__).resolve().parent / "results.md"

# (key, label, unit, target): the rows of the table, in order. A target reads "<= 6" or ">= 1.3x".
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("throughput_c3_jobs_s", "no-op throughput, 1 worker, concurrency 3", "jobs/s", ""),
    ("throughput_jobs_s", "no-op throughput, 1 worker, fastest setting", "jobs/s", ""),
    ("throughput_best_concurrency", "  fastest concurrency", "", ""),
    ("batch_enqueue_jobs_s", "enqueue_many, batches of 1000", "jobs/s", ""),
    ("single_enqueue_c1_jobs_s", "enqueue, one per call, 1 caller", "jobs/s", ""),
    ("pgbench_plain_c1_tps", "  pgbench ceiling, 1 client, plain insert", "commits/s", ""),
    ("single_enqueue_c10_jobs_s", "enqueue, one per call, 10 callers", "jobs/s", ""),
    ("pgbench_plain_c10_tps", "  pgbench ceiling, 10 clients, plain insert", "commits/s", ""),
    ("pgbench_notify_c10_tps", "  pgbench, 10 clients, NOTIFY trigger", "commits/s", ""),
    ("single_enqueue_c10_vs_plain", "  ratio 10 callers / plain ceiling", "x", ""),
    ("single_enqueue_c50_jobs_s", "enqueue, one per call, 50 callers", "jobs/s", ""),
    ("pgbench_plain_c50_tps", "  pgbench ceiling, 50 clients, plain insert", "commits/s", ""),
    ("pgbench_notify_c50_tps", "  pgbench, 50 clients, NOTIFY trigger", "commits/s", ""),
    ("single_enqueue_c50_vs_plain", "  ratio 50 callers / plain ceiling", "x", ">= 0.5"),
    ("pgbench_missing", "  pgbench ceiling not measured", "", ""),
    ("latency_p50_ms", "enqueue-to-start latency p50 (idle worker)", "ms", "<= 2.5"),
    ("latency_p95_ms", "enqueue-to-start latency p95", "ms", ""),
    ("latency_p99_ms", "enqueue-to-start latency p99", "ms", "<= 6"),
    ("floor_p50_ms", "raw notify-and-claim floor, pickup p50 (asyncpg, one claim)", "ms", ""),
    ("floor_p99_ms", "  floor pickup p99", "ms", ""),
    ("floor_ours_p50_ms", "  ours in the same run, pickup p50", "ms", ""),
    ("floor_ours_p99_ms", "  ours in the same run, pickup p99", "ms", ""),
    ("floor_ratio_p50", "  ratio ours / floor, p50", "x", "<= 1.2"),
    ("floor_ratio_p99", "  ratio ours / floor, p99", "x", ""),
    ("claim_nothing_ms", "claim p50, empty table, nothing to claim", "ms", ""),
    ("claim_empty_ms", "claim p50, empty table but the claimed jobs", "ms", ""),
    ("claim_queued_only_ms", "claim p50, 10k queued", "ms", ""),
    ("claim_1m_ms", "claim p50, 10k queued + 1M finished", "ms", ""),
    ("claim_1m_vs_empty", "  ratio 1M / empty table", "x", "<= 1.2"),
    ("claim_1m_vs_queued_only", "  ratio 1M / 10k queued only", "x", ""),
    ("claim_1m_limited_ms", "claim p50, 10k queued + 1M finished, one rate-limit key", "ms", ""),
    ("claim_1m_limited_vs_1m", "  ratio rate-limited / no limit", "x", ""),
    (
        "claim_1m_governed_ms",
        "claim p50, 10k queued + 1M finished, fairness keys and budgets",
        "ms",
        "",
    ),
    ("claim_1m_governed_vs_1m", "  ratio fairness keys and budgets / none", "x", ""),
    ("sustained_first5_jobs_s", "sustained run, first 5 s (the median run)", "jobs/s", ""),
    ("sustained_last5_jobs_s", "sustained run, last 5 s", "jobs/s", ""),
    ("sustained_last_vs_first", "  ratio last / first", "x", ">= 0.9"),
    ("held_before_jobs_s", "held snapshot: 5,000 jobs/s offered, finished before", "jobs/s", ""),
    ("held_during_jobs_s", "  finished while a snapshot is held (120 s)", "jobs/s", ""),
    ("held_after_jobs_s", "  finished after it is released", "jobs/s", ""),
    ("held_during_vs_before", "  ratio during / before", "x", ">= 0.9"),
    ("held_max_backlog_s", "  most runnable backlog, in seconds of arrivals", "s", "<= 2"),
    ("held_during_probe_max_ms", "  slowest claim-like index probe during the hold", "ms", ""),
    ("storyboard_makespan_s", "storyboard makespan, 30 shots, cap 3, 1 worker", "s", ""),
    ("storyboard_ideal_s", "  ideal: ceil(30 / 3) x upstream latency", "s", ""),
    ("storyboard_makespan_ratio", "  ratio makespan / ideal, worker concurrency 3", "x", "<= 1.1"),
    ("storyboard_max_inflight", "  most upstream calls in flight", "", "<= 3"),
    (
        "storyboard_c10_makespan_ratio",
        "  ratio makespan / ideal, worker concurrency 10",
        "x",
        "<= 1.1",
    ),
    ("storyboard_c10_max_inflight", "  most upstream calls in flight, concurrency 10", "", "<= 3"),
    (
        "fleet_makespan_s",
        "fleet makespan, 10 projects x 6 shots, cap 3, 2 workers x 3 (median of 3)",
        "s",
        "",
    ),
    ("fleet_ideal_s", "  ideal: ceil(60 / 6) x upstream latency", "s", ""),
    ("fleet_makespan_ratio", "  ratio makespan / ideal, 2 worker processes", "x", "<= 1.1"),
    ("fleet_max_inflight", "  most upstream calls in flight (the fleet's 6 slots)", "", "<= 6"),
    (
        "rate_limit_makespan_s",
        "rate-limited makespan, 200 shots, IMAGE_RATE_LIMIT=20/s, 2 workers x 10",
        "s",
        "",
    ),
    ("rate_limit_ideal_s", "  ideal: 200 / 20 per second", "s", ""),
    ("rate_limit_makespan_ratio", "  ratio makespan / ideal", "x", ""),
    ("rate_limit_guarded_ideal_s", "  ideal with the service's 1.25 s windows", "s", ""),
    ("rate_limit_vs_guarded_ideal", "  ratio makespan / that ideal", "x", "<= 1.1"),
    ("rate_limit_max_per_second", "  most upstream calls started in one second", "", "<= 20"),
    (
        "adaptive_goodput_ratio",
        "adaptive rate, quota 8/s, 3/s, 12/s: goodput / quota, no IMAGE_RATE_LIMIT",
        "x",
        ">= 0.9",
    ),
    ("adaptive_429_share", "  429s / upstream calls", "", "<= 0.05"),
    ("adaptive_p1_goodput_ratio", "  goodput / quota, 8/s phase", "x", ""),
    ("adaptive_p2_goodput_ratio", "  goodput / quota, 3/s phase", "x", ""),
    ("adaptive_p3_goodput_ratio", "  goodput / quota, 12/s phase", "x", ""),
    (
        "adaptive_c20_goodput_ratio",
        "  goodput / quota, adaptive under IMAGE_RATE_LIMIT=20/s",
        "x",
        "",
    ),
    ("adaptive_c20_429_share", "  429s / calls, adaptive under 20/s", "", ""),
    ("adaptive_fixed8_goodput_ratio", "  goodput / quota, fixed IMAGE_RATE_LIMIT=8/s", "x", ""),
    ("adaptive_fixed8_429_share", "  429s / calls, fixed 8/s", "", ""),
    (
        "fairness_user_small_rounds_max",
        "fair turns: 150 shots, then 3 users x 3 shots 1 s later: slowest small project",
        "rounds",
        "<= 2",
    ),
    (
        "fairness_user_makespan_ratio",
        "  ratio makespan / ideal ceil(159 / 10) x latency",
        "x",
        "<= 1.1",
    ),
    (
        "fairness_none_small_rounds_max",
        "  slowest small project, STORYBOARD_FAIRNESS=none",
        "rounds",
        "",
    ),
    ("fairness_none_makespan_ratio", "  ratio makespan / ideal, STORYBOARD_FAIRNESS=none", "x", ""),
    ("worker_rss_mb", "worker RSS, 100k queued", "MiB", "<= 80"),
    ("crash_pg_acknowledged", "crash test: acknowledged enqueues, private Postgres", "jobs", ""),
    ("crash_pg_lost", "  lost after kill -9 of the postmaster (fsync on)", "jobs", "0"),
    ("crash_bullmq_acknowledged", "  BullMQ: acknowledged adds, Redis AOF everysec", "jobs", ""),
    ("crash_bullmq_lost", "  BullMQ: lost after kill -9 of redis-server", "jobs", ""),
    ("crash_bullmq_error", "  BullMQ crash test not run", "", ""),
)

# The figures compared with each peer, ours / theirs: (their key, our key, label). Ours is the
# peers scenario's own measurement (`peers_ours`, taken in rounds interleaved with theirs) when
# there is one, else the figure of our scenario under that key.
PEER_KEYS: tuple[tuple[str, str, str], ...] = (
    ("throughput_jobs_s", "throughput_jobs_s", "no-op drain, fastest setting (jobs/s)"),
    ("throughput_default_jobs_s", "throughput_c3_jobs_s", "no-op drain, its defaults (jobs/s)"),
    ("throughput_100k_jobs_s", "throughput_100k_jobs_s", "no-op drain, big round (jobs/s)"),
    ("batch_enqueue_jobs_s", "batch_enqueue_jobs_s", "batch enqueue (jobs/s)"),
    ("single_enqueue_c50_jobs_s", "single_enqueue_c50_jobs_s", "enqueue, 50 at once (jobs/s)"),
    ("latency_p50_ms", "latency_p50_ms", "pickup p50, fastest setting (ms)"),
    ("latency_p99_ms", "latency_p99_ms", "pickup p99, fastest setting (ms)"),
    ("latency_default_p50_ms", "latency_p50_ms", "pickup p50, its defaults (ms)"),
    ("latency_default_p99_ms", "latency_p99_ms", "pickup p99, its defaults (ms)"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return (
            f"{value:,.3f}"
            if abs(value) < 10
            else f"{value:,.0f}"
            if abs(value) >= 100
            else f"{value:.1f}"
        )
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: dict[str, Any]) -> list[list[str]]:
    """Rows of [figure, value, unit, target] for what was measured."""
    rows = [["figure", "value", "unit", "target"]]
    for key, label, unit, target in ROWS:
        if key in results:
            rows.append([label, _fmt(results[key]), unit, target])
    ours_here = results.get("peers_ours", {})
    if ours_here:
        rows.append(
            [
                f"pgqueue in the peers' rounds (concurrency {ours_here.get('concurrency')})",
                _fmt(ours_here.get("throughput_jobs_s")),
                "jobs/s",
                "",
            ]
        )
        for key, label in (
            ("throughput_c3_jobs_s", "  at its default concurrency 3"),
            ("throughput_100k_jobs_s", f"  big round, {ours_here.get('big_jobs')} jobs"),
            ("latency_p50_ms", "  pickup p50"),
            ("latency_p99_ms", "  pickup p99"),
        ):
            if key in ours_here:
                rows.append([label, _fmt(ours_here[key]), "ms" if "ms" in key else "jobs/s", ""])
    for name, peer in sorted(results.get("peers", {}).items()):
        if "error" in peer:
            # A peer that failed late (e.g. the big round) keeps the figures it had.
            rows.append([f"{name}: failed", peer["error"][:60], "", ""])
            if "throughput_jobs_s" not in peer:
                continue
        for key, our_key, label in PEER_KEYS:
            if key not in peer:
                continue
            ours, theirs = ours_here.get(our_key, results.get(our_key)), peer[key]
            ratio = f"ours/theirs {ours / theirs:.2f}" if ours and theirs else ""
            rows.append([f"{name} {peer.get('version', '')}: {label}", _fmt(theirs), ratio, ""])
            if key == "throughput_jobs_s" and "throughput_ratio_median" in peer:
                by_round = ", ".join(f"{r:.2f}" for r in peer["throughput_ratio_by_round"])
                rows.append(
                    [
                        f"{name}: ours/theirs round by round ({by_round}), median",
                        _fmt(peer["throughput_ratio_median"]),
                        "x",
                        "",
                    ]
                )
    return rows


def render_text(rows: list[list[str]]) -> str:
    """An aligned plain-text table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(rows: list[list[str]], results: dict[str, Any]) -> str:
    """The table as Markdown, headed by the date and the machine."""
    machine = results.get("machine", {})
    head = (
        f"# pgqueue benchmark\n\n{results.get('date', '')}: {machine.get('cpu_count')} x "
        f"{machine.get('cpu_model')}, Python {machine.get('python')}, PostgreSQL "
        f"{machine.get('postgres')} ({results.get('server', '')}). `python -m bench "
        f"{' '.join(results.get('argv', []))}`\n\n"
    )
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]
    ]
    return head + "\n".join(lines) + "\n"


def write(results: dict[str, Any]) -> str:
    """Write results.json and results.md; return the text table."""
    rows = table(results)
    RESULTS_JSON.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    RESULTS_MD.write_text(render_markdown(rows, results))
    return render_text(rows)
