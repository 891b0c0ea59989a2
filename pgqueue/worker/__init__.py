"""The worker: `Worker` runs handlers; `JobContext` is what a handler is given."""

from __future__ import annotations

from pgqueue.worker.config import WorkerConfig
from pgqueue.worker.context import JobContext
from pgqueue.worker.core import Worker
from pgqueue.worker.events import Event

__all__ = ["Event", "JobContext", "Worker", "WorkerConfig"]
