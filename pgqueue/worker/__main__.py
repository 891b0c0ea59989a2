"""`python -m pgqueue.worker MODULE:ATTR`: the worker daemon.

MODULE:ATTR names a `Registry` (or a function returning one). Settings come from the
environment (`PGQUEUE_*`, `DATABASE_URL`); flags override them. `DATABASE_URL` is required: a
production worker never starts a database of its own (`make run` does that for development).
Exit status: 0 after a clean (also signalled) stop, 2 on bad arguments, 1 on a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

import pydantic

from pgqueue import logs
from pgqueue.database import Database, pooler_hint
from pgqueue.errors import ConfigurationError
from pgqueue.registry import Registry
from pgqueue.settings import QueueSettings
from pgqueue.worker import signals
from pgqueue.worker.core import Worker

MISSING_DATABASE_URL = (
    "error: DATABASE_URL is not set: give the database the worker takes jobs from, e.g.\n"
    "  DATABASE_URL=postgresql://user@host:5432/app python -m pgqueue.worker MODULE:ATTR\n"
    "(`make run` starts an embedded server for development)"
)

METRICS_MISSING = (
    "--metrics-port needs prometheus-client, which pgqueue installs only with its metrics "
    "extra: pip install 'pgqueue-durable[metrics]'"
)


def load_registry(target: str) -> Registry:
    """Import `module:attr` and return the Registry it names."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected MODULE:ATTR, e.g. service.jobs:registry; got {target!r}")
    value = getattr(importlib.import_module(module_name), attr)
    if callable(value) and not isinstance(value, Registry):
        value = value()
    if not isinstance(value, Registry):
        raise ValueError(f"{target} is a {type(value).__name__}, not a pgqueue Registry")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m pgqueue.worker",
        description="Run pgqueue jobs with the handlers of a registry.",
    )
    parser.add_argument("registry", help="MODULE:ATTR of a pgqueue Registry")
    parser.add_argument("--concurrency", type=int, help="jobs run at once (PGQUEUE_CONCURRENCY)")
    parser.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="Q",
        help="a queue to take jobs from; repeat for several (PGQUEUE_QUEUES, default 'default')",
    )
    parser.add_argument("--burst", action="store_true", help="run what is runnable, then exit")
    parser.add_argument(
        "--max-seconds",
        type=float,
        metavar="N",
        help="end within N seconds: stop claiming in time, release what still runs, exit 0",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="P",
        help="serve this worker's Prometheus metrics on 127.0.0.1:P/metrics "
        "(needs pgqueue-durable[metrics])",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    if args.max_seconds is not None and not 0 < args.max_seconds < float("inf"):
        parser.error("--max-seconds must be a positive number of seconds")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        parser.error("--metrics-port must be a port number, 0-65535 (0: any free port)")
    return args


def build_worker(args: argparse.Namespace, settings: QueueSettings, database: Database) -> Worker:
    """A Worker from the flags, falling back on the settings."""
    flags: dict[str, object] = {"burst": args.burst, "max_seconds": args.max_seconds}
    if args.queues:
        flags["queues"] = args.queues
    if args.concurrency:
        flags["concurrency"] = args.concurrency
    return Worker(database, load_registry(args.registry), settings.worker_config(**flags))


async def serve(worker: Worker, metrics_port: int | None = None) -> None:
    """Run `worker` until it stops; SIGTERM/SIGINT stop it gracefully.

    Args:
        worker: the worker.
        metrics_port: also serve its Prometheus metrics on 127.0.0.1:P/metrics, from before
            it claims its first job until it has stopped.
    """
    server = None
    if metrics_port is not None:
        # Imported only here: prometheus-client is an extra (main() checked it is there).
        from pgqueue import metrics

        try:
            server = await metrics.serve_worker(worker, metrics_port)
        except OSError as exc:
            raise ConfigurationError(
                f"--metrics-port {metrics_port}: cannot listen on 127.0.0.1:{metrics_port} "
                f"({exc.strerror or exc}); choose another port"
            ) from exc
    try:
        with signals.on_stop(worker.stop, lambda: worker.stop(immediate=True)):
            await worker.run()
    finally:
        if server is not None:
            await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        settings = QueueSettings()
    except pydantic.ValidationError as exc:
        print(f"error: invalid settings in the environment:\n{exc}", file=sys.stderr)
        return 2
    database = settings.database()
    if database is None:
        print(MISSING_DATABASE_URL, file=sys.stderr)
        return 2
    if args.metrics_port is not None:
        try:
            importlib.import_module("pgqueue.metrics")
        except ImportError:
            print(f"error: {METRICS_MISSING}", file=sys.stderr)
            return 2
    try:
        worker = build_worker(args, settings, database)
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(worker, args.metrics_port))
    except Exception as exc:
        hint = str(exc) if isinstance(exc, ConfigurationError) else pooler_hint(exc)
        if hint is None:
            raise
        print(f"error: {hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
