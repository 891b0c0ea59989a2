"""Worker event hooks: active, progress, completed, failed, stalled."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pgqueue import models

logger = logging.getLogger(__name__)

EventName = Literal["active", "progress", "completed", "failed", "stalled"]
EVENT_NAMES: tuple[EventName, ...] = ("active", "progress", "completed", "failed", "stalled")


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """What happened to a job.

    Args:
        name: which event.
        job_id: the job's id.
        job: the job: as claimed (active, progress, and stalled for a lease this worker
            lost), as written (completed, failed; failed also when a cancel ended a running
            job, with state cancelled), or as reaped (stalled, from the reaper).
        result: the stored result (completed).
        error: the exception, or the reaper's reason (failed, stalled).
        will_retry: whether the job goes back to the queue (failed, stalled).
        progress: the update (progress).
    """

    name: EventName
    job_id: int
    job: models.Job | None = None
    result: Any = None
    error: BaseException | str | None = None
    will_retry: bool = False
    progress: dict[str, Any] | None = None


Hook = Callable[[Event], Awaitable[None] | None]


class Hooks:
    """Callbacks by event name. A failing hook is logged and never fails the job."""

    def __init__(self) -> None:
        self._hooks: dict[EventName, list[Hook]] = {name: [] for name in EVENT_NAMES}

    def add(self, name: EventName, hook: Hook) -> None:
        """Call `hook(event)` for every event called `name`; async hooks are awaited."""
        if name not in self._hooks:
            raise ValueError(f"unknown event {name!r}; choose one of {', '.join(EVENT_NAMES)}")
        self._hooks[name].append(hook)

    def wants(self, name: EventName) -> bool:
        """Whether any hook listens for `name` (lets callers skip building the event)."""
        return bool(self._hooks[name])

    async def emit(self, event: Event) -> None:
        """Run the hooks of `event.name`, in order."""
        hooks = self._hooks[event.name]
        if not hooks:
            return
        for hook in hooks:
            try:
                outcome = hook(event)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception(
                    "%s hook failed",
                    event.name,
                    extra={"action": "hook_failed", "job_id": event.job_id},
                )
