"""How the dashboard writes times and durations: a moment as how long ago (or how soon) it is,
with the absolute UTC time in its `title` (shown on hover) and `datetime`, so that the page's
script can keep the relative text current without asking the server."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from markupsafe import Markup, escape


def when(moment: datetime | None) -> str:
    """The absolute time, in UTC ('' for None)."""
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(seconds: float) -> str:
    """`seconds` from now in words: '3 min ago', 'in 20 s', 'just now'."""
    size = abs(seconds)
    if size < 1:
        return "just now"
    if size < 90:
        amount = f"{size:.0f} s"
    elif size < 90 * 60:
        amount = f"{size / 60:.0f} min"
    elif size < 36 * 3600:
        amount = f"{size / 3600:.0f} h"
    else:
        amount = f"{size / 86400:.0f} d"
    return f"{amount} ago" if seconds < 0 else f"in {amount}"


def ago(moment: datetime | None, now: datetime | None = None) -> Markup:
    """A `<time>` element: relative text, absolute UTC on hover ('' for None)."""
    if moment is None:
        return Markup("")
    now = now or datetime.now(UTC)
    text = relative((moment - now).total_seconds())
    stamp = moment.astimezone(UTC)
    return Markup('<time datetime="{}" title="{}" data-relative>{}</time>').format(
        escape(stamp.isoformat()), escape(when(moment)), escape(text)
    )


def duration(seconds: float | None) -> str:
    """A duration in the unit that reads best ('-' when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
