"""Real worker processes: `python -m pgqueue.worker`, started, signalled, killed, restarted."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from tests.acceptance.handlers import SIDE_TABLES
from tests.support import settings
from tests.support.processes import Process, Processes

REGISTRY = "tests.acceptance.handlers:registry"

StartWorker = Callable[..., Process]


@pytest.fixture
async def side_tables(pool: asyncpg.Pool) -> None:
    """The tables the acceptance handlers write to."""
    await pool.execute(SIDE_TABLES)


@pytest.fixture
def start_worker(db_url: str, processes: Processes) -> StartWorker:
    """`start_worker(*args, env=None, database_url=None)` starts a worker of the acceptance
    handlers (fast settings, the test's database) and returns its `Process`.

    The `processes` harness kills what is left at the end and shows the logs on failure.
    """

    def start(
        *args: str, env: dict[str, str] | None = None, database_url: str | None = None
    ) -> Process:
        return processes.worker(
            REGISTRY,
            *args,
            env={**settings.WORKER_ENV, "DATABASE_URL": database_url or db_url, **(env or {})},
        )

    return start
