"""A pg_auto_failover cluster of a test's own: a monitor, a primary and a synchronous standby.

Each is a local Postgres 15 instance on a free port in a temporary directory, run by its own
`pg_autoctl` keeper (Debian's `pg-auto-failover-cli` and `postgresql-15-auto-failover`, which
`make system-deps` installs). `pg_ctl` refuses to run as root, so as root the keepers run as
`postgres` (the Debian package's user) over a directory that user owns.

The monitor is told to decide fast (health checks every second, a node unhealthy after 2 s,
a lost primary demoted after 3 s instead of 20 and 30 s), so a failover after a kill takes
seconds, not a minute. Applications reach the cluster with its multi-host URL (`url`):
`postgresql://postgres@127.0.0.1:p1,127.0.0.1:p2/app?target_session_attrs=read-write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncpg

from tests.support.ports import free_port
from tests.support.processes import Process, Processes
from tests.support.wait import wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
EXTENSION = Path("/usr/share/postgresql/15/extension/pgautofailover.control")
DATABASE = "app"
USER = "postgres"  # the database user the applications connect as (trust on loopback)
RUN_AS = "postgres"  # the system user the keepers run as when we are root
# Debian's server puts its socket there (compiled in); pg_autoctl talks to it through it.
SOCKET_DIR = Path("/var/run/postgresql")
STARTUP_TIMEOUT_S = 90.0
FAILOVER_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 90.0
# The monitor's health checks, in ms: fast, so a dead primary is replaced within seconds.
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": 1000,
    "pgautofailover.health_check_timeout": 1000,
    "pgautofailover.health_check_max_retries": 1,
    "pgautofailover.health_check_retry_delay": 500,
    "pgautofailover.node_considered_unhealthy_timeout": 2000,
    "pgautofailover.primary_demote_timeout": 3000,
}
NODE_STATE = """
SELECT nodename, nodeport, reportedstate, goalstate
  FROM pgautofailover.node ORDER BY nodename
"""


class Unavailable(Exception):
    """pg_auto_failover is not installed here (run `make system-deps` as root)."""


def check_available() -> None:
    """Raise `Unavailable`, saying what is missing, unless a cluster can be started here."""
    if shutil.which("pg_autoctl") is None:
        raise Unavailable("pg_autoctl is not installed (Debian: pg-auto-failover-cli)")
    if not EXTENSION.exists():
        raise Unavailable("the pgautofailover extension is missing (postgresql-15-auto-failover)")
    if not (PG_BIN / "pg_ctl").exists():
        raise Unavailable(f"no Postgres 15 in {PG_BIN}")
    if os.geteuid() != 0 and not os.access(SOCKET_DIR, os.W_OK):
        # Debian's Postgres puts its socket there; as root we make it the keepers' own.
        raise Unavailable(f"this user cannot write {SOCKET_DIR} (run as root, or join its group)")


@dataclasses.dataclass(slots=True)
class Node:
    """One Postgres node of the cluster and its keeper process."""

    name: str
    port: int
    pgdata: Path
    process: Process | None = None
    killed: bool = False  # its keeper was killed and not restarted: not an error to be dead


class Cluster:
    """A monitor and two nodes under `base`, their keepers started by `processes`.

    Use `cluster()` to make one; `url` is the multi-host URL of the database `app`.
    """

    def __init__(self, base: Path, processes: Processes) -> None:
        self.base = base
        self.processes = processes
        self.monitor = Node("monitor", free_port(), base / "monitor")
        self.nodes = [Node(f"node{n}", free_port(), base / f"node{n}") for n in (1, 2)]
        self._restarts = 0
        self._user = pwd.getpwnam(RUN_AS) if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """The multi-host URL applications connect with: whichever node takes writes."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"postgresql://{USER}@{hosts}/{DATABASE}?target_session_attrs=read-write"

    def node_url(self, node: Node, database: str = DATABASE) -> str:
        """A URL of one node alone."""
        return f"postgresql://{USER}@127.0.0.1:{node.port}/{database}"

    @property
    def monitor_url(self) -> str:
        return self.node_url(self.monitor, "pg_auto_failover")

    # -- starting ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the monitor, then the first node (the primary), then its standby; return
        once the standby is `secondary` and synchronous."""
        self.monitor.process = self._keeper(
            self.monitor,
            "create",
            "monitor",
            *("--pgport", str(self.monitor.port)),
        )
        await self._wait_monitor()
        first, second = self.nodes
        first.process = self._create_node(first)
        await self.wait_states({first.name: "single"}, STARTUP_TIMEOUT_S)
        second.process = self._create_node(second)
        await self.wait_healthy(STARTUP_TIMEOUT_S)

    def _create_node(self, node: Node) -> Process:
        return self._keeper(
            node,
            "create",
            "postgres",
            *("--pgport", str(node.port), "--name", node.name, "--dbname", DATABASE),
            *(
                "--monitor",
                f"postgres://autoctl_node@127.0.0.1:{self.monitor.port}/pg_auto_failover",
            ),
        )

    def _keeper(self, node: Node, *command: str) -> Process:
        argv = [
            "pg_autoctl",
            *command,
            *("--pgdata", str(node.pgdata)),
            *("--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--run"),
        ]
        return self.processes.start(node.name, self._as_owner(argv), env=self._env())

    async def _wait_monitor(self) -> None:
        async def ready() -> bool:
            self._check_alive(self.monitor)
            try:
                conn = await asyncpg.connect(self.monitor_url, timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                return False
            try:
                exists = await conn.fetchval("SELECT to_regclass('pgautofailover.node')")
                if exists is None:
                    return False
                for name, value in MONITOR_SETTINGS.items():
                    await conn.execute(f"ALTER SYSTEM SET {name} = {value}")
                await conn.execute("SELECT pg_reload_conf()")
                return True
            finally:
                await conn.close()

        await wait_for(ready, STARTUP_TIMEOUT_S, "the monitor to answer", poll_s=0.2)

    # -- reading the state ------------------------------------------------------------------

    async def states(self) -> dict[str, tuple[str, str]]:
        """Each node's (reported, assigned) state, as the monitor has them."""
        conn = await asyncpg.connect(self.monitor_url, timeout=5)
        try:
            rows = await conn.fetch(NODE_STATE)
        finally:
            await conn.close()
        return {row["nodename"]: (row["reportedstate"], row["goalstate"]) for row in rows}

    async def wait_states(self, wanted: dict[str, str], timeout: float) -> None:
        """Wait until each named node is in its wanted state (reported and assigned)."""

        async def reached() -> dict[str, tuple[str, str]] | None:
            for node in self.nodes:
                self._check_alive(node)
            try:
                states = await self.states()
            except (OSError, asyncpg.PostgresError, TimeoutError):
                return None
            good = all(states.get(name) == (want, want) for name, want in wanted.items())
            return states if good else None

        await self._nudge_basebackup()
        await wait_for(reached, timeout, f"the nodes to reach {wanted}", poll_s=0.2)

    async def wait_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> Node:
        """Wait until one node is `primary` and the other `secondary`; the primary."""

        async def healthy() -> Node | None:
            for node in self.nodes:
                self._check_alive(node)
            try:
                states = await self.states()
            except (OSError, asyncpg.PostgresError, TimeoutError):
                return None
            await self._nudge_basebackup(states)
            roles = sorted(states.get(node.name, ("", ""))[0] for node in self.nodes)
            settled = all(reported == goal for reported, goal in states.values())
            if roles != ["primary", "secondary"] or not settled:
                return None
            return next(n for n in self.nodes if states[n.name][0] == "primary")

        return await wait_for(healthy, timeout, "a primary and a secondary", poll_s=0.2)

    async def primary(self) -> Node:
        """The node the monitor has as primary (or the one promoted alone, `wait_primary`)."""
        # A dead primary's keeper cannot report its demotion: it stays "primary" as reported,
        # with "demoted" assigned; the live one has reached the state it was assigned.
        states = await self.states()
        for node in self.nodes:
            reported, goal = states.get(node.name, ("", ""))
            if reported == goal and goal in ("primary", "wait_primary", "single"):
                return node
        raise AssertionError(f"no primary: {states}")

    async def synchronous_standby_names(self) -> str:
        """`synchronous_standby_names` on the primary ('' when commits wait for nobody)."""
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            value: str = await conn.fetchval("SHOW synchronous_standby_names")
        finally:
            await conn.close()
        return value

    async def _nudge_basebackup(self, states: dict[str, tuple[str, str]] | None = None) -> None:
        # A new standby's pg_basebackup waits for a spread checkpoint on the primary (up to
        # minutes on an idle server); an immediate one lets it start at once.
        states = states if states is not None else await self.states()
        if not any(goal == "catchingup" for _, goal in states.values()):
            return
        for node in self.nodes:
            if states.get(node.name, ("", ""))[0] in ("primary", "wait_primary", "single"):
                with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                    conn = await asyncpg.connect(self.node_url(node), timeout=2)
                    try:
                        await conn.execute("CHECKPOINT")
                    finally:
                        await conn.close()

    # -- disturbing it ----------------------------------------------------------------------

    async def perform_failover(self) -> None:
        """`pg_autoctl perform failover`: the standby is promoted, the primary demoted; it
        returns once the new primary takes writes."""
        await self.command("perform", "failover", *("--pgdata", str(self.monitor.pgdata)))

    async def kill(self, node: Node) -> None:
        """kill -9 the node's keeper and its Postgres (the machine is lost)."""
        assert node.process is not None
        node.killed = True
        await asyncio.to_thread(node.process.kill)
        # Backends notice their postmaster's death by themselves; the node's keeper is gone,
        # so nothing restarts it until `restart`.

    async def restart(self, node: Node) -> None:
        """Start a killed node's keeper again: it rejoins as a standby (`pg_rewind`)."""
        self._restarts += 1
        node.killed = False
        argv = ["pg_autoctl", "run", "--pgdata", str(node.pgdata)]
        node.process = self.processes.start(
            f"{node.name}-{self._restarts}", self._as_owner(argv), env=self._env()
        )

    async def set_synchronous(self, synchronous: bool) -> None:
        """Make commits wait for the standby (pg_auto_failover's default) or not.

        `replication-quorum false` on every node: a standby out of the quorum is asynchronous,
        and the primary's `synchronous_standby_names` becomes ''.
        """
        value = "true" if synchronous else "false"
        for node in self.nodes:
            await self.command(
                "set", "node", "replication-quorum", value, "--pgdata", str(node.pgdata)
            )

        async def applied() -> bool:
            names = await self.synchronous_standby_names()
            return bool(names) == synchronous

        await wait_for(applied, 30, f"synchronous_standby_names for {value}", poll_s=0.2)

    async def command(self, *args: str) -> str:
        """Run `pg_autoctl <args>` as the keepers' user; its output."""
        argv = self._as_owner(["pg_autoctl", *args])
        done = await asyncio.to_thread(
            subprocess.run,
            argv,
            env=self._env(),
            cwd=self.base,
            capture_output=True,
            text=True,
            errors="replace",  # its log lines hold arrows in UTF-8, truncated at times
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"pg_autoctl {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        return done.stdout

    # -- plumbing ---------------------------------------------------------------------------

    def _check_alive(self, node: Node) -> None:
        if node.process is not None and not node.killed:
            node.process.check_alive()

    def _as_owner(self, argv: Sequence[str]) -> list[str]:
        if self._user is None:
            return list(argv)
        # setpriv execs the command itself (no intermediate process, unlike runuser), so a
        # SIGKILL to the process group reaches the keeper and its Postgres.
        return [
            "setpriv",
            f"--reuid={self._user.pw_uid}",
            f"--regid={self._user.pw_gid}",
            "--init-groups",
            "--",
            *argv,
        ]

    def _env(self) -> dict[str, str]:
        # The keepers' configuration and state live under `base` (XDG_*), not in a home
        # directory; PATH names Postgres 15's binaries and nothing of ours.
        return {
            "PATH": f"{PG_BIN}:/usr/bin:/bin",
            "HOME": str(self.base),
            "XDG_CONFIG_HOME": str(self.base / "config"),
            "XDG_DATA_HOME": str(self.base / "data"),
            "XDG_RUNTIME_DIR": str(self.base / "run"),
            "LANG": "C.UTF-8",
        }


@contextlib.contextmanager
def cluster_directory() -> Iterator[Path]:
    """A temporary directory the keepers' user owns, removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="pgqueue-failover-"))
    try:
        for sub in ("config", "data", "run"):
            (base / sub).mkdir(mode=0o700)
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            for path in (base, *base.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            SOCKET_DIR.mkdir(parents=True, exist_ok=True)
            os.chown(SOCKET_DIR, user.pw_uid, user.pw_gid)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def stop(cluster: Cluster) -> None:
    """Stop every keeper (SIGTERM: each stops its Postgres), killing what does not stop."""
    for node in [*cluster.nodes, cluster.monitor]:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in [*cluster.nodes, cluster.monitor]:
        if node.process is not None:
            node.process.stop()
