"""The backoff policy is pure: these properties hold for every attempt and jitter."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgqueue.retry import RetryPolicy


def test_delays_double_from_the_base_without_jitter() -> None:
    policy = RetryPolicy(base_s=5, cap_s=3600, jitter=0)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]


def test_delays_stop_at_the_cap() -> None:
    policy = RetryPolicy(base_s=5, cap_s=60, jitter=0)
    assert policy.delay_s(10) == 60
    assert policy.delay_s(10_000) == 60  # no overflow for absurd attempt numbers


@given(
    base_s=st.floats(min_value=0, max_value=100),
    extra_cap_s=st.floats(min_value=0, max_value=10_000),
    jitter=st.floats(min_value=0, max_value=0.99),
    attempt=st.integers(min_value=1, max_value=200),
    seed=st.integers(),
)
def test_delay_is_within_jitter_of_capped_exponential(
    base_s: float, extra_cap_s: float, jitter: float, attempt: int, seed: int
) -> None:
    policy = RetryPolicy(base_s=base_s, cap_s=base_s + extra_cap_s, jitter=jitter)
    nominal = min(policy.cap_s, base_s * 2.0 ** min(attempt - 1, 64))
    delay = policy.delay_s(attempt, random.Random(seed))
    assert nominal * (1 - jitter) - 1e-9 <= delay <= nominal * (1 + jitter) + 1e-9


@given(attempt=st.integers(min_value=1, max_value=30), seed=st.integers())
def test_nominal_delay_never_shrinks_with_attempts(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base_s=1, cap_s=1000, jitter=0)
    assert policy.delay_s(attempt + 1) >= policy.delay_s(attempt)


def test_next_run_at_adds_the_delay_to_now() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    policy = RetryPolicy(base_s=5, jitter=0)
    assert policy.next_run_at(2, now) == now + timedelta(seconds=10)


@pytest.mark.parametrize(
    "kwargs",
    [{"base_s": -1}, {"base_s": 10, "cap_s": 5}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        RetryPolicy().delay_s(0)
