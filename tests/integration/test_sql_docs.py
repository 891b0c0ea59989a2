"""docs/sql.md's examples run as they are written there, through psql."""

from __future__ import annotations

import re
import subprocess

import asyncpg

from tests.support import db
from tests.support.processes import ROOT

PAGE = ROOT / "docs" / "sql.md"
BLOCK = re.compile(r"```sql\n(.*?)```", re.S)


def _blocks() -> list[str]:
    return [re.sub(r"(?m)^  ", "", block) for block in BLOCK.findall(PAGE.read_text())]


def _psql(url: str, script: str) -> str:
    done = subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url],
        input=script, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_enqueue_example_runs_and_does_what_it_says(db_url: str) -> None:
    enqueue, _ = _blocks()
    lines = _psql(db_url, enqueue).split()
    # The job's id, then cancel and retry (each changed it), then its status.
    assert lines[0].isdigit() and lines[1:3] == ["t", "t"], lines
    assert lines[3].startswith("queued|0|"), lines
    again = "SELECT pgqueue.enqueue(kind => 'order.confirm', idempotency_key => 'order:7');\n"
    assert _psql(db_url, again).split() == [lines[0]]  # the key's job, not a new one
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pgqueue.jobs") == 1
        job = await conn.fetchrow("SELECT * FROM pgqueue.jobs")
        assert job["notify_finished"] and job["budget_keys"] == ["customer:9"]
    finally:
        await conn.close()


async def test_the_grants_make_an_enqueue_only_role(db_url: str) -> None:
    _, grants = _blocks()
    role = db.unique_name("producer")
    password = "docs-example-0123"  # the embedded server asks for one
    script = grants.replace("app_producer", role).replace(
        "PASSWORD '...'", f"PASSWORD '{password}'"
    )
    _psql(db_url, script)
    try:
        limited = db.with_user(db_url, role, password)
        out = _psql(limited, "SELECT pgqueue.enqueue('k') > 0;\n")
        assert out.split() == ["t"]
        read_jobs = ["-c", "SELECT * FROM pgqueue.jobs"]
        refused = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", limited, *read_jobs],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "permission denied" in refused.stderr
    finally:
        _psql(db_url, f"DROP OWNED BY {role}; DROP ROLE {role};\n")
