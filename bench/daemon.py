"""Worker daemons as subprocesses: ours (`python -m pgqueue.worker`) or a peer's runner."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from bench import server

REGISTRY = "bench.handlers:registry"
LOG_DIR = server.ROOT / "bench" / ".logs"
WORKER_LOG_LEVEL = "WARNING"  # per-job INFO lines would be measured too; see README
STOP_TIMEOUT_S = 30.0  # seconds a daemon may take to exit after SIGTERM


class Daemon:
    """One subprocess, its stderr kept in `bench/.logs/<name>.log`, stopped on exit.

    Args:
        name: for the log file and messages.
        argv: the command.
        env: extra environment on top of ours (PGQUEUE_* of ours are not passed on).
    """

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
        self.env.update(env)
        self.log_path = LOG_DIR / f"{name}.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The subprocess's pid."""
        assert self._process is not None, "start the daemon first"
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while it runs."""
        return None if self._process is None else self._process.returncode

    async def start(self) -> Daemon:
        """Start the subprocess (in the repository root, so `bench` imports)."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=server.ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        return self

    async def wait(self, timeout_s: float) -> int:
        """Wait for the subprocess to exit on its own; raise if it fails or overruns."""
        assert self._process is not None
        try:
            code = await asyncio.wait_for(self._process.wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{self.name} still running after {timeout_s:.0f}s") from None
        if code != 0:
            raise RuntimeError(f"{self.name} exited {code}; see {self.log_path}\n{self.tail()}")
        return code

    def check_alive(self) -> None:
        """Raise when the subprocess has died."""
        if self.returncode is not None:
            raise RuntimeError(
                f"{self.name} exited {self.returncode}; see {self.log_path}\n{self.tail()}"
            )

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then wait; SIGKILL when it will not go."""
        process = self._process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            process.kill()
            return await process.wait()

    def rss_mb(self) -> float:
        """The resident set size (VmRSS) in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def tail(self, lines: int = 20) -> str:
        """The last lines of the log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def __aenter__(self) -> Daemon:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def pgqueue_worker(
    name: str,
    dsn: str,
    *,
    concurrency: int,
    burst: bool = False,
    env: Mapping[str, str] | None = None,
) -> Daemon:
    """The real daemon: `python -m pgqueue.worker bench.handlers:registry ...`."""
    argv = [sys.executable, "-m", "pgqueue.worker", REGISTRY, "--concurrency", str(concurrency)]
    argv += ["--log-level", WORKER_LOG_LEVEL]
    if burst:
        argv.append("--burst")
    return Daemon(name, argv, {"DATABASE_URL": dsn, **(env or {})})
