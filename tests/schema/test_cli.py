"""The migration commands without DATABASE_URL (or with a bad one): one clear line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import db, processes


def run_without_database_url(*command: str) -> subprocess.CompletedProcess[str]:
    """Run `python <command>` from the repository root with DATABASE_URL unset."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return processes.completed([sys.executable, *command], env=env)


@pytest.mark.parametrize(
    "command",
    [
        ("-m", "pgqueue", "migrate"),
        ("-m", "pgqueue", "migrate", "--downgrade-to", "0"),
        ("-m", "pgqueue", "schema-version"),
    ],
)
def test_pgqueue_migrate_needs_database_url(command: tuple[str, ...]) -> None:
    done = run_without_database_url(*command)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "DATABASE_URL" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_alembic_needs_database_url() -> None:
    done = run_without_database_url("-m", "alembic", "upgrade", "head")
    output = done.stdout + done.stderr  # alembic prints its "FAILED: ..." line on stdout
    assert done.returncode != 0
    assert "FAILED: DATABASE_URL is not set" in output, output
    assert "Traceback" not in output
    # No placeholder server to fall back on: nothing was migrated anywhere.
    assert "Running upgrade" not in output


def test_an_unreachable_database_is_one_line(admin_url: str) -> None:
    url = db.with_database(admin_url, db.unique_name("absent"))
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate"],
        cwd=processes.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "does not exist" in done.stderr


def test_out_of_range_versions_are_refused_before_connecting() -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate", "--to", "999"],
        cwd=processes.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "--to must be within 0.." in done.stderr
