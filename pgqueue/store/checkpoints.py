"""Checkpoints: the value of a step an attempt ran, kept for the job's later attempts."""

from __future__ import annotations

import dataclasses

from pgqueue import queries
from pgqueue.store._common import Executor


@dataclasses.dataclass(frozen=True, slots=True)
class CheckpointRead:
    """What a held job finds under one checkpoint name.

    Args:
        held: the lease is still the reader's (False: nothing else here is meaningful).
        value: the bytes stored under the name, None when nothing is stored yet.
    """

    held: bool
    value: bytes | None = None


LOST = CheckpointRead(held=False)


async def read_checkpoint(db: Executor, job_id: int, lease_token: int, name: str) -> CheckpointRead:
    """The value a held job stored under `name` (fenced: `held` is False when the lease is
    lost, and then no value is returned)."""
    record = await db.fetchrow(queries.READ_CHECKPOINT, job_id, lease_token, name)
    if record is None:
        return LOST
    return CheckpointRead(held=True, value=record["value"])


async def save_checkpoint(
    db: Executor, job_id: int, lease_token: int, name: str, value: bytes
) -> CheckpointRead:
    """Store `value` under `name` for a held job (fenced), unless a value is stored already.

    Returns:
        What is stored under `name` now: `value`, or the value stored before it (the first
        stays); `held` False when the lease is lost and nothing was stored.
    """
    if await db.fetchval(queries.SAVE_CHECKPOINT, job_id, lease_token, name, value):
        return CheckpointRead(held=True, value=value)
    # Nothing inserted: the lease is lost, or the name holds a value already (this very save,
    # committed by a try whose answer the connection lost, or a racing call). One read says.
    return await read_checkpoint(db, job_id, lease_token, name)
