"""The per-minute chart of finished jobs, drawn as SVG on the server: no chart library, no
script, and it reads the same under the dashboard's strict Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from pgqueue.reports import FinishedMinute

WIDTH = 240  # px of the drawing; the page may scale it
HEIGHT = 40
# One colour per outcome, stacked bottom-up in this order.
OUTCOMES = (("succeeded", "#1f7a4d"), ("failed", "#b3261e"), ("cancelled", "#8a94a3"))


def finished_chart(series: Sequence[FinishedMinute], *, label: str) -> str:
    """An SVG bar per minute, its height the jobs finished then (scaled to the busiest minute),
    stacked by outcome, each with a tooltip; `label` names the chart for screen readers."""
    peak = max((minute.total for minute in series), default=0)
    bar_w = WIDTH / max(len(series), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"'
        f' role="img" aria-label="{escape(label)}" preserveAspectRatio="none">',
        f'<line x1="0" y1="{HEIGHT - 0.5}" x2="{WIDTH}" y2="{HEIGHT - 0.5}" class="axis"/>',
    ]
    for index, minute in enumerate(series):
        x = index * bar_w
        bottom = float(HEIGHT)
        tip = (
            f"{minute.minute:%H:%M} UTC: {minute.succeeded} succeeded, {minute.failed} failed, "
            f"{minute.cancelled} cancelled"
        )
        parts.append(f"<g><title>{escape(tip)}</title>")
        # A transparent full-height bar, so every minute (empty ones too) has a tooltip.
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{bar_w:.2f}" height="{HEIGHT}" fill="transparent"/>'
        )
        for name, colour in OUTCOMES:
            count = getattr(minute, name)
            if count and peak:
                height = max(1.0, (HEIGHT - 2) * count / peak)
                bottom -= height
                parts.append(
                    f'<rect x="{x + 0.5:.2f}" y="{bottom:.2f}" width="{max(bar_w - 1, 1):.2f}"'
                    f' height="{height:.2f}" fill="{colour}"/>'
                )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
