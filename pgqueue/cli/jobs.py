"""Jobs from the command line: `jobs` (list), `show ID` (with its attempts), `retry`, `cancel`,
`purge`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import asyncpg

from pgqueue import errors, models, reports, store
from pgqueue.cli.common import (
    CommandError,
    Exit,
    ago,
    duration,
    error_line,
    json_line,
    seconds_text,
    table,
)
from pgqueue.queue import Queue

MAX_LIMIT = 1000  # jobs one listing prints at most
STATES = [state.value for state in models.JobState]
FINISHED_STATES = [state.value for state in models.JobState if state.is_terminal]
# What `jobs --json` and `show --json` print of a job: everything but the fencing token.
JOB_FIELDS = tuple(f for f in models.Job._fields if f not in ("lease_token", "is_new"))


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `jobs`, `show`, `retry`, `cancel` and `purge`."""
    listing = commands.add_parser("jobs", help="list jobs, newest first")
    listing.add_argument("--queue", metavar="Q", help="only this queue's jobs")
    listing.add_argument("--state", choices=STATES, help="only jobs in this state")
    listing.add_argument("--kind", metavar="K", help="only jobs of this kind")
    listing.add_argument(
        "--payload",
        metavar="JSON",
        type=_json_object,
        help='only jobs whose payload contains this JSON object, e.g. \'{"project_id": "p1"}\'',
    )
    listing.add_argument("--before", metavar="ID", type=_job_id, help="only jobs older than ID")
    listing.add_argument("--limit", metavar="N", type=_limit, default=50, help="(default 50)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=list_jobs)

    show = commands.add_parser("show", help="one job with its attempts")
    show.add_argument("id", type=_job_id)
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(handler=show_job)

    retry = commands.add_parser(
        "retry", help="failed or cancelled jobs back to queued with a fresh attempt budget"
    )
    retry.add_argument("ids", nargs="*", type=_job_id, metavar="ID")
    retry.add_argument("--failed", action="store_true", help="every failed job (of the filter)")
    retry.add_argument("--cancelled", action="store_true", help="with --failed: cancelled too")
    retry.add_argument("--queue", metavar="Q", help="with --failed: only this queue's")
    retry.add_argument("--kind", metavar="K", help="with --failed: only this kind's")
    retry.set_defaults(handler=retry_jobs, check=_check_retry)

    cancel = commands.add_parser(
        "cancel", help="cancel jobs: queued ones at once, running ones within a heartbeat"
    )
    cancel.add_argument("ids", nargs="+", type=_job_id, metavar="ID")
    cancel.set_defaults(handler=cancel_jobs)

    purge = commands.add_parser("purge", help="delete finished jobs older than a given age")
    purge.add_argument(
        "--older-than",
        metavar="DURATION",
        type=duration,
        required=True,
        help="finished longer ago than this: 7d, 12h, 1h30m, 90s",
    )
    purge.add_argument(
        "--state",
        choices=FINISHED_STATES,
        action="append",
        help="only jobs in this state (repeatable; default: every finished state)",
    )
    purge.set_defaults(handler=purge_jobs)


async def list_jobs(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """`jobs`: newest first, filtered. A payload filter searches a bounded window of job ids
    (payloads have no index), as the dashboard does, and says where the next window starts."""
    state = None if args.state is None else models.JobState(args.state)
    older: int | None = None
    if args.payload is None:
        jobs = await store.list_jobs_matching(
            conn,
            queue=args.queue,
            state=state,
            kind=args.kind,
            limit=args.limit,
            before=args.before,
        )
    else:
        found = reports.JobFilter(args.queue, state, args.kind, args.payload)
        jobs, older = await store.list_jobs_containing(
            conn, found, limit=args.limit, before=args.before
        )
    if older is not None and len(jobs) < args.limit:
        print(
            f"(searched {store.SEARCH_WINDOW_IDS:,} job ids; for older ones: --before {older})",
            file=sys.stderr,
        )
    if args.json:
        for job in jobs:
            print(json_line(job_fields(job)))
        return Exit.OK
    rows = [
        (
            job.id,
            job.queue,
            job.kind,
            job.state,
            f"{job.attempts}/{job.max_attempts}",
            job.created_at,
            error_line(job.last_error),
        )
        for job in jobs
    ]
    headers = ("ID", "QUEUE", "KIND", "STATE", "ATTEMPTS", "CREATED", "LAST ERROR")
    print(table(rows, headers) if rows else "no jobs match")
    return Exit.OK


async def show_job(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """`show ID`: the job's facts, then its attempts."""
    queue = Queue(conn)
    job = await queue.get(args.id)
    if job is None:
        raise CommandError(f"error: no job has id {args.id} (retention may have deleted it)")
    attempts = await queue.attempts(job.id)
    if args.json:
        history = [{**attempt_fields(a), "duration_s": a.duration_s} for a in attempts]
        print(json_line({**job_fields(job), "attempt_history": history}))
        return Exit.OK
    facts: list[tuple[str, Any]] = [
        ("id", job.id),
        ("queue", job.queue),
        ("kind", job.kind),
        ("state", job.state.value),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("priority", job.priority),
        ("created", _moment(job.created_at)),
        ("runs at", _moment(job.run_at)),
        ("started", _moment(job.started_at)),
        ("finished", _moment(job.finished_at)),
        ("worker", job.worker_id),
        ("payload", json.dumps(job.payload)),
        ("progress", None if job.progress is None else json.dumps(job.progress)),
        ("result", None if job.result is None else json.dumps(job.result)),
        ("last error", job.last_error),
    ]
    width = max(len(name) for name, _ in facts)
    for name, value in facts:
        if value is not None:
            print(f"{name.ljust(width)}  {value}")
    print()
    if not attempts:
        print("attempts: none yet")
        return Exit.OK
    rows = [
        (
            a.attempt,
            a.outcome,
            a.worker_id,
            a.started_at,
            "-" if a.duration_s is None else seconds_text(a.duration_s),
            error_line(a.error),
        )
        for a in attempts
    ]
    print(table(rows, ("ATTEMPT", "OUTCOME", "WORKER", "STARTED", "DURATION", "ERROR")))
    return Exit.OK


async def retry_jobs(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """`retry ID...` or `retry --failed`: prints how many went back to queued."""
    if args.failed:
        count = await store.retry_ended_badly(
            conn, queue=args.queue, kind=args.kind, include_cancelled=args.cancelled
        )
        print(f"retried {_jobs(count)}")
        return Exit.OK
    queue = Queue(conn)
    status, retried = Exit.OK, 0
    for job_id in args.ids:
        try:
            await queue.retry(job_id)
        except errors.JobNotFound as exc:
            status = Exit.USAGE
            print(f"error: {exc}", file=sys.stderr)
        except errors.JobStateConflict as exc:
            status = max(status, Exit.REFUSED)
            print(f"error: {exc}", file=sys.stderr)
        else:
            retried += 1
    print(f"retried {_jobs(retried)}")
    return status


async def cancel_jobs(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """`cancel ID...`: the library's cancel, one job at a time; says what became of each."""
    queue = Queue(conn)
    status, cancelled, requested = Exit.OK, 0, 0
    for job_id in args.ids:
        job = await queue.cancel(job_id)
        if job is None:
            status = Exit.USAGE
            print(f"error: no job has id {job_id}", file=sys.stderr)
        elif job.state is models.JobState.CANCELLED:
            cancelled += 1
        elif job.state is models.JobState.RUNNING:
            requested += 1
            print(f"job {job_id} is running: its worker cancels it within a heartbeat")
        else:
            status = max(status, Exit.REFUSED)
            print(f"error: job {job_id} already {job.state.value}", file=sys.stderr)
    print(f"cancelled {_jobs(cancelled)}, {requested} more within a heartbeat")
    return status


async def purge_jobs(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """`purge --older-than D [--state S]...`: deletes finished jobs, in short batches."""
    states = [models.JobState(s) for s in args.state or FINISHED_STATES]
    deleted = await store.purge_older_than(conn, states, args.older_than.total_seconds())
    names = ", ".join(s.value for s in states)
    age = seconds_text(args.older_than.total_seconds())
    print(f"purged {_jobs(deleted)} ({names}) finished more than {age} ago")
    return Exit.OK


def job_fields(job: models.Job) -> dict[str, Any]:
    """A job as `--json` prints it."""
    return {name: getattr(job, name) for name in JOB_FIELDS}


def attempt_fields(attempt: reports.Attempt) -> dict[str, Any]:
    """An attempt as `show --json` prints it."""
    return {
        "attempt": attempt.attempt,
        "outcome": attempt.outcome,
        "worker_id": attempt.worker_id,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "error": attempt.error,
    }


def _check_retry(args: argparse.Namespace) -> str | None:
    if args.failed and args.ids:
        return "retry takes job ids or --failed, not both"
    if not args.failed and not args.ids:
        return "retry needs job ids, or --failed [--queue Q] [--kind K]"
    if not args.failed and (args.queue or args.kind or args.cancelled):
        return "--queue, --kind and --cancelled go with --failed"
    return None


def _moment(value: Any) -> str | None:
    return None if value is None else f"{value.isoformat()} ({ago(value)})"


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _job_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a job id: {text!r}") from None
    if not 1 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"not a job id: {text!r}")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_LIMIT}, got {text!r}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. {"project_id": "p1"}')
    return value
