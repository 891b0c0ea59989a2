"""7. Peers: placeholder."""

from __future__ import annotations

from typing import Any

from bench.context import Context


async def run(ctx: Context) -> dict[str, Any]:
    """Not yet."""
    return {}
