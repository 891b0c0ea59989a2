"""The Redis BullMQ runs on: Debian's `redis-server`, started by the bench in a temporary
directory on a free loopback port, durable as BullMQ's docs advise (AOF on, `appendfsync
everysec`), no RDB snapshots. Also a few raw commands (RESP over a socket: no client library
on our side) for the crash test's count.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import Process, Processes
from tests.support.wait import wait_for

SERVER = "redis-server"
READY_TIMEOUT_S = 20.0
# What BullMQ's production guidance asks of Redis, with the data in the directory of the run.
SETTINGS = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")


def binary() -> str | None:
    """The redis-server program, or None when it is not installed (tools/bench-deps.sh)."""
    found = shutil.which(SERVER)
    if found is None and Path("/usr/bin", SERVER).exists():  # root's PATH may lack /usr/bin
        found = str(Path("/usr/bin", SERVER))
    return found


def command(port: int, *args: str) -> object:
    """Send one command; its reply (int, str, bytes, list or None). Raises OSError when down."""
    parts = [arg.encode() for arg in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(request)
        return _reply(sock.makefile("rb"))


def _reply(stream: BinaryIO) -> object:
    line = stream.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise OSError(f"redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2]
    if kind == b"*":
        return [_reply(stream) for _ in range(int(rest))]
    raise OSError(f"redis: unexpected reply {line!r}")


class RedisServer:
    """One private redis-server; `start`, `kill` (SIGKILL) and `start` again on the same data.

    Args:
        processes: the harness that starts it (and kills it at the end of the run).
        directory: its working directory (the AOF goes there).
    """

    def __init__(self, processes: Processes, directory: Path) -> None:
        self.processes = processes
        self.directory = directory
        self.port = free_port()
        self.process: Process | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    async def start(self) -> None:
        """Start it and wait until it answers PING (after replaying its AOF, on a restart)."""
        program = binary()
        if program is None:
            raise RuntimeError("redis-server is not installed (tools/bench-deps.sh installs it)")
        argv = [program, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.directory)]
        self.process = self.processes.start(f"redis-{self._starts}", [*argv, *SETTINGS])
        self._starts += 1
        process = self.process

        def answers() -> bool:
            process.check_alive()
            try:
                return command(self.port, "PING") == "PONG"
            except OSError:
                return False

        await wait_for(answers, READY_TIMEOUT_S, "redis-server to answer PING")

    def kill(self) -> None:
        """SIGKILL the server: a crash, nothing flushed on the way out."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Stop it if it runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.stop()


@contextlib.asynccontextmanager
async def running(processes: Processes) -> AsyncIterator[RedisServer]:
    """`async with running(processes) as server:` a fresh Redis, its directory removed after."""
    directory = Path(tempfile.mkdtemp(prefix="pgqueue-bench-redis-"))
    server = RedisServer(processes, directory)
    try:
        await server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
