"""A real PgBouncer in transaction mode in front of a test server, as a pooled deployment has.

    with PgBouncer(admin_url, workdir) as bouncer:
        pooled = bouncer.url_for(database_url)   # same user and database, through the pooler

The pooler is Debian's `pgbouncer` (`make test` installs it when missing, see
tools/system-deps.sh). Its pool per database and user is small (`POOL_SIZE` server
connections for any number of clients), so that clients really do share server connections
and a statement prepared by one client is met by another: what breaks asyncpg's statement
cache behind Supabase's pooler or RDS Proxy happens here too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

from tests.support.ports import LOOPBACK, free_port

BINARY_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
POOL_SIZE = 3  # server connections per database and user
START_TIMEOUT_S = 10.0
# PgBouncer refuses to run as root; as root it drops to this user (`-u`).
UNPRIVILEGED_USER = "nobody"

CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = {listen_host}
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {auth_file}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
; a restarted server is reconnected to at once, not after the default 15 s
server_login_retry = 0.5
server_connect_timeout = 3
logfile =
pidfile =
"""


def binary() -> str | None:
    """The pgbouncer executable, or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in BINARY_PATHS if os.access(path, os.X_OK)), None)


def require() -> str:
    """The pgbouncer executable; skips the test, saying how to get it, when there is none."""
    found = binary()
    if found is None:
        pytest.skip(
            "pgbouncer is not installed: `make test` installs Debian's package as root "
            "(tools/system-deps.sh); or `apt-get install pgbouncer`"
        )
    return found


class PgBouncer:
    """A pgbouncer process in transaction mode in front of the server `server_url` names.

    Args:
        server_url: any URL of the server (its host, port, user and password are used).
        workdir: where its config and log go (None: a temporary directory of its own).
        pool_size: server connections per database and user.
    """

    def __init__(
        self, server_url: str, workdir: Path | None = None, *, pool_size: int = POOL_SIZE
    ) -> None:
        self.server_url = server_url
        self.pool_size = pool_size
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pgqueue-pgbouncer-", dir="/tmp"))
        self.port = 0
        self.log_path = self.workdir / "pgbouncer.log"
        self._process: subprocess.Popen[bytes] | None = None

    def url_for(self, url: str) -> str:
        """`url` (a database on the same server) through the pooler: its user, password, db."""
        parts = urlsplit(url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@{LOOPBACK}:{self.port}" if userinfo else f"{LOOPBACK}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> None:
        """Start it on a free port and wait until it accepts connections."""
        executable = require()
        server = urlsplit(self.server_url)
        user = unquote(server.username or "postgres")
        password = unquote(server.password or "")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The unprivileged user reads the config (the directory stays private otherwise).
        self.workdir.chmod(0o755)
        auth_file = self.workdir / "users.txt"
        # A plain password lets the pooler log in to a server that asks for one (the embedded
        # server uses SCRAM); clients are trusted, as on a loopback test machine.
        auth_file.write_text(f'"{user}" "{password}"\n')
        self.port = free_port()
        config = self.workdir / "pgbouncer.ini"
        config.write_text(
            CONFIG.format(
                host=server.hostname or LOOPBACK,
                port=server.port or 5432,
                listen_host=LOOPBACK,
                listen_port=self.port,
                auth_file=auth_file,
                pool_size=self.pool_size,
            )
        )
        for path in (auth_file, config):
            path.chmod(0o644)
        argv = [executable]
        if os.geteuid() == 0:
            argv += ["-u", UNPRIVILEGED_USER]
        argv.append(str(config))
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start:\n{self.log()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)  # a process starting up: nothing to wait on but the port
        raise RuntimeError(f"pgbouncer did not listen within {START_TIMEOUT_S}s:\n{self.log()}")

    def log(self) -> str:
        """What it printed (its last 4000 characters)."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and remove its directory if it made one."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
