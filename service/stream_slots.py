"""`StreamSlots`: how many live-progress streams each user, and the process, may hold open.

A stream holds a connection (a file descriptor) for up to `STREAM_MAX_S`. Unbounded, one
token opened a thousand and the process ran out of descriptors for everyone. The counts are
per API process: each process guards its own descriptors, which is what runs out.
"""

from __future__ import annotations

from collections import Counter

from service.errors import ApiError

RETRY_AFTER_S = 5  # what a refused stream is told: a closed stream frees its place at once


class StreamSlots:
    """Counts open streams per user and in total; refuses one past either limit.

    Args:
        per_user: `STREAM_MAX_PER_USER`, most streams one user may have open.
        total: most streams of the process, below its connection limit, so that the other
            requests (`/healthz` among them) always find a connection.
    """

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        """Streams open now, all users together."""
        return self._open.total()

    def of(self, user: str) -> int:
        """Streams `user` has open now."""
        return self._open[user]

    def take(self, user: str) -> None:
        """Count a new stream of `user`, or raise a 429 `ApiError` saying which limit is full.

        Synchronous on purpose: no await between the check and the count, so concurrent
        requests of one user cannot both pass the last place.
        """
        if self._open[user] >= self.per_user:
            raise ApiError(
                429,
                "too_many_streams",
                f"you have {self.per_user} live-progress streams open, the most allowed"
                " (STREAM_MAX_PER_USER); close one, or read the status instead",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        if self.open >= self.total:
            raise ApiError(
                429,
                "too_many_streams",
                f"this server has {self.total} live-progress streams open, the most it"
                " allows; read the status instead, or try again shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self._open[user] += 1

    def give_back(self, user: str) -> None:
        """The stream of `user` ended (done, timed out, cancelled or disconnected)."""
        self._open[user] -= 1
        if self._open[user] <= 0:
            del self._open[user]
