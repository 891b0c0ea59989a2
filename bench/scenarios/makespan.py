"""5. Storyboard makespan (extension point).

30 shots of one project, one `python -m service worker`, a fake upstream of fixed latency, the
per-project cap `STORYBOARD_CONCURRENCY=3`, compared with the ideal `ceil(30 / 3) * latency`.
The storyboard service is built separately; until `service` can be imported this scenario
reports itself skipped. To implement it: start the API (or call `service.storyboards` directly)
on a fresh database, point `IMAGE_PROVIDER=http` / `IMAGE_API_BASE` at a local fake upstream
that answers after a fixed delay, start the worker daemon, POST the 30-shot project and its
`storyboards/generate`, await `status.done`, and return `storyboard_makespan_s`,
`storyboard_ideal_s` and their ratio.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from bench.context import Context


async def run(ctx: Context) -> dict[str, Any]:
    """Skipped until the storyboard service and its fake upstream hook exist."""
    reason = (
        "the storyboard service is not in this tree yet"
        if importlib.util.find_spec("service") is None
        else "not implemented yet (see bench/scenarios/makespan.py)"
    )
    ctx.say(f"makespan: skipped: {reason}")
    return {"storyboard_makespan_skipped": reason}
