"""Every code example of the docs runs here, as it is written there.

Whole programs (```python blocks with a `__main__`) are the files of `examples/`, shown verbatim
and each run by its own `tests/acceptance/test_<name>_example.py`. Shorter Python fragments run
here against a real database, in a namespace that holds what their prose says they assume (a
`registry`, a `queue`, a `dsn`, an `app`). SQL runs on a migrated database; JSON and YAML parse.
docs/sql.md's SQL (tests/integration/test_sql_docs.py) and docs/api.md's generated client
(tests/service/test_openapi_client.py) run where their setting is made.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from starlette.applications import Starlette

from pgqueue import JobContext, Queue, Registry, Worker, WorkerConfig
from tests.support import docs
from tests.support.docs import DOCS, EXAMPLES
from tests.support.processes import ROOT

RUN_ELSEWHERE = {"sql.md", "api.md"}  # see the module's docstring


def _blocks(language: str) -> list[tuple[str, str]]:
    """(page, code) of every fenced block in that language, in README.md and docs/."""
    pages = ["README.md", *(str(p.relative_to(DOCS)) for p in sorted(DOCS.rglob("*.md")))]
    return [
        (name, code)
        for name in pages
        if name not in RUN_ELSEWHERE
        for code in docs.blocks(name, language)
    ]


def _is_program(code: str) -> bool:
    return 'if __name__ == "__main__":' in code


FRAGMENTS = [(page, code) for page, code in _blocks("python") if not _is_program(code)]


def test_every_program_shown_is_an_example_that_a_test_runs() -> None:
    bodies = {
        path.stem: path.read_text().split('"""', 2)[2].strip() for path in EXAMPLES.glob("*.py")
    }
    programs = [(page, code) for page, code in _blocks("python") if _is_program(code)]
    assert len(programs) >= 5, programs
    for page, code in programs:
        names = [name for name, body in bodies.items() if body == code.strip()]
        assert names, f"{page}: a program that is not one of examples/ verbatim"
        test = ROOT / "tests" / "acceptance" / f"test_{names[0]}_example.py"
        assert test.exists(), f"{page}: examples/{names[0]}.py is shown but nothing runs it"


class _Users:
    """What the dashboard's mounting example calls `my_users`: the host's own user store."""

    async def is_admin_token(self, token: str) -> bool:
        return token == "an admin's token"


async def _run(code: str, namespace: dict[str, Any]) -> None:
    compiled = compile(code, "<docs>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    outcome = eval(compiled, namespace)  # a coroutine when the fragment awaits at top level
    if inspect.iscoroutine(outcome):
        await asyncio.wait_for(outcome, 30)


@pytest.mark.parametrize(("page", "code"), FRAGMENTS, ids=[c[:40] for _, c in FRAGMENTS])
async def test_a_python_fragment_runs(
    page: str, code: str, db_url: str, pool: asyncpg.Pool
) -> None:
    registry = Registry()

    @registry.handler("emails.send")
    async def send(ctx: JobContext) -> None:
        return None

    app = Starlette()
    namespace: dict[str, Any] = {
        "asyncio": asyncio,
        "Worker": Worker,
        "WorkerConfig": WorkerConfig,
        "registry": registry,
        "dsn": db_url,
        "queue": Queue(pool),
        "app": app,
        "my_users": _Users(),
    }
    await _run(code, namespace)
    if "app.mount" in code:  # the dashboard answers where it was mounted
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.get("/dashboard/")
        # Not signed in: its sign-in page, which asks for the token `authorize` checks.
        assert answer.status_code == 401 and "token" in answer.text.lower(), (page, answer)


# Supabase's pg_cron, pg_net and Vault, as far as the drain's scheduling example uses them: the
# schedule runs its command at once, so the command is checked too.
SUPABASE_STANDINS = """
CREATE SCHEMA cron; CREATE SCHEMA net; CREATE SCHEMA vault;
CREATE TABLE vault.decrypted_secrets (name text, decrypted_secret text);
INSERT INTO vault.decrypted_secrets VALUES ('cron_secret', 'a-cron-secret-0123');
CREATE TABLE net.requests (url text, headers jsonb, timeout_milliseconds integer);
CREATE FUNCTION net.http_post(url text, headers jsonb, timeout_milliseconds integer)
RETURNS bigint LANGUAGE sql AS
$$ INSERT INTO net.requests VALUES (url, headers, timeout_milliseconds) RETURNING 1::bigint $$;
CREATE FUNCTION cron.schedule(job_name text, schedule text, command text)
RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN EXECUTE command; RETURN 1; END $$;
"""

SQL = _blocks("sql")


@pytest.mark.parametrize(("page", "code"), SQL, ids=[c[:40] for _, c in SQL])
async def test_a_sql_example_runs(page: str, code: str, db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(SUPABASE_STANDINS)
        await conn.execute(code)
        if "cron.schedule" in code:
            headers = await conn.fetchval("SELECT headers FROM net.requests")
            assert json.loads(headers) == {"Authorization": "Bearer a-cron-secret-0123"}
    finally:
        await conn.close()


def test_json_and_yaml_examples_parse() -> None:
    for page, code in _blocks("json"):
        assert isinstance(json.loads(code), dict), page
    configs = _blocks("yaml")
    assert configs
    for page, code in configs:
        assert "scrape_configs" in yaml.safe_load(code), page


def test_the_pages_hold_the_blocks_this_module_runs() -> None:
    # A change of fence or page that hid every block would make the tests above pass vacuously.
    assert len(FRAGMENTS) >= 3 and len(SQL) >= 2
    assert Path(DOCS / "cli.md").read_text().count("```sql") == 1
