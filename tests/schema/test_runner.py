"""pgqueue.schema: versions up and down, the record, the lock, savepoints, adoption."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pgqueue import schema
from tests.schema.catalog import catalog


async def _record(conn: asyncpg.Connection) -> int | None:
    if await conn.fetchval("SELECT to_regclass('pgqueue.schema_version')") is None:
        return None
    value: int | None = await conn.fetchval("SELECT version FROM pgqueue.schema_version")
    return value


def test_every_version_ships_an_upgrade_and_a_downgrade() -> None:
    assert schema.LATEST >= 2
    for version in range(1, schema.LATEST + 1):
        script = schema.script(version)
        assert script.version == version
        assert script.upgrade.strip() and script.downgrade.strip()
        assert schema.UP_MARKER not in script.upgrade + script.downgrade
        assert schema.DOWN_MARKER not in script.upgrade + script.downgrade
    assert schema.script(1).upgrade.startswith("CREATE SCHEMA pgqueue;")
    assert schema.script(1).downgrade.rstrip().endswith("DROP SCHEMA pgqueue;")


def test_out_of_range_targets_are_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\."):
        asyncio.run(schema.upgrade(None, to=schema.LATEST + 1))
    with pytest.raises(ValueError, match=r"0\.\."):
        asyncio.run(schema.downgrade(None, to=-1))
    with pytest.raises(ValueError, match=r"1\.\."):
        schema.script(0)


async def test_up_down_up(conn: asyncpg.Connection) -> None:
    empty = await catalog(conn)
    assert await schema.current_version(conn) == 0
    assert await schema.upgrade(conn) == list(range(1, schema.LATEST + 1))
    assert await schema.current_version(conn) == schema.LATEST == await _record(conn)
    head = await catalog(conn)
    assert await schema.upgrade(conn) == []  # a no-op the second time
    assert await catalog(conn) == head

    assert await schema.downgrade(conn, to=0) == list(range(schema.LATEST, 0, -1))
    assert await schema.current_version(conn) == 0
    assert await catalog(conn) == empty  # nothing of pgqueue left, the record included
    assert await schema.downgrade(conn, to=0) == []

    assert await schema.upgrade(conn) == list(range(1, schema.LATEST + 1))
    assert await catalog(conn) == head


async def test_each_downgrade_restores_the_previous_version_exactly(
    conn: asyncpg.Connection,
) -> None:
    by_version = {}
    for version in range(1, schema.LATEST + 1):
        assert await schema.upgrade(conn, to=version) == [version]
        by_version[version] = await catalog(conn)
    for version in range(schema.LATEST, 1, -1):
        assert await schema.downgrade(conn, to=version - 1) == [version]
        assert await _record(conn) == version - 1
        # Function bodies, views, comments and all: the catalog is the one the upgrade made.
        assert await catalog(conn) == by_version[version - 1]


async def test_upgrade_never_goes_down_and_downgrade_never_up(conn: asyncpg.Connection) -> None:
    await schema.upgrade(conn)
    assert await schema.upgrade(conn, to=1) == []
    assert await schema.current_version(conn) == schema.LATEST
    await schema.downgrade(conn, to=1)
    assert await schema.downgrade(conn, to=1) == []
    assert await schema.current_version(conn) == 1


async def test_concurrent_runs_apply_each_version_once(empty_url: str) -> None:
    connections = [await asyncpg.connect(empty_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(schema.upgrade(c) for c in connections))
    finally:
        for c in connections:
            await c.close()
    # Without the advisory lock the losers fail on "schema pgqueue already exists".
    assert sorted(results) == [[], [], [], list(range(1, schema.LATEST + 1))]


async def test_a_callers_transaction_is_joined(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("CREATE TABLE app_orders (id int)")  # the caller's own work
        assert await schema.upgrade(conn) == list(range(1, schema.LATEST + 1))
        assert conn.is_in_transaction()  # a savepoint: the caller's transaction is still open
    assert await schema.current_version(conn) == schema.LATEST
    assert await conn.fetchval("SELECT to_regclass('app_orders')") is not None


async def test_a_rolled_back_caller_leaves_nothing(conn: asyncpg.Connection) -> None:
    transaction = conn.transaction()
    await transaction.start()
    await schema.upgrade(conn)
    await transaction.rollback()
    assert await schema.current_version(conn) == 0
    # A transaction asyncpg did not open (a plain BEGIN) is joined too.
    await conn.execute("BEGIN")
    await schema.upgrade(conn, to=1)
    await conn.execute("ROLLBACK")
    assert await schema.current_version(conn) == 0


async def test_a_failed_run_rolls_back_only_itself(conn: asyncpg.Connection) -> None:
    await schema.upgrade(conn, to=1)
    # Something of version 2's already there: its script fails half-way.
    await conn.execute("CREATE VIEW pgqueue.job_status AS SELECT 1 AS id")
    function_before = await conn.fetchval(
        "SELECT prosrc FROM pg_proc WHERE proname = 'count_running'"
    )
    async with conn.transaction():
        await conn.execute("CREATE TABLE app_orders (id int)")
        with pytest.raises(asyncpg.DuplicateTableError):
            await schema.upgrade(conn)
        # The caller's transaction is still usable, and holds its own work.
        assert await conn.fetchval("SELECT to_regclass('app_orders')") is not None
    assert await schema.current_version(conn) == 1
    function_after = await conn.fetchval(
        "SELECT prosrc FROM pg_proc WHERE proname = 'count_running'"
    )
    assert function_after == function_before  # the first half of the script was undone
    # On its own (no caller's transaction) a failure leaves nothing either.
    with pytest.raises(asyncpg.DuplicateTableError):
        await schema.upgrade(conn)
    assert await schema.current_version(conn) == 1 == await _record(conn)


async def test_an_unrecorded_version_1_schema_is_adopted(conn: asyncpg.Connection) -> None:
    # What alembic revision 0001_pgqueue created before pgqueue kept a record.
    await conn.execute(schema.script(1).upgrade)
    await conn.execute("INSERT INTO pgqueue.jobs (kind) VALUES ('kept')")
    assert await _record(conn) is None
    assert await schema.current_version(conn) == 1
    assert await schema.upgrade(conn, to=1) == []  # adopts: writes the record, applies nothing
    assert await _record(conn) == 1
    assert await schema.upgrade(conn) == list(range(2, schema.LATEST + 1))
    assert await _record(conn) == schema.LATEST
    assert await conn.fetchval("SELECT kind FROM pgqueue.jobs") == "kept"


async def test_an_unrecorded_schema_is_adopted_on_the_way_up(conn: asyncpg.Connection) -> None:
    await conn.execute(schema.script(1).upgrade)
    assert await schema.upgrade(conn) == list(range(2, schema.LATEST + 1))
    assert await _record(conn) == schema.LATEST


async def test_an_unrecorded_schema_can_be_removed(conn: asyncpg.Connection) -> None:
    empty = await catalog(conn)
    await conn.execute(schema.script(1).upgrade)
    assert await schema.downgrade(conn, to=0) == [1]
    assert await catalog(conn) == empty


async def test_a_foreign_pgqueue_schema_is_left_alone(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE SCHEMA pgqueue; CREATE TABLE pgqueue.other (id int)")
    with pytest.raises(schema.SchemaVersionError, match="belongs to something else"):
        await schema.upgrade(conn)
    with pytest.raises(schema.SchemaVersionError):
        await schema.current_version(conn)
    assert await conn.fetchval("SELECT to_regclass('pgqueue.other')") is not None


async def test_a_newer_database_is_not_downgraded_blindly(conn: asyncpg.Connection) -> None:
    await schema.upgrade(conn)
    await conn.execute("UPDATE pgqueue.schema_version SET version = $1", schema.LATEST + 1)
    assert await schema.upgrade(conn) == []
    with pytest.raises(schema.SchemaVersionError, match="newer"):
        await schema.downgrade(conn, to=0)
    await conn.execute("DELETE FROM pgqueue.schema_version")
    with pytest.raises(schema.SchemaVersionError, match="empty"):
        await schema.upgrade(conn)
