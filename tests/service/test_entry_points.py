"""The service's commands: without DATABASE_URL they say so; `worker` is pgqueue's daemon."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from pgqueue import JobState, Queue
from service.payloads import JOB_KIND
from tests.support import processes
from tests.support.settings import SERVICE_VARIABLES, WORKER_ENV


def _run(*command: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k != "DATABASE_URL" and k not in SERVICE_VARIABLES and not k.startswith("PGQUEUE_")
    }
    return processes.completed([sys.executable, *command], env={**base, **env})


@pytest.mark.parametrize(
    "command",
    [
        ("-m", "service", "api"),
        ("-m", "service", "create-token", "--user", "x"),
        ("-m", "service", "worker"),
        ("-m", "pgqueue.worker", "service.jobs:registry"),
    ],
    ids=lambda c: " ".join(c[1:]),
)
def test_a_missing_database_url_is_named(command: tuple[str, ...]) -> None:
    done = _run(*command)
    assert done.returncode != 0
    assert "DATABASE_URL" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


async def test_service_worker_is_the_pgqueue_daemon_on_the_storyboard_queue(
    db_url: str, queue: Queue
) -> None:
    # A job its handler fails at once (no upstream needed), on the service's queue, and one
    # on the default queue that a worker of the storyboard queue must not take.
    payload = {"project_id": "nope", "shot_number": 1, "generation": 1}
    mine = await queue.enqueue(JOB_KIND, payload, queue="storyboards")
    other = await queue.enqueue(JOB_KIND, payload)
    done = await asyncio.to_thread(
        _run,
        "-m",
        "service",
        "worker",
        "--burst",
        DATABASE_URL=db_url,
        STORYBOARD_QUEUE="storyboards",
        **WORKER_ENV,
    )
    assert done.returncode == 0, done.stderr
    ran = await queue.get(mine.id)
    assert ran is not None and ran.state == JobState.FAILED and ran.attempts == 1
    assert ran.last_error is not None and "is not a UUID" in ran.last_error
    left = await queue.get(other.id)
    assert left is not None and left.state == JobState.QUEUED
