"""Real worker processes: `python -m pgqueue.worker`, started, signalled, killed, restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.acceptance.handlers import SIDE_TABLES
from tests.dbutil import ROOT

WORKER_ENV = {
    "PGQUEUE_LEASE_S": "1",
    "PGQUEUE_POLL_INTERVAL_S": "0.5",
    "PGQUEUE_RETRY_DELAY_MS": "50",
    "PGQUEUE_SHUTDOWN_GRACE_S": "5",
}

StartWorker = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
async def side_tables(pool: asyncpg.Pool) -> None:
    """The tables the acceptance handlers write to."""
    await pool.execute(SIDE_TABLES)


@pytest.fixture
def start_worker(db_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    """Start `python -m pgqueue.worker tests.acceptance.handlers:registry` processes.

    `start_worker(*args, env=None)` returns the Popen; every process still alive at the end of
    the test is killed. Each one's output goes to a log file in tmp_path (shown on failure).
    """
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(
        *args: str, env: dict[str, str] | None = None, database_url: str | None = None
    ) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(processes)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pgqueue.worker",
                    "tests.acceptance.handlers:registry",
                    *args,
                ],
                cwd=ROOT,
                env={
                    **os.environ,
                    **WORKER_ENV,
                    "DATABASE_URL": database_url or db_url,
                    **(env or {}),
                },
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        processes.append((process, log))
        return process

    yield start
    for process, log in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        sys.stderr.write(
            f"--- {log.name} (exit {process.returncode}) ---\n{log.read_text()[-4000:]}\n"
        )
