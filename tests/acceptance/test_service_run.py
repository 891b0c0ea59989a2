"""`python -m service run` (what `make run` calls): starts, serves, and stops everything."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.support import project_body, wait_done
from tests.support import settings
from tests.support.ports import free_port
from tests.support.processes import ROOT, Process, Processes, completed
from tests.support.wait import wait_for

READY = re.compile(r"Storyboard API ready at (\S+)")
TOKEN = re.compile(r"Token for user 'demo': (\S+)")
CHILD = re.compile(r"\(pid (\d+)\)")
DATABASE = re.compile(r"Database: DATABASE_URL=(\S+)")
READY_TIMEOUT_S = 30.0  # on a database that exists
PYTHON = (sys.executable,)
EMBEDDED_READY_TIMEOUT_S = 60.0  # including a fresh embedded server's initdb


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _env(port: int, media: Path, **extra: str) -> dict[str, str]:
    return {"PORT": str(port), "MEDIA_DIR": str(media), "PGQUEUE_SHUTDOWN_GRACE_S": "2", **extra}


async def _ready(run: Process, timeout: float) -> tuple[str, str]:
    """The URL and the token `service run` printed once it was ready."""

    def printed() -> tuple[str, str] | None:
        run.check_alive()
        text = run.output()
        ready, token = READY.search(text), TOKEN.search(text)
        return (ready.group(1), token.group(1)) if ready and token else None

    return await wait_for(printed, timeout, "service run to print its URL and token")


async def _check_flow(url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as client:
        project = (await client.post("/api/projects", json=project_body(2))).json()
        generated = await client.post(f"/api/projects/{project['id']}/storyboards/generate")
        assert generated.status_code == 202
        status = await wait_done(client, project["id"], headers, timeout=15)
        assert status["status"] == "completed"
        image = await client.get(status["storyboards"][0]["image_url"])
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


async def _stop_and_check(run: Process) -> str:
    children = [int(pid) for pid in CHILD.findall(run.output())]
    assert len(children) == 2
    run.send_signal(signal.SIGINT)
    await run.exited(20, expect=0)
    assert not [pid for pid in children if _alive(pid)], run.output()
    return run.output()


async def test_run_on_database_url(db_url: str, tmp_path: Path, processes: Processes) -> None:
    port = free_port()
    run = processes.service(
        "run", env=_env(port, tmp_path / "media", DATABASE_URL=db_url), cwd=tmp_path
    )
    url, token = await _ready(run, READY_TIMEOUT_S)
    assert url == f"http://127.0.0.1:{port}"
    await _check_flow(url, token)
    output = await _stop_and_check(run)
    assert "stopped" in output


async def _check_second_terminal(run: Process, workdir: Path, url: str) -> None:
    """What the docs do in a second terminal works with nothing but what `run` printed."""
    printed = DATABASE.search(run.output())
    assert printed, run.output()
    bare = {k: v for k, v in settings.child_env().items() if k != "DATABASE_URL"}
    # The commands find the embedded server of the directory by themselves...
    found = completed([*PYTHON, "-m", "service", "database-url"], env=bare, cwd=workdir)
    assert found.returncode == 0 and found.stdout.strip() == printed.group(1), found.stderr
    # ... and `make token` / `make psql` work on the URL as printed.
    env = {**bare, "DATABASE_URL": printed.group(1)}
    made = completed(["make", "-s", "-C", str(ROOT), "token", "USER=zoe", "TIER=pro"], env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    async with httpx.AsyncClient(base_url=url) as client:
        mine = await client.get("/api/projects", headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200 and mine.json()["projects"] == []
    psql = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "psql"],
        input="SELECT count(*) FROM storyboard.api_tokens;\n",
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert psql.returncode == 0 and re.search(r"^\s*2$", psql.stdout, re.M), psql.stderr


async def test_a_port_in_use_is_named_with_the_way_out(
    db_url: str, tmp_path: Path, processes: Processes
) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        run = processes.service(
            "run", env=_env(port, tmp_path / "media", DATABASE_URL=db_url), cwd=tmp_path
        )
        await run.exited(20, expect=1)
    output = run.output()
    assert f"127.0.0.1:{port} is already in use" in output
    assert f"PORT={port + 1} make run" in output
    assert not CHILD.search(output)  # nothing was started


def test_the_database_url_command_says_what_to_do_without_a_server(tmp_path: Path) -> None:
    bare = {k: v for k, v in settings.child_env().items() if k != "DATABASE_URL"}
    done = completed([*PYTHON, "-m", "service", "database-url"], env=bare, cwd=tmp_path)
    assert done.returncode == 2 and "make run" in done.stderr


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory of its own under /tmp: the embedded server's user must reach it, and pytest
    resets the permissions of its own temporary root when another session starts."""
    with tempfile.TemporaryDirectory(prefix="service-run-") as name:
        yield Path(name)


async def test_run_on_embedded_postgres_stops_it_too(workdir: Path, processes: Processes) -> None:
    port = free_port()
    started = time.monotonic()
    run = processes.service("run", env=_env(port, workdir / "media"), cwd=workdir)
    url, token = await _ready(run, EMBEDDED_READY_TIMEOUT_S)
    print(f"\nservice run, fresh embedded Postgres to ready API: {time.monotonic() - started:.1f}s")
    await _check_flow(url, token)
    await _check_second_terminal(run, workdir, url)
    data_dir = workdir / ".pgdata"
    assert (data_dir / "postmaster.pid").exists()
    output = await _stop_and_check(run)
    assert "stopping embedded Postgres" in output
    assert f"the data stays in {data_dir}" in output
    assert not (data_dir / "postmaster.pid").exists()  # the server is down

    # Data survives a restart: the project of the first run is still there.
    again = processes.service("run", env=_env(port, workdir / "media"), cwd=workdir)
    url, token = await _ready(again, EMBEDDED_READY_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=url) as client:
        projects = await client.get("/api/projects", headers={"Authorization": f"Bearer {token}"})
    assert len(projects.json()["projects"]) == 1
    await _stop_and_check(again)
