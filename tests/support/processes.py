"""Real child processes, the one harness the tests and the benchmarks start them with.

A `Processes` harness starts children in the repository root (`python -m pgqueue.worker ...`,
`python -m service api`, a peer's runner), each with an environment of its own and its output
in `<log_dir>/<name>.log`; a `Process` is signalled, awaited and stopped by the caller, and the
harness kills whatever is left when it closes. Each child leads a process group of its own, so
closing also takes the children a child started (`python -m service run` starts two).

Errors about a child (it died, overran or failed) are `ProcessError`s that carry the tail of its
log. The pytest fixture `processes` (tests/conftest.py) wraps a harness in `tmp_path`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from tests.support import settings
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]  # the repository root: children run here
STOP_TIMEOUT_S = 10.0  # seconds a child may take to exit after SIGTERM before it is killed
KILL_TIMEOUT_S = 10.0  # seconds to reap a child after SIGKILL
RUN_TIMEOUT_S = 120.0  # seconds a command run to completion may take
READY_TIMEOUT_S = 30.0  # seconds an HTTP server may take to answer its readiness check
TAIL_CHARS = 4000  # characters of a log shown in errors


class ProcessError(AssertionError):
    """A child process did not do what was expected; the message ends with its log tail.

    An `AssertionError`, so a test reports it as a failure, not an error of the harness.
    """


class Process:
    """One running child: started by `Processes.start`, output in `log_path`.

    Args:
        name: for messages and the log file.
        argv: the command.
        env: its whole environment.
        log_path: where its stdout and stderr go.
        cwd: its working directory.
    """

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            self._popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one at the end
            )

    @property
    def pid(self) -> int:
        """The child's pid (also its process group's id)."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once it has been reaped (`poll`, `wait`), else None."""
        return self._popen.returncode

    def poll(self) -> int | None:
        """The exit status if it has exited, else None."""
        return self._popen.poll()

    def send_signal(self, signum: int) -> None:
        """Send `signum` to the child alone (not to the children it started)."""
        self._popen.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        """Block until it exits; its status. Raises `subprocess.TimeoutExpired` after `timeout`."""
        return self._popen.wait(timeout)

    async def exited(self, timeout: float, *, expect: int | None = None) -> int:
        """Wait, without blocking the event loop, until it exits; its status.

        Args:
            timeout: seconds to wait.
            expect: the status it must exit with (None: any).

        Raises:
            ProcessError: it still runs after `timeout`, or exited with another status.
        """
        try:
            await wait_for(lambda: self.poll() is not None, timeout, f"{self.name} to exit")
        except AssertionError:
            raise self.error(f"still running after {timeout:g}s") from None
        code = self.wait()
        if expect is not None and code != expect:
            raise self.error(f"exited {code}, expected {expect}")
        return code

    def check_alive(self) -> None:
        """Raise `ProcessError` when the child has exited (call it while waiting on it)."""
        if self.poll() is not None:
            raise self.error(f"exited {self.returncode}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL its group; its exit status."""
        if self.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int:
        """SIGKILL the child's whole process group (whatever is left of it); its exit status."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return self.wait(KILL_TIMEOUT_S)

    def output(self) -> str:
        """Everything it has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, chars: int = TAIL_CHARS) -> str:
        """The end of its output."""
        return self.output()[-chars:]

    def rss_mb(self) -> float:
        """Its resident set size (VmRSS, Linux) in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise ProcessError(f"{self.name}: no VmRSS for pid {self.pid}")

    def error(self, what: str) -> ProcessError:
        """A `ProcessError` saying `what` happened, with the log's path and tail."""
        return ProcessError(f"{self.name} {what}; see {self.log_path}\n{self.tail()}")

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Processes:
    """Starts children and kills whatever is left of them when it closes.

    Args:
        log_dir: where each child's `<name>.log` goes.
        env: the environment every child starts from (default: `settings.child_env()`, ours
            without PGQUEUE_* or the service's settings); `start(env=...)` adds to it.
    """

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(settings.child_env() if env is None else env)
        self.started: list[Process] = []
        self._names: Counter[str] = Counter()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> Process:
        """Start `argv` as `name` (its log: `<log_dir>/<name>.log`, overwritten if it exists).

        Args:
            name: for messages and the log file.
            argv: the command.
            env: added to the harness's environment.
            cwd: the working directory (default: the repository root, so `-m` finds our code).
        """
        process = Process(
            name, argv, {**self.env, **(env or {})}, self.log_dir / f"{name}.log", cwd
        )
        self.started.append(process)
        return process

    def python(
        self, name: str, *args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT
    ) -> Process:
        """`python <args>` with this interpreter (see `start`)."""
        return self.start(name, [sys.executable, *args], env=env, cwd=cwd)

    def worker(
        self,
        registry: str,
        *args: str,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Process:
        """`python -m pgqueue.worker <registry> <args>`, named `worker-<n>` unless `name` is given.

        The worker reads its settings from `env`: DATABASE_URL and PGQUEUE_* (for short leases
        and polls, add `settings.WORKER_ENV`).
        """
        name = name or self._next_name("worker")
        return self.python(name, "-m", "pgqueue.worker", registry, *args, env=env)

    def service(
        self,
        command: str,
        *args: str,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> Process:
        """`python -m service <command> <args>` (api, worker, run), named `<command>-<n>`."""
        name = name or self._next_name(command)
        return self.python(name, "-m", "service", command, *args, env=env, cwd=cwd)

    def logs(self) -> str:
        """The tail of every child's output, for failure messages."""
        return "\n".join(f"--- {p.name} (exit {p.poll()}) ---\n{p.tail()}" for p in self.started)

    def close(self) -> None:
        """SIGKILL every child's process group, whatever is left of it, and reap the children."""
        for process in self.started:
            process.kill()

    def _next_name(self, prefix: str) -> str:
        number = self._names[prefix]
        self._names[prefix] += 1
        return f"{prefix}-{number}"


def completed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = RUN_TIMEOUT_S,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, whatever its exit status (e.g. to check a refusal).

    Args:
        argv: the command.
        env: its whole environment (default: `settings.child_env()`).
        timeout: seconds it may take.
        cwd: the working directory.

    Raises:
        ProcessError: it overran.
    """
    try:
        return subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(settings.child_env() if env is None else env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProcessError(f"{' '.join(argv)} took over {timeout:g}s") from exc


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = RUN_TIMEOUT_S,
    cwd: Path = ROOT,
) -> str:
    """Run a command that must succeed (e.g. `python -m service create-token`); its stdout.

    Arguments as `completed`'s.

    Raises:
        ProcessError: it failed (with the end of its stderr) or overran.
    """
    done = completed(argv, env=env, timeout=timeout, cwd=cwd)
    if done.returncode != 0:
        command = " ".join(argv)
        raise ProcessError(f"{command} exited {done.returncode}:\n{done.stderr[-TAIL_CHARS:]}")
    return done.stdout


async def wait_ready(url: str, process: Process, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until `GET url` answers 200 from the server `process` runs (e.g. `.../readyz`).

    Raises:
        ProcessError: the process died, or the server did not answer in time.
    """
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=READY_TIMEOUT_S) as client:

        async def ready() -> bool:
            process.check_alive()
            try:
                return (await client.get(url)).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await wait_for(ready, timeout, f"{url} to answer 200")
        except ProcessError:
            raise
        except AssertionError:
            waited = time.monotonic() - started
            raise process.error(f"did not answer {url} within {waited:.0f}s") from None


def python_command(*args: str) -> list[str]:
    """`[this interpreter, *args]`, for `run` and `completed`."""
    return [sys.executable, *args]
