"""What every command shares: the connection and its schema check, errors, and the output (an
aligned table for people, one JSON object per line for scripts)."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from pgqueue import schema
from pgqueue.database import Database
from pgqueue.errors import SchemaMissing

MAX_CELL_CHARS = 60  # a table cell longer than this (an error, a payload) is cut, with "..."


class Exit(enum.IntEnum):
    """The exit status of every command."""

    OK = 0
    REFUSED = 1  # the database is unreachable, or refused what was asked
    USAGE = 2  # bad arguments, no DATABASE_URL, no (or an older) pgqueue schema


class CommandError(Exception):
    """A command's end with a message for stderr and an exit status."""

    def __init__(self, message: str, status: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.status = status


@contextlib.asynccontextmanager
async def connected(database: Database) -> AsyncIterator[asyncpg.Connection]:
    """One connection to a database whose pgqueue schema is this package's, for one command.

    Raises:
        CommandError: the schema is missing or older than this pgqueue (status 2), naming the
            command that installs or upgrades it.
    """
    conn = await database.connect()
    try:
        await check_schema(conn)
        yield conn
    finally:
        await conn.close()


async def check_schema(conn: asyncpg.Connection) -> None:
    """Refuse (status 2) a database without pgqueue's schema, or with an older version."""
    try:
        await schema.require(conn)
    except SchemaMissing as exc:
        raise CommandError(f"error: {exc}") from exc


def jsonable(value: Any) -> Any:
    """`value` as JSON can hold it: times in ISO 8601, decimals and enums as their text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    return value


def json_line(obj: Mapping[str, Any]) -> str:
    """One JSON object on one line."""
    return json.dumps(jsonable(obj), separators=(", ", ": "), ensure_ascii=False)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """An aligned table: a header line, then one line per row (cells cut to one line)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def error_line(error: str | None) -> str | None:
    """An error as one line: its last non-blank one (a traceback's ends with the exception)."""
    if error is None:
        return None
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return ago(value)
    text = " ".join(str(jsonable(value)).split())  # one line: tracebacks, JSON
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 3] + "..."


def ago(moment: datetime, now: datetime | None = None) -> str:
    """`moment` relative to now, compactly: `12s ago`, `3m ago`, `in 2h`."""
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    text = seconds_text(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def seconds_text(seconds: float) -> str:
    """A duration compactly: `850ms`, `12s`, `3m`, `5h`, `2d`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> timedelta:
    """`7d`, `12h`, `1h30m`, `90s` or plain seconds as a timedelta (argparse's `type=`).

    Raises:
        ValueError: anything else, or a negative duration.
    """
    cleaned = text.strip().lower()
    with contextlib.suppress(ValueError):
        seconds = float(cleaned)
        if seconds >= 0:
            return timedelta(seconds=seconds)
    parts = _DURATION_PART.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"not a duration: {text!r} (e.g. 7d, 12h, 1h30m, 90s)")
    return timedelta(seconds=sum(float(n) * _UNIT_S[u] for n, u in parts))
