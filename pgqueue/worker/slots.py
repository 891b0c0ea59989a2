"""The worker's slots: how many jobs it may hold at once, and who holds them."""

from __future__ import annotations

import asyncio


class Slots:
    """A counting semaphore that can be taken in bulk without waiting.

    A slot is taken before a claim (so that the worker never claims more jobs than it may
    run) and given back when the job's outcome is written, or when a claim returns fewer jobs
    than it reserved for. Unlike `asyncio.Semaphore`, `take_all()` grabs every free slot at
    once, which is what a batched claim needs.

    Args:
        capacity: the most slots in use at once (the worker's concurrency).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.in_use = 0
        self.freed = asyncio.Event()

    @property
    def free(self) -> int:
        """Slots nobody holds."""
        return self.capacity - self.in_use

    def take_all(self) -> int:
        """Take every free slot; returns how many."""
        taken = self.free
        self.in_use += taken
        return taken

    def give_back(self, count: int) -> None:
        """Return `count` slots."""
        if count:
            self.in_use -= count
            assert self.in_use >= 0, "more slots given back than taken"
            self.freed.set()
