"""`python -m pgqueue dashboard`: the dashboard served on its own by uvicorn, signed in with the
token of PGQUEUE_DASHBOARD_TOKEN; without one only on loopback, and only when asked."""

from __future__ import annotations

import httpx

from pgqueue import JobState, Queue
from tests.cli.conftest import run_cli
from tests.support import ports
from tests.support.processes import Processes, wait_ready
from tests.support.settings import WORKER_ENV
from tests.support.wait import wait_for

TOKEN = "operator-secret-token"


async def test_the_dashboard_serves_on_its_own_with_sign_in_by_token(
    queue: Queue, db_url: str, processes: Processes
) -> None:
    job = await queue.enqueue("cli.flaky", {"fail_times": 1}, max_attempts=3)
    processes.worker("tests.cli.handlers:registry", env={"DATABASE_URL": db_url, **WORKER_ENV})

    async def succeeded() -> bool:
        current = await queue.get(job.id)
        return current is not None and current.state is JobState.SUCCEEDED

    await wait_for(succeeded, timeout=30)

    port = ports.free_port()
    server = processes.python(
        "dashboard",
        "-m",
        "pgqueue",
        "dashboard",
        "--port",
        str(port),
        env={"DATABASE_URL": db_url, "PGQUEUE_DASHBOARD_TOKEN": TOKEN},
    )
    base = f"http://127.0.0.1:{port}"
    await wait_ready(f"{base}/sign-in", server)
    async with httpx.AsyncClient(base_url=base) as client:
        # Signed out: the sign-in page.
        assert (await client.get("/")).status_code == 401
        wrong = await client.post("/sign-in", data={"token": "guess"})
        assert wrong.status_code == 403 and "pgqueue_dashboard" not in client.cookies
        signed = await client.post("/sign-in", data={"token": TOKEN})
        assert signed.status_code == 303
        overview = await client.get("/")
        assert overview.status_code == 200 and f'data-job="{job.id}"' in overview.text
        page = await client.get(f"/jobs/{job.id}")
        assert page.status_code == 200
        assert 'data-part="attempt-history"' in page.text
        assert 'data-outcome="retried"' in page.text and "boom on attempt 1" in page.text
        assert 'data-outcome="succeeded"' in page.text
    assert "pgqueue dashboard on" in server.output()


def test_the_dashboard_needs_a_token_or_an_explicit_loopback_only_flag(db_url: str) -> None:
    refused = run_cli(db_url, "dashboard")
    assert refused.returncode == 2
    assert "PGQUEUE_DASHBOARD_TOKEN is not set" in refused.stderr
    assert "--insecure-no-token" in refused.stderr
    exposed = run_cli(db_url, "dashboard", "--insecure-no-token", "--host", "0.0.0.0")
    assert exposed.returncode == 2 and "loopback" in exposed.stderr


async def test_without_a_token_the_flag_serves_on_loopback_without_sign_in(
    db_url: str, processes: Processes
) -> None:
    port = ports.free_port()
    server = processes.python(
        "dashboard-open",
        "-m",
        "pgqueue",
        "dashboard",
        "--insecure-no-token",
        "--port",
        str(port),
        env={"DATABASE_URL": db_url},
    )
    await wait_ready(f"http://127.0.0.1:{port}/", server)
