"""Schema version 4: an insert into pgqueue.jobs no longer notifies; the downgrade restores it."""

from __future__ import annotations

import asyncpg

from pgqueue import schema
from tests.schema.test_v2 import _listening, _sent

INSERT = "INSERT INTO pgqueue.jobs (queue, kind) SELECT 'q', 'k' FROM generate_series(1, $1)"


async def test_an_insert_notifies_up_to_version_3_and_not_from_version_4(
    conn: asyncpg.Connection, empty_url: str
) -> None:
    await schema.upgrade(conn, to=3)
    listener = await asyncpg.connect(empty_url)
    try:
        received = await _listening(listener)
        await conn.execute(INSERT, 3)
        assert await _sent(received, conn) == ["q"]  # the trigger: once per statement
        await schema.upgrade(conn, to=4)
        await conn.execute(INSERT, 3)
        assert await _sent(received, conn) == []
        await schema.downgrade(conn, to=3)
        await conn.execute(INSERT, 1)
        assert await _sent(received, conn) == ["q"]
    finally:
        await listener.close()
