"""pgqueue's queue dashboard: a Starlette app that any application on pgqueue can mount.

    from pgqueue.dashboard import create_app

    app.mount("/dashboard", create_app(queue, authorize=is_admin))

Per queue: its counts, the age of its oldest waiting job, its jobs finished per minute over the
last hour (an SVG drawn on the server), pause and resume; the jobs, filtered by queue, state
and kind, newest first, page by page; a job's payload, progress, attempts, timings and last
error with its traceback; retry and cancel. It reads and acts only through `Queue`'s public
methods. Needs Starlette and Jinja2: `pip install 'pgqueue-durable[dashboard]'`.
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
