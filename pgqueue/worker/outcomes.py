"""`Outcomes`: what the attempts a worker ran came to, counted as their outcomes are written."""

from __future__ import annotations

import dataclasses
import enum


class End(enum.Enum):
    """How an attempt ended, as counted (each an `Outcomes` field)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # for good, cancels included
    RETRIED = "retried"  # requeued, its attempt spent
    RELEASED = "released"  # requeued, its attempt not spent
    LOST = "lost"  # the lease was gone: nothing written


@dataclasses.dataclass(slots=True)
class Outcomes:
    """What the attempts this worker ran came to (a drain reports them).

    `ran` counts attempts started; each ends in exactly one of the others once its outcome
    is written: `succeeded`, `failed` (for good, cancels included), `retried` (requeued with
    its attempt spent), `released` (requeued without), `lost` (the lease was gone, so the
    outcome was not ours to write). Attempts still running are in `ran` alone.
    """

    ran: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0
    busy_s: float = 0.0  # seconds spent in finished attempts, summed

    def count(self, end: End) -> None:
        """Count one attempt that ended so."""
        if end is End.SUCCEEDED:
            self.succeeded += 1
        elif end is End.FAILED:
            self.failed += 1
        elif end is End.RETRIED:
            self.retried += 1
        elif end is End.RELEASED:
            self.released += 1
        else:
            self.lost += 1

    def as_dict(self) -> dict[str, int]:
        """The counts (for a JSON answer)."""
        return {
            "ran": self.ran,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retried": self.retried,
            "released": self.released,
            "lost": self.lost,
        }

    @property
    def mean_attempt_s(self) -> float | None:
        """The mean length of an attempt that ended, or None before the first."""
        ended = self.succeeded + self.failed + self.retried + self.released + self.lost
        return self.busy_s / ended if ended else None
