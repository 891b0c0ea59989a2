"""The operator's command line, one test per command: `python -m pgqueue ...` as a subprocess
on a real database, with real jobs run by a real worker process where a command needs them."""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import timedelta

import asyncpg

from pgqueue import JobState, Queue
from tests.cli.conftest import Cli, json_lines, run_cli
from tests.support.processes import Process
from tests.support.wait import wait_for

StartWorker = Callable[..., Process]
JOB_FIELDS = {
    "id",
    "queue",
    "kind",
    "state",
    "attempts",
    "max_attempts",
    "last_error",
    "created_at",
}


async def _state(queue: Queue, job_id: int) -> JobState:
    job = await queue.get(job_id)
    assert job is not None
    return job.state


async def _reaches(queue: Queue, job_id: int, state: JobState) -> bool:
    return await _state(queue, job_id) is state


async def test_jobs_lists_newest_first_filtered_by_queue_state_kind_and_payload(
    queue: Queue, cli: Cli
) -> None:
    first = await queue.enqueue("cli.ok", {"project_id": "p1", "shot": 1})
    second = await queue.enqueue("cli.fail", {"project_id": "p2"}, queue="other")
    third = await queue.enqueue("cli.ok", {"project_id": "p1", "shot": 2})
    await queue.cancel(third.id)

    table = cli("jobs").stdout.splitlines()
    assert table[0].split() == [
        "ID",
        "QUEUE",
        "KIND",
        "STATE",
        "ATTEMPTS",
        "CREATED",
        "LAST",
        "ERROR",
    ]
    assert [int(line.split()[0]) for line in table[1:]] == [third.id, second.id, first.id]
    assert table[1].split()[1:5] == ["default", "cli.ok", "cancelled", "0/3"]

    every = json_lines(cli("jobs", "--json"))
    assert [job["id"] for job in every] == [third.id, second.id, first.id]
    assert all(set(job) >= JOB_FIELDS for job in every)
    assert every[0]["last_error"] == "cancelled before it ran"

    def ids(*filters: str) -> list[int]:
        return [job["id"] for job in json_lines(cli("jobs", "--json", *filters))]

    assert ids("--queue", "other") == [second.id]
    assert ids("--state", "queued") == [second.id, first.id]
    assert ids("--kind", "cli.ok") == [third.id, first.id]
    assert ids("--payload", '{"project_id": "p1"}') == [third.id, first.id]
    assert ids("--payload", '{"project_id": "p1", "shot": 1}') == [first.id]
    assert ids("--kind", "cli.ok", "--state", "queued") == [first.id]
    assert ids("--limit", "1") == [third.id]
    assert ids("--before", str(second.id)) == [first.id]
    assert cli("jobs", "--queue", "nowhere").stdout.strip() == "no jobs match"


async def test_show_prints_a_job_with_its_attempts(
    queue: Queue, cli: Cli, db_url: str, start_worker: StartWorker
) -> None:
    job = await queue.enqueue("cli.flaky", {"fail_times": 2}, max_attempts=5)
    start_worker()
    await wait_for(lambda: _reaches(queue, job.id, JobState.SUCCEEDED), timeout=30)

    shown = cli("show", str(job.id)).stdout
    assert "state       succeeded" in shown and "attempts    3 of 5" in shown
    assert "last error" not in shown  # a succeeded job shows no current error
    history = shown.split("\n\n", 1)[1].splitlines()
    assert history[0].split() == ["ATTEMPT", "OUTCOME", "WORKER", "STARTED", "DURATION", "ERROR"]
    assert history[1].split()[:2] == ["1", "retried"]
    assert history[1].endswith("RuntimeError: boom on attempt 1")
    assert history[2].split()[:2] == ["2", "retried"]
    assert history[2].endswith("RuntimeError: boom on attempt 2")
    assert history[3].split()[:2] == ["3", "succeeded"]

    (detail,) = json_lines(cli("show", str(job.id), "--json"))
    assert set(detail) >= JOB_FIELDS
    assert detail["state"] == "succeeded" and detail["last_error"] is None
    attempts = detail["attempt_history"]
    assert [a["outcome"] for a in attempts] == ["retried", "retried", "succeeded"]
    assert "boom on attempt 1" in attempts[0]["error"]
    assert "boom on attempt 2" in attempts[1]["error"]
    assert attempts[2]["error"] is None
    for attempt in attempts:
        assert attempt["worker_id"] and attempt["started_at"] and attempt["finished_at"]
        assert attempt["duration_s"] >= 0

    missing = run_cli(db_url, "show", "999999")
    assert missing.returncode == 2 and "no job has id 999999" in missing.stderr


async def test_retry_puts_failed_jobs_back_with_a_fresh_budget(
    queue: Queue, cli: Cli, db_url: str, start_worker: StartWorker
) -> None:
    failing = [await queue.enqueue("cli.fail", {}, max_attempts=1) for _ in range(2)]
    other_kind = await queue.enqueue("cli.flaky", {"fail_times": 9}, max_attempts=1)
    done = await queue.enqueue("cli.ok", {})
    worker = start_worker("--burst")
    await worker.exited(timeout=30, expect=0)
    for job in (*failing, other_kind):
        assert await _state(queue, job.id) is JobState.FAILED
    assert await _state(queue, done.id) is JobState.SUCCEEDED

    assert cli("retry", str(failing[0].id)).stdout.strip() == "retried 1 job"
    retried = await queue.get(failing[0].id)
    assert retried is not None and retried.state is JobState.QUEUED and retried.attempts == 0

    assert cli("retry", "--failed", "--kind", "cli.fail").stdout.strip() == "retried 1 job"
    assert await _state(queue, failing[1].id) is JobState.QUEUED
    assert await _state(queue, other_kind.id) is JobState.FAILED
    assert cli("retry", "--failed").stdout.strip() == "retried 1 job"
    assert cli("retry", "--failed").stdout.strip() == "retried 0 jobs"

    # A job in another state is refused (1); an unknown id is a bad argument (2).
    refused = run_cli(db_url, "retry", str(done.id))
    assert refused.returncode == 1 and "only failed or cancelled" in refused.stderr
    unknown = run_cli(db_url, "retry", "999999")
    assert unknown.returncode == 2 and "no job has id 999999" in unknown.stderr
    for bad in (("retry",), ("retry", "1", "--failed"), ("retry", "1", "--queue", "q")):
        assert run_cli(db_url, *bad).returncode == 2


async def test_cancel_cancels_queued_jobs_at_once_and_running_ones_within_a_heartbeat(
    queue: Queue, cli: Cli, db_url: str, start_worker: StartWorker
) -> None:
    waiting = await queue.enqueue("cli.ok", {}, queue="idle")  # no worker claims from "idle"
    blocking = await queue.enqueue("cli.block", {})
    start_worker()
    await wait_for(lambda: _reaches(queue, blocking.id, JobState.RUNNING), timeout=30)

    said = cli("cancel", str(waiting.id), str(blocking.id)).stdout
    assert f"job {blocking.id} is running" in said
    assert said.splitlines()[-1] == "cancelled 1 job, 1 more within a heartbeat"
    assert await _state(queue, waiting.id) is JobState.CANCELLED
    await wait_for(lambda: _reaches(queue, blocking.id, JobState.CANCELLED), timeout=30)
    (attempt,) = await queue.attempts(blocking.id)
    assert attempt.outcome == "cancelled"

    again = run_cli(db_url, "cancel", str(blocking.id), "999999")
    assert again.returncode == 2 and "no job has id 999999" in again.stderr


async def test_queues_pause_and_resume(queue: Queue, cli: Cli, start_worker: StartWorker) -> None:
    await queue.enqueue("cli.ok", {})
    await queue.enqueue("cli.ok", {}, queue="other")
    await queue.enqueue("cli.ok", {}, queue="other", delay=timedelta(hours=1))
    table = cli("queues").stdout.splitlines()
    assert table[0].split()[:8] == [
        "QUEUE",
        "PAUSED",
        "WAITING",
        "DELAYED",
        "ACTIVE",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert table[2].split()[:4] == ["other", "-", "1", "1"]
    counts = {q["queue"]: q for q in json_lines(cli("queues", "--json"))}
    assert set(counts) == {"default", "other"}
    assert counts["other"]["waiting"] == 1 and counts["other"]["delayed"] == 1
    for name in ("paused", "waiting", "delayed", "active", "completed", "failed", "cancelled"):
        assert name in counts["default"]

    assert "paused queue default" in cli("pause", "default").stdout
    paused = {q["queue"]: q["paused"] for q in json_lines(cli("queues", "--json"))}
    assert paused == {"default": True, "other": False}
    # A worker leaves the paused queue's job alone and drains the other.
    worker = start_worker("--burst", "--queue", "default", "--queue", "other")
    await worker.exited(timeout=30, expect=0)
    counts = {q["queue"]: q for q in json_lines(cli("queues", "--json"))}
    assert counts["default"]["waiting"] == 1 and counts["other"]["completed"] == 1

    assert "resumed queue default" in cli("resume", "default").stdout
    worker = start_worker("--burst")
    await worker.exited(timeout=30, expect=0)
    counts = {q["queue"]: q for q in json_lines(cli("queues", "--json"))}
    assert counts["default"]["paused"] is False and counts["default"]["completed"] == 1


async def test_workers_lists_the_live_workers_and_marks_a_killed_one_stale(
    queue: Queue, cli: Cli, start_worker: StartWorker
) -> None:
    assert cli("workers").stdout.strip() == "no workers"
    blocking = await queue.enqueue("cli.block", {})
    worker = start_worker("--concurrency", "2", "--queue", "default", "--queue", "extra")
    await wait_for(lambda: _reaches(queue, blocking.id, JobState.RUNNING), timeout=30)
    job = await queue.get(blocking.id)
    assert job is not None and job.worker_id is not None

    def listed() -> dict[str, object] | None:
        rows = json_lines(cli("workers", "--json"))
        return rows[0] if rows and rows[0]["slots_in_use"] == 1 else None

    row = await wait_for(listed, timeout=30)
    assert row["id"] == job.worker_id and row["alive"] is True and row["stale"] is False
    assert row["queues"] == ["default", "extra"] and row["concurrency"] == 2
    assert row["pid"] == worker.pid and row["host"] and row["last_heartbeat"]
    table = cli("workers").stdout.splitlines()
    assert table[0].split() == ["ID", "HOST", "PID", "QUEUES", "SLOTS", "HEARTBEAT", "STATUS"]
    assert table[1].split()[3:5] == ["default,extra", "1/2"] and table[1].endswith("alive")

    # Killed, it cannot remove its row: the row goes stale once its lease-long expiry passes.
    worker.send_signal(signal.SIGKILL)

    def stale() -> bool:
        rows = json_lines(cli("workers", "--json"))
        return len(rows) == 1 and rows[0]["stale"] is True

    await wait_for(stale, timeout=30)
    assert cli("workers").stdout.splitlines()[1].endswith("stale")

    # A worker that exits cleanly takes its row away.
    clean = start_worker("--queue", "elsewhere")
    await wait_for(lambda: len(json_lines(cli("workers", "--json"))) == 2, timeout=30)
    clean.send_signal(signal.SIGTERM)
    await clean.exited(timeout=30, expect=0)
    rows = json_lines(cli("workers", "--json"))
    assert [r["queues"] for r in rows] == [["default", "extra"]]


async def test_purge_deletes_finished_jobs_older_than_the_age_with_their_attempts(
    queue: Queue, cli: Cli, db_url: str, pool: asyncpg.Pool, start_worker: StartWorker
) -> None:
    flaky = await queue.enqueue("cli.flaky", {"fail_times": 1})
    failed = await queue.enqueue("cli.fail", {}, max_attempts=1)
    live = await queue.enqueue("cli.ok", {}, queue="idle")
    start_worker()
    await wait_for(lambda: _reaches(queue, flaky.id, JobState.SUCCEEDED), timeout=30)
    await wait_for(lambda: _reaches(queue, failed.id, JobState.FAILED), timeout=30)

    assert cli("purge", "--older-than", "1h").stdout.startswith("purged 0 jobs")
    said = cli("purge", "--older-than", "0s", "--state", "succeeded").stdout
    assert said.startswith("purged 1 job (succeeded)")
    assert await queue.get(flaky.id) is None
    assert (
        await pool.fetchval("SELECT count(*) FROM pgqueue.attempts WHERE job_id = $1", flaky.id)
        == 0
    )
    assert cli("purge", "--older-than", "0s").stdout.startswith("purged 1 job")
    assert await queue.get(failed.id) is None
    assert await queue.get(live.id) is not None  # never a job that has not finished

    for bad in ("soon", "-5", "1x"):
        done = run_cli(db_url, "purge", "--older-than", bad)
        assert done.returncode == 2 and "--older-than" in done.stderr
    assert run_cli(db_url, "purge", "--older-than", "1d", "--state", "queued").returncode == 2
    assert run_cli(db_url, "purge").returncode == 2
