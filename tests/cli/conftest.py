"""Fixtures of the command-line tests: `python -m pgqueue ...` as a subprocess on the test's
database, and a real worker process running `tests.cli.handlers`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from tests.support import db, processes
from tests.support.processes import Process, Processes
from tests.support.settings import WORKER_ENV, child_env

HANDLERS = "tests.cli.handlers:registry"

Cli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    url: str | None, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m pgqueue <args>` with DATABASE_URL=`url` (None: unset), to completion."""
    environment = {k: v for k, v in child_env().items() if k != "DATABASE_URL"}
    if url is not None:
        environment["DATABASE_URL"] = url
    environment.update(env or {})
    return processes.completed([sys.executable, "-m", "pgqueue", *args], env=environment)


@pytest.fixture
def cli(db_url: str) -> Cli:
    """`cli(*args)`: the command on the test's (migrated) database; it must exit 0."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = run_cli(db_url, *args, env=env)
        assert done.returncode == 0, f"{args} exited {done.returncode}: {done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return run


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The objects of a `--json` output, one per line."""
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def start_worker(db_url: str, processes: Processes) -> Callable[..., Process]:
    """`start_worker(*args)`: `python -m pgqueue.worker tests.cli.handlers:registry <args>` on
    the test's database, with the tests' fast settings (killed at the test's end)."""

    def start(*args: str) -> Process:
        return processes.worker(HANDLERS, *args, env={"DATABASE_URL": db_url, **WORKER_ENV})

    return start


@pytest.fixture
async def empty_url(admin_url: str) -> AsyncIterator[str]:
    """A database without pgqueue's schema."""
    name = db.unique_name("cli")
    await db.create_database(admin_url, name)
    yield db.with_database(admin_url, name)
    await db.drop_database(admin_url, name)
