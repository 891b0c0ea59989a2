"""The worker's record of a job it holds (`RunningJob`): where its attempt is (`Phase`), and
why its handler was cancelled, if it was (`StopReason`).

Shared by the parts that act on held jobs: the worker starts them, the runner runs and ends
them, the heartbeat renews and polices them, the completer writes their outcomes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum

from pgqueue import models
from pgqueue.worker.context import JobContext


class StopReason(enum.Enum):
    """Why the worker cancelled a handler."""

    SHUTDOWN = "shutdown"  # release the job without spending the attempt
    CANCEL_REQUESTED = "cancel_requested"  # someone called Queue.cancel()
    LEASE_LOST = "lease_lost"  # the job is no longer ours: write nothing


class Phase(enum.Enum):
    """Where a held job is: its handler runs, its outcome is being written, or it is written."""

    RUNNING = "running"
    FINISHING = "finishing"
    DONE = "done"


@dataclasses.dataclass(slots=True)
class RunningJob:
    """The worker's bookkeeping for one job it holds."""

    job: models.Job
    context: JobContext
    lease_deadline: float  # time.monotonic() by which the lease must have been renewed
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None
    phase: Phase = Phase.RUNNING

    @property
    def lease_token(self) -> int:
        """The fencing token of this claim."""
        assert self.job.lease_token is not None
        return self.job.lease_token

    def cancel(self, reason: StopReason) -> bool:
        """Cancel the handler, if it still runs (an outcome already decided is never undone:
        a lease that reads as lost while the success is being written is that success)."""
        if self.phase is not Phase.RUNNING or self.stop_reason is not None or self.task is None:
            return False
        self.stop_reason = reason
        self.task.cancel()
        return True
