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

from tests.service import support
from tests.service.support import project_body

READY = re.compile(r"Storyboard API ready at (\S+)")
TOKEN = re.compile(r"Token for user 'demo': (\S+)")
CHILD = re.compile(r"\(pid (\d+)\)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Launched:
    """A `python -m service run` child and what it printed."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "run"],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            ready, token = READY.search(text), TOKEN.search(text)
            if ready and token:
                return ready.group(1), token.group(1)
            assert self.process.poll() is None, text
            time.sleep(0.05)
        raise AssertionError(f"not ready within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[type[Launched]]:
    launched: list[Launched] = []

    class Tracked(Launched):
        def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
            super().__init__(env, cwd, log)
            launched.append(self)

    yield Tracked
    for item in launched:
        item.stop()


def _env(port: int, media: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PGQUEUE_") and k not in support.SERVICE_ENV
    }
    env.update(PORT=str(port), MEDIA_DIR=str(media), PGQUEUE_SHUTDOWN_GRACE_S="2", **extra)
    return env


def _check_flow(url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=5) as client:
        project = client.post("/api/projects", json=project_body(2)).json()
        assert client.post(f"/api/projects/{project['id']}/storyboards/generate").status_code == 202
        deadline = time.monotonic() + 15
        while True:
            status = client.get(f"/api/projects/{project['id']}/storyboards/status").json()
            if status["done"]:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["status"] == "completed"
        image = client.get(status["storyboards"][0]["image_url"])
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def _stop_and_check(launched: Launched) -> str:
    children = [int(pid) for pid in CHILD.findall(launched.output())]
    assert len(children) == 2
    launched.process.send_signal(signal.SIGINT)
    assert launched.process.wait(timeout=20) == 0, launched.output()
    assert not [pid for pid in children if _alive(pid)], launched.output()
    return launched.output()


def test_run_on_database_url(db_url: str, tmp_path: Path, launch: type[Launched]) -> None:
    port = _free_port()
    launched = launch(
        _env(port, tmp_path / "media", DATABASE_URL=db_url), tmp_path, tmp_path / "run.log"
    )
    url, token = launched.wait_ready(timeout=30)
    assert url == f"http://127.0.0.1:{port}"
    _check_flow(url, token)
    output = _stop_and_check(launched)
    assert "stopped" in output


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory of its own under /tmp: the embedded server's user must reach it, and pytest
    resets the permissions of its own temporary root when another session starts."""
    with tempfile.TemporaryDirectory(prefix="service-run-") as name:
        yield Path(name)


def test_run_on_embedded_postgres_stops_it_too(workdir: Path, launch: type[Launched]) -> None:
    tmp_path = workdir
    port = _free_port()
    started = time.monotonic()
    launched = launch(_env(port, tmp_path / "media"), tmp_path, tmp_path / "run.log")
    url, token = launched.wait_ready(timeout=60)
    print(f"\nservice run, fresh embedded Postgres to ready API: {time.monotonic() - started:.1f}s")
    _check_flow(url, token)
    data_dir = tmp_path / ".pgdata"
    assert (data_dir / "postmaster.pid").exists()
    output = _stop_and_check(launched)
    assert "stopping embedded Postgres" in output
    assert not (data_dir / "postmaster.pid").exists()  # the server is down

    # Data survives a restart: the project of the first run is still there.
    again = launch(_env(port, tmp_path / "media"), tmp_path, tmp_path / "run2.log")
    url, token = again.wait_ready(timeout=60)
    projects = httpx.get(f"{url}/api/projects", headers={"Authorization": f"Bearer {token}"})
    assert len(projects.json()["projects"]) == 1
    _stop_and_check(again)
