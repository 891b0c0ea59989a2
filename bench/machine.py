"""What the figures were measured on: the machine, the interpreter and the server's settings."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import asyncpg


async def describe(admin_url: str) -> dict[str, object]:
    """The machine and the server behind `admin_url`, for `results.json`."""
    conn = await asyncpg.connect(admin_url)
    try:
        server_version = await conn.fetchval("SHOW server_version")
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "shared_buffers")
        }
    finally:
        await conn.close()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "postgres": server_version,
        "postgres_settings": settings,
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
