"""A database's catalog as plain data, to compare schemas before and after migrations."""

from __future__ import annotations

from typing import Any

import asyncpg

# Everything but Postgres' own schemas.
_USER_SCHEMAS = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"

_QUERIES = {
    "schemas": f"SELECT n.nspname FROM pg_namespace AS n WHERE {_USER_SCHEMAS}",
    "relations": f"""
        SELECT n.nspname, c.relname, c.relkind::text, obj_description(c.oid, 'pg_class')
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMAS}""",
    "columns": f"""
        SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum)
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE {_USER_SCHEMAS} AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": f"""
        SELECT n.nspname, co.conname, pg_get_constraintdef(co.oid)
        FROM pg_constraint AS co JOIN pg_namespace AS n ON n.oid = co.connamespace
        WHERE {_USER_SCHEMAS}""",
    "indexes": """
        SELECT schemaname, indexname, indexdef FROM pg_indexes
        WHERE schemaname NOT LIKE 'pg\\_%' AND schemaname <> 'information_schema'""",
    "functions": f"""
        SELECT n.nspname, p.proname, pg_get_functiondef(p.oid)
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE {_USER_SCHEMAS}""",
    "triggers": f"""
        SELECT n.nspname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger AS t
        JOIN pg_class AS c ON c.oid = t.tgrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMAS} AND NOT t.tgisinternal""",
    "views": """
        SELECT schemaname, viewname, definition FROM pg_views
        WHERE schemaname NOT LIKE 'pg\\_%' AND schemaname <> 'information_schema'""",
    "types": f"""
        SELECT n.nspname, t.typname, t.typtype::text,
               array(SELECT e.enumlabel::text FROM pg_enum AS e
                     WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
        FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        WHERE {_USER_SCHEMAS} AND t.typtype IN ('e', 'd')""",
}


async def catalog(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Schemas, relations, columns, constraints, indexes, functions, triggers, views, types
    and comments outside Postgres' own schemas, each kind a sorted list of tuples."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    for kind, query in _QUERIES.items():
        rows = await conn.fetch(query)
        result[kind] = sorted((tuple(r) for r in rows), key=repr)
    return result


async def catalog_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """`catalog()` of the database at `url`."""
    conn = await asyncpg.connect(url)
    try:
        return await catalog(conn)
    finally:
        await conn.close()


def added(
    before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]
) -> dict[str, list[tuple[Any, ...]]]:
    """What `after` has that `before` lacks, by kind."""
    return {kind: [row for row in after[kind] if row not in before[kind]] for kind in after}


def removed(
    before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]
) -> dict[str, list[tuple[Any, ...]]]:
    """What `before` had that `after` lacks, by kind."""
    return added(after, before)
