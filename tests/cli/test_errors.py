"""The command line's refusals: no DATABASE_URL, no (or an older) schema, an unreachable
database, bad arguments. One line on stderr each, no traceback, the documented exit status."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from pgqueue import schema
from tests.cli.conftest import run_cli
from tests.support import db
from tests.support.settings import child_env

# Every command that reads or changes pgqueue's data, with valid arguments.
COMMANDS = [
    ("jobs",),
    ("jobs", "--json"),
    ("show", "1"),
    ("retry", "1"),
    ("retry", "--failed"),
    ("cancel", "1"),
    ("queues",),
    ("pause", "default"),
    ("resume", "default"),
    ("workers",),
    ("purge", "--older-than", "7d"),
]


def _one_line_without_traceback(stderr: str) -> None:
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("command", [*COMMANDS, ("dashboard",)])
def test_every_command_needs_database_url(command: tuple[str, ...]) -> None:
    done = run_cli(None, *command, env={"PGQUEUE_DASHBOARD_TOKEN": "secret"})
    assert done.returncode == 2
    _one_line_without_traceback(done.stderr)
    assert "DATABASE_URL is not set" in done.stderr


async def test_a_database_without_the_schema_names_the_command_that_fixes_it(
    empty_url: str,
) -> None:
    for command in COMMANDS:
        done = run_cli(empty_url, *command)
        assert done.returncode == 2, (command, done.stderr)
        _one_line_without_traceback(done.stderr)
        assert "no pgqueue schema" in done.stderr
        assert "python -m pgqueue migrate" in done.stderr
        assert done.stdout == ""
    dashboard = run_cli(empty_url, "dashboard", env={"PGQUEUE_DASHBOARD_TOKEN": "secret"})
    assert dashboard.returncode == 2 and "python -m pgqueue migrate" in dashboard.stderr
    # The schema commands still work there: they are how it gets fixed.
    assert run_cli(empty_url, "schema-version").stdout.strip() == "0"


async def test_an_older_schema_says_so_and_names_the_command_that_fixes_it(
    empty_url: str,
) -> None:
    conn = await asyncpg.connect(empty_url)
    try:
        await schema.upgrade(conn, to=schema.LATEST - 1)
    finally:
        await conn.close()
    for command in (("jobs",), ("workers",), ("show", "1")):
        done = run_cli(empty_url, *command)
        assert done.returncode == 2, done.stderr
        _one_line_without_traceback(done.stderr)
        assert f"version {schema.LATEST - 1}, older than" in done.stderr
        assert "python -m pgqueue migrate" in done.stderr
    assert "applied version" in run_cli(empty_url, "migrate").stdout
    assert run_cli(empty_url, "jobs").returncode == 0


def test_an_unreachable_database_exits_1(admin_url: str) -> None:
    absent = db.with_database(admin_url, db.unique_name("absent"))
    for command in (("jobs",), ("workers",)):
        done = run_cli(absent, *command)
        assert done.returncode == 1
        _one_line_without_traceback(done.stderr)
        assert "does not exist" in done.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("jobs", "--limit", "0"),
        ("jobs", "--limit", "many"),
        ("jobs", "--state", "waiting"),
        ("jobs", "--payload", "[1, 2]"),
        ("jobs", "--payload", "{not json"),
        ("show", "abc"),
        ("show",),
        ("cancel",),
        ("cancel", "-3"),
        ("pause",),
        ("purge", "--older-than", "later"),
        ("nonsense",),
    ],
)
def test_bad_arguments_exit_2_before_connecting(command: tuple[str, ...]) -> None:
    done = run_cli("postgresql://nobody@127.0.0.1:1/none", *command)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "usage:" in done.stderr


@pytest.mark.parametrize("command", [("jobs",), ("jobs", "--json"), ("show", "1"), ("queues",)])
async def test_a_reader_that_goes_away_ends_the_command_quietly(
    db_url: str, pool: asyncpg.Pool, command: tuple[str, ...]
) -> None:
    # `python -m pgqueue jobs | head`: once head has what it wants and exits, the command's
    # next write finds the pipe closed. Here the pipe is closed before the command starts.
    await pool.execute("SELECT pgqueue.enqueue('k', '{}'::jsonb)")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pgqueue", *command],
            env={**child_env(), "DATABASE_URL": db_url},
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 0 and done.stderr == "", done.stderr
