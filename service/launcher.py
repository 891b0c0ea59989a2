"""`python -m service run` (what `make run` calls): everything for local use, in one command.

Starts the embedded Postgres under `.pgdata/` unless `DATABASE_URL` is set, applies the
migrations, creates a token for user `demo`, starts the API and one worker as child processes,
prints the URL, the studio's URL with the token in its fragment, and the token once the API
is ready, and on Ctrl-C (or SIGTERM) stops the children, then the embedded Postgres if this
command started it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg

from service import auth
from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent  # where alembic.ini lives
EMBEDDED_DIR = ".pgdata"
DEMO_USER = "demo"
READY_TIMEOUT_S = 60.0  # seconds the API may take to answer /readyz
CHILD_STOP_TIMEOUT_S = 40.0  # seconds children get after SIGTERM (worker grace is 30 s)
POLL_S = 0.1


def migrate(dsn: str) -> None:
    """`alembic upgrade head` on `dsn`, in a child process (alembic's env runs its own loop)."""
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": dsn},
        check=True,
    )


async def demo_token(dsn: str) -> str:
    """A new admin token for the demo user."""
    conn = await asyncpg.connect(dsn)
    try:
        return await auth.create_token(conn, DEMO_USER, tier="pro", admin=True)
    finally:
        await conn.close()


class Launcher:
    """Runs the stack until a stop signal or until a child dies.

    Args:
        settings: the service settings (`DATABASE_URL`, `HOST`, `PORT`, ...).
        embedded_dir: the embedded server's data directory, used when there is no URL.
    """

    def __init__(self, settings: ServiceSettings, *, embedded_dir: str = EMBEDDED_DIR) -> None:
        self.settings = settings
        self.embedded_dir = embedded_dir
        self.children: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._signals = 0

    def run(self) -> int:
        """Run; returns the exit status (0 after a stop signal, 1 when a child died)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        server = None
        started_server = False
        try:
            busy = port_problem(self.settings.host, self.settings.port)
            if busy is not None:
                _say(busy)
                return 1
            dsn = self.settings.database_url
            if dsn is None:
                from devserver.embedded import EmbeddedPostgres

                server = EmbeddedPostgres(self.embedded_dir)
                started_server = not server.is_running()
                dsn = server.start()
                _say(f"embedded Postgres on 127.0.0.1:{server.port} (data in {server.data_dir})")
            migrate(dsn)
            token = asyncio.run(demo_token(dsn))
            self._start_children(dsn)
            url = f"http://{self.settings.host}:{self.settings.port}"
            if not self._wait_ready(url):
                return 1
            _say(
                f"\nStoryboard API ready at {url}\n"
                # The token rides in the fragment, which the browser keeps to itself: the
                # studio's script moves it into localStorage and out of the address bar.
                f"Studio (opens signed in): {url}/#token={token}\n"
                f"Token for user {DEMO_USER!r}: {token}\n"
                f"Try:  curl -H 'Authorization: Bearer {token}' {url}/api/projects\n"
                f"Dashboard (the token is an admin's): {url}/dashboard/\n"
                # The URL carries the embedded server's password: it is this user's own
                # server, and every command of a second terminal needs it.
                f"Database: DATABASE_URL={dsn}\n"
                "In a second terminal: make token USER=NAME, make psql, make worker"
                " (they find this database by themselves)\n"
                "Press Ctrl-C to stop.\n"
            )
            return self._supervise()
        except KeyboardInterrupt:
            return 0
        finally:
            self._stop_children()
            if server is not None and started_server:
                _say("stopping embedded Postgres")
                server.stop()
                _say(f"stopped; the data stays in {server.data_dir} for the next run")
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            # A second Ctrl-C: pass it on, which makes the worker cancel its jobs at once.
            for child in self.children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
        self._stop.set()

    def _start_children(self, dsn: str) -> None:
        env = {**os.environ, "DATABASE_URL": dsn}
        commands = [
            [sys.executable, "-m", "service", "api"],
            # `service worker` execs the pgqueue daemon on the storyboard queue (STORYBOARD_QUEUE).
            [sys.executable, "-m", "service", "worker"],
        ]
        for command in commands:
            # Their own session: a terminal's Ctrl-C reaches only us, and we stop them in
            # order, once (a second signal would cut the worker's grace period short).
            child = subprocess.Popen(command, cwd=os.getcwd(), env=env, start_new_session=True)
            self.children.append(child)
            _say(f"started {' '.join(command[1:])} (pid {child.pid})")

    def _wait_ready(self, url: str) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._stop.is_set():
            if any(child.poll() is not None for child in self.children):
                _say("a child process exited during startup")
                return False
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
                    if response.status == 200:
                        return True
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                _say(f"the API did not become ready within {READY_TIMEOUT_S:g}s")
                return False
            self._stop.wait(POLL_S)
        return False

    def _supervise(self) -> int:
        while not self._stop.wait(POLL_S * 5):
            for child in self.children:
                if child.poll() is not None:
                    _say(f"pid {child.pid} exited with status {child.returncode}; stopping")
                    return 1
        return 0

    def _stop_children(self) -> None:
        if any(child.poll() is None for child in self.children):
            _say("stopping the API and the worker (running jobs get PGQUEUE_SHUTDOWN_GRACE_S)")
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        for child in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say(f"pid {child.pid} did not stop in time; killing it")
                child.kill()
                child.wait()
        if self.children:
            _say("the API and the worker stopped")
        self.children.clear()


def port_problem(host: str, port: int) -> str | None:
    """What to do when `host:port` is taken (None when it is free): checked before anything
    starts, since the API's child would otherwise fail with a bare "address already in use"
    among its log lines, or a service already there would answer the readiness probe."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As uvicorn binds: a port in TIME_WAIT from a previous run is free to take.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return f"cannot listen on {host}:{port} ({error.strerror}): check HOST and PORT"
            return (
                f"{host}:{port} is already in use: another `make run`, or another server,"
                f" listens there (`ss -ltnp 'sport = :{port}'` names it). Stop it, or pick"
                f" another port: PORT={port + 1} make run"
            )
    return None


def _say(text: str) -> None:
    print(text, flush=True)
