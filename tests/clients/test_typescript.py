"""The TypeScript client (clients/typescript) against the real service: `npm test` (tsc
--noEmit, then Node's own test runner) with a running API, a storyboard worker and a worker of
the example's Python jobs (examples/shot_briefs.py) on a fresh database; and the generated
types checked against the document the app serves.

Node and the packages come from `make node-deps` (which `make test` runs): a missing install is
a failure that says so, never a skip.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.clients import node
from tests.clients.node import CLIENT_DIR
from tests.service import support
from tests.support import settings
from tests.support.ports import free_port
from tests.support.processes import Processes, completed, wait_ready

# A stream's life: the generations followed end within a second; the test of a stream that
# ends before `done` (and is opened again) waits for two of them.
STREAM_MAX_S = "4"
NPM_TEST_TIMEOUT_S = 300.0  # seconds `npm test` may take (tsc, then the tests; ~25 s here)


@pytest.fixture
def node_env() -> dict[str, str]:
    """Our environment with the project's Node first on PATH."""
    return node.node_env()


def test_the_generated_types_match_the_served_document(node_env: dict[str, str]) -> None:
    done = completed(
        ["npm", "run", "--silent", "generate", "--", "--check"], env=node_env, cwd=CLIENT_DIR
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_npm_test_against_the_running_service(
    db_url: str, processes: Processes, tmp_path: Path, node_env: dict[str, str]
) -> None:
    port = free_port()
    media_dir = tmp_path / "media"
    api = processes.service(
        "api",
        "--port",
        str(port),
        env=settings.service_env(db_url, media_dir, STREAM_MAX_S=STREAM_MAX_S),
    )
    processes.service("worker", env=settings.service_env(db_url, media_dir, **settings.WORKER_ENV))
    processes.worker(
        "examples.shot_briefs:registry",
        "--queue",
        "app",
        env={"DATABASE_URL": db_url, **settings.WORKER_ENV},
    )
    url = f"http://127.0.0.1:{port}"
    await wait_ready(f"{url}/readyz", api)
    token = (await support.bearer(db_url, "ts-client"))["Authorization"].removeprefix("Bearer ")

    done = completed(
        ["npm", "test"],
        env={
            **node_env,
            "DATABASE_URL": db_url,
            "STORYBOARD_API_URL": url,
            "STORYBOARD_API_TOKEN": token,
        },
        cwd=CLIENT_DIR,
        timeout=NPM_TEST_TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output + "\n" + processes.logs()
    # Node's runner closes with its counts ("pass 13", "fail 0"): some ran, none failed.
    assert re.search(r"\bpass [1-9]", output) and re.search(r"\bfail 0\b", output), output
