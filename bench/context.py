"""`Context`: what every scenario gets: the config, fresh databases, child processes, earlier
figures, output."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bench.config import Config
from tests.support.db import Databases
from tests.support.processes import Processes


@dataclasses.dataclass(slots=True)
class Context:
    """Shared by the scenarios of one run.

    Args:
        config: sizes and settings.
        databases: hands out a fresh migrated database per scenario.
        processes: starts the worker, API and peer processes (logs in `bench/.logs/`); what a
            scenario leaves running is killed at the end of the run.
        figures: the figures measured so far (a later scenario may build on an earlier one,
            e.g. the sustained run uses the fastest concurrency the throughput sweep found).
    """

    config: Config
    databases: Databases
    processes: Processes
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        """Print one progress line, with the time since the run began."""
        print(f"  [{time.monotonic() - self.started:6.1f}s] {message}", flush=True)
