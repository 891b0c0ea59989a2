"""The governor's Prometheus series, read from `Queue.rate_limits()` and `Queue.budgets()`.

Part of `pgqueue.metrics` (which needs `prometheus-client`): one series per key with a row.
Every state of a breaker has its series, 0 or 1, so an alert on
`pgqueue_breaker_state{state="open"} == 1` has a series to watch before it first fires.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

BREAKER_STATES = ("closed", "open", "half_open")


def families(
    limits: Sequence[dict[str, Any]], budgets: Sequence[dict[str, Any]]
) -> Iterator[Metric]:
    """The rate limits' (learnt or fixed), breakers' and budgets' gauge families."""
    allowed = GaugeMetricFamily(
        "pgqueue_rate_limit_allowed",
        "Starts a rate-limit key allows per window (its learnt rate when adaptive)",
        labels=("key",),
    )
    period = GaugeMetricFamily(
        "pgqueue_rate_limit_period_seconds", "A rate-limit key's window", labels=("key",)
    )
    breaker = GaugeMetricFamily(
        "pgqueue_breaker_state",
        "1 for the state a key's circuit breaker is in (closed, open, half_open)",
        labels=("key", "state"),
    )
    for row in limits:
        if row["capacity"] is not None:
            allowed.add_metric([row["key"]], float(row["capacity"]))
        if row["period_s"] is not None:
            period.add_metric([row["key"]], float(row["period_s"]))
        if row["breaker_state"] is not None:
            for state in BREAKER_STATES:
                breaker.add_metric([row["key"], state], float(row["breaker_state"] == state))
    spent = GaugeMetricFamily(
        "pgqueue_budget_spent", "Spent in the budget's current window", labels=("key",)
    )
    amount = GaugeMetricFamily(
        "pgqueue_budget_amount", "A budget's amount per window", labels=("key",)
    )
    reserved = GaugeMetricFamily(
        "pgqueue_budget_reserved", "Held by running attempts", labels=("key",)
    )
    for row in budgets:
        spent.add_metric([row["key"]], float(row["spent"]))
        amount.add_metric([row["key"]], float(row["amount"]))
        reserved.add_metric([row["key"]], float(row["reserved"]))
    yield from (allowed, period, breaker, spent, amount, reserved)
