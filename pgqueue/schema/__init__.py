"""pgqueue's own schema: versioned SQL scripts shipped in the package, and their runner.

    await schema.upgrade(conn)            # to LATEST; returns the versions applied
    await schema.downgrade(conn, to=0)    # removes every pgqueue object
    await schema.current_version(conn)    # 0 when pgqueue was never installed

or, from a shell, `python -m pgqueue migrate` (see `pgqueue.__main__`).

Each version is one file, `vNNNN.sql`, with an upgrade part after a `-- migrate:up` line and
its inverse after `-- migrate:down` (dbmate's markers). One file rather than two: a change and
its inverse are written, reviewed and diffed side by side, and cannot drift apart unnoticed.

The version lives in `pgqueue.schema_version`, inside pgqueue's own schema, so it never
collides with an application's `alembic_version` (or any other tool's record), and dropping
pgqueue's schema drops the record with it. A database whose `pgqueue` schema was created
before this record existed (by the application's alembic revision `0001_pgqueue`) is adopted
as version 1.

Every run takes a transaction-scoped advisory lock first, so concurrent runs (two deploys
starting at once) apply each version once; all of a run's work is one transaction, or one
savepoint of the caller's transaction when one is open (an alembic revision, or an
application installing pgqueue beside its own tables), so a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.resources
import logging
import re
from collections.abc import AsyncIterator

import asyncpg

from pgqueue.errors import PgQueueError, SchemaMissing

__all__ = [
    "LATEST",
    "SchemaVersionError",
    "Script",
    "current_version",
    "downgrade",
    "missing",
    "require",
    "script",
    "upgrade",
]

logger = logging.getLogger(__name__)

UP_MARKER = "-- migrate:up"
DOWN_MARKER = "-- migrate:down"
_FILE_NAME = re.compile(r"v(\d{4})\.sql")


class SchemaVersionError(PgQueueError):
    """The database's pgqueue schema is in a state this runner cannot migrate from."""


@dataclasses.dataclass(frozen=True, slots=True)
class Script:
    """One schema version: its number and the SQL that applies and reverts it.

    Args:
        version: the version this script brings the schema to (1, 2, ...).
        upgrade: the SQL from version - 1 to version (several statements).
        downgrade: the SQL from version back to version - 1.
    """

    version: int
    upgrade: str
    downgrade: str


def _versions_on_disk() -> list[int]:
    folder = importlib.resources.files(__name__)
    found = sorted(
        int(match.group(1))
        for entry in folder.iterdir()
        if (match := _FILE_NAME.fullmatch(entry.name)) is not None
    )
    # A gap would make "the latest version" ambiguous and skip a change on upgrade.
    if found != list(range(1, len(found) + 1)):
        raise SchemaVersionError(f"pgqueue.schema holds versions {found}; expected 1..N")
    return found


LATEST: int = len(_versions_on_disk())
"""The newest schema version this package ships (what `upgrade()` goes to by default)."""


@functools.cache
def script(version: int) -> Script:
    """The script of `version` (1..LATEST), read from the package data once.

    Raises:
        ValueError: `version` is not one this package ships.
        SchemaVersionError: the file does not hold exactly one up and one down marker.
    """
    if not 1 <= version <= LATEST:
        raise ValueError(f"schema version must be within 1..{LATEST}, got {version}")
    name = f"v{version:04d}.sql"
    text = importlib.resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    stripped = [line.rstrip() for line in lines]
    if stripped.count(UP_MARKER) != 1 or stripped.count(DOWN_MARKER) != 1:
        raise SchemaVersionError(f"{name} needs one {UP_MARKER!r} and one {DOWN_MARKER!r} line")
    up_at, down_at = stripped.index(UP_MARKER), stripped.index(DOWN_MARKER)
    if down_at < up_at:
        raise SchemaVersionError(f"{name}: {UP_MARKER!r} must come before {DOWN_MARKER!r}")
    return Script(
        version=version,
        upgrade="".join(lines[up_at + 1 : down_at]).strip() + "\n",
        downgrade="".join(lines[down_at + 1 :]).strip() + "\n",
    )


# -- lock_schema: one runner at a time per database, until the (outer) transaction ends
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(hashtext('pgqueue.schema'))"

# -- read_presence: what of pgqueue exists (to_regclass answers NULL instead of failing)
READ_PRESENCE = """
SELECT to_regclass('pgqueue.schema_version') IS NOT NULL AS has_record,
       to_regnamespace('pgqueue') IS NOT NULL AS has_schema,
       to_regclass('pgqueue.jobs') IS NOT NULL AS has_jobs
"""

# -- read_version: the recorded version (one row at most)
READ_VERSION = "SELECT version FROM pgqueue.schema_version"

# -- create_version_table: the record, created right after version 1's script made the schema
CREATE_VERSION_TABLE = """
CREATE TABLE pgqueue.schema_version (
    singleton   boolean PRIMARY KEY DEFAULT true
                    CONSTRAINT schema_version_one_row CHECK (singleton),
    version     integer NOT NULL CONSTRAINT schema_version_positive CHECK (version >= 1),
    migrated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgqueue.schema_version IS
    'The version of the pgqueue schema, kept by pgqueue.schema (python -m pgqueue migrate); '
    'independent of any alembic_version of the application';
"""

# -- write_version: record $1 as the current version
WRITE_VERSION = """
INSERT INTO pgqueue.schema_version (version) VALUES ($1)
ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, migrated_at = now()
"""

# -- drop_version_table: before version 1's downgrade drops the schema it lives in
DROP_VERSION_TABLE = "DROP TABLE IF EXISTS pgqueue.schema_version"

# The savepoint a run takes inside a caller's transaction.
SAVEPOINT = "SAVEPOINT pgqueue_schema"
ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT pgqueue_schema"
RELEASE_SAVEPOINT = "RELEASE SAVEPOINT pgqueue_schema"


async def current_version(conn: asyncpg.Connection) -> int:
    """The database's pgqueue schema version: 0 when absent, 1 for an unrecorded old schema.

    Reads without the lock; a run in progress elsewhere shows once it commits.

    Raises:
        SchemaVersionError: a `pgqueue` schema exists that pgqueue did not create.
    """
    version, _ = await _read(conn)
    return version


def missing(version: int | None = None, detail: str | None = None) -> SchemaMissing:
    """The error that says the schema is missing (`version` 0), older than `LATEST`, or (with
    `detail`, the database's own words) lacks what a statement needed, and what to run."""
    if version == 0:
        what = "this database has no pgqueue schema"
    elif version is not None:
        what = (
            f"this database has pgqueue schema version {version}, older than this pgqueue"
            f" needs ({LATEST})"
        )
    else:
        what = f"pgqueue's schema here is missing or older than version {LATEST} ({detail})"
    return SchemaMissing(
        f"{what}: run `python -m pgqueue migrate` with the same DATABASE_URL (or the "
        "application's migrations, e.g. `python -m alembic upgrade head`)"
    )


async def require(conn: asyncpg.Connection) -> None:
    """Raise `SchemaMissing` unless the database's schema is at least `LATEST` (a newer one
    is accepted: a rolling deploy migrates before it replaces the workers)."""
    version = await current_version(conn)
    if version < LATEST:
        raise missing(version)


async def upgrade(conn: asyncpg.Connection, to: int | None = None) -> list[int]:
    """Apply the scripts after the current version, up to `to` (default `LATEST`).

    Never goes down: a database already at or past `to` is left as it is. An unrecorded
    version-1 schema is adopted (its record written) on the way.

    Args:
        conn: where to migrate; a transaction already open on it is joined as a savepoint.
        to: the version to reach, 0..LATEST.

    Returns:
        The versions applied, in order (empty when there was nothing to do).

    Raises:
        ValueError: `to` is outside 0..LATEST.
        SchemaVersionError: a `pgqueue` schema exists that pgqueue did not create.
    """
    target = LATEST if to is None else _checked(to)
    applied: list[int] = []
    async with _atomic(conn):
        await conn.execute(LOCK_SCHEMA)
        current, recorded = await _read(conn)
        if current and not recorded:
            logger.info(
                "adopting the existing pgqueue schema as version %d",
                current,
                extra={"action": "schema_adopt"},
            )
            await conn.execute(CREATE_VERSION_TABLE)
            await conn.execute(WRITE_VERSION, current)
        for version in range(current + 1, target + 1):
            logger.info(
                "applying pgqueue schema version %d", version, extra={"action": "schema_upgrade"}
            )
            # Simple-query protocol (no arguments): it takes a whole script, `$$` bodies too.
            await conn.execute(script(version).upgrade)
            if version == 1:
                await conn.execute(CREATE_VERSION_TABLE)
            applied.append(version)
        if applied:
            await conn.execute(WRITE_VERSION, target)
    return applied


async def downgrade(conn: asyncpg.Connection, to: int) -> list[int]:
    """Revert versions down to `to`; `to=0` removes every pgqueue object, data included.

    Never goes up: a database at or below `to` is left as it is.

    Args:
        conn: where to migrate; a transaction already open on it is joined as a savepoint.
        to: the version to keep, 0..LATEST.

    Returns:
        The versions reverted, newest first (empty when there was nothing to do).

    Raises:
        ValueError: `to` is outside 0..LATEST.
        SchemaVersionError: the database is newer than this package (no script to revert
            it), or holds a `pgqueue` schema that pgqueue did not create.
    """
    target = _checked(to)
    reverted: list[int] = []
    async with _atomic(conn):
        await conn.execute(LOCK_SCHEMA)
        current, _ = await _read(conn)
        if current > LATEST:
            raise SchemaVersionError(
                f"the database's pgqueue schema is version {current}, newer than this pgqueue "
                f"knows ({LATEST}): downgrade with the pgqueue release that installed it"
            )
        for version in range(current, target, -1):
            logger.info(
                "reverting pgqueue schema version %d",
                version,
                extra={"action": "schema_downgrade"},
            )
            if version == 1:
                await conn.execute(DROP_VERSION_TABLE)
            await conn.execute(script(version).downgrade)
            reverted.append(version)
        if reverted and target >= 1:
            await conn.execute(WRITE_VERSION, target)
    return reverted


def _checked(to: int) -> int:
    if not 0 <= to <= LATEST:
        raise ValueError(f"the target version must be within 0..{LATEST}, got {to}")
    return to


async def _read(conn: asyncpg.Connection) -> tuple[int, bool]:
    """The current version and whether it is recorded (False: absent, or adoptable v1)."""
    presence = await conn.fetchrow(READ_PRESENCE)
    if presence["has_record"]:
        version = await conn.fetchval(READ_VERSION)
        if version is None:
            # The table exists but its row was deleted by hand: guessing could re-run a script.
            raise SchemaVersionError(
                "pgqueue.schema_version is empty; insert the schema's version before migrating"
            )
        return int(version), True
    if not presence["has_schema"]:
        return 0, False
    if presence["has_jobs"]:
        return 1, False  # created by alembic revision 0001_pgqueue, before the record existed
    raise SchemaVersionError(
        "a schema named pgqueue exists without pgqueue's tables: it belongs to something else; "
        "rename or drop it before installing pgqueue"
    )


@contextlib.asynccontextmanager
async def _atomic(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """One transaction of its own, or a savepoint of the caller's open transaction.

    Plain SAVEPOINT statements rather than a nested `conn.transaction()`: asyncpg refuses to
    nest inside a transaction it did not open itself (a caller's `BEGIN`), and this way a
    failed run rolls back only its own work and leaves the caller's transaction usable.
    """
    if not conn.is_in_transaction():
        async with conn.transaction():
            yield
        return
    await conn.execute(SAVEPOINT)
    try:
        yield
    except BaseException:
        await conn.execute(ROLLBACK_TO_SAVEPOINT)
        await conn.execute(RELEASE_SAVEPOINT)
        raise
    await conn.execute(RELEASE_SAVEPOINT)
