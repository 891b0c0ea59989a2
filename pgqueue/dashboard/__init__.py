"""pgqueue's queue dashboard: a Starlette app that any application on pgqueue can mount.

    from pgqueue.dashboard import create_app

    app.mount("/dashboard", create_app(queue, authorize=is_admin))

Per queue: its counts, the age of its oldest waiting job, its jobs finished per minute over the
last hour (an SVG drawn on the server), pause and resume; the workers alive (their queues, slots
in use, last heartbeat); each kind's run time percentiles (p50, p95, p99) over the last hour;
each rate-limit key's limit, learnt rate and breaker, and the budgets; the jobs, filtered by
queue, state, kind and payload (a JSON object the payload contains), newest first, page by page,
with bulk retry and bulk cancel of every job of the filter (confirmed with the number of jobs);
a job's payload, progress, timings and its attempts (worker, duration, error, traceback); retry
and cancel. Counts and job states stay current without a reload (the page polls a small JSON
answer every 2 s while it is visible); times read "3 min ago", the UTC time on hover.
Needs Starlette and Jinja2: `pip install 'pgqueue-durable[dashboard]'`.
"""

from __future__ import annotations

try:
    from pgqueue.dashboard.app import COOKIE, Authorize, create_app
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"pgqueue.dashboard needs Starlette and Jinja2 ({exc.name} is missing): "
        "pip install 'pgqueue-durable[dashboard]'"
    ) from exc

__all__ = ["COOKIE", "Authorize", "create_app"]
