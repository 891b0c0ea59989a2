"""Schedules: which tick is due, the same on every worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgqueue import Registry
from pgqueue.schedules import Cron, Every, parse


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_an_interval_is_aligned_on_the_epoch() -> None:
    every = Every(300)
    assert every.latest(at("2026-12-02 10:07:13")) == at("2026-12-02 10:05:00")
    assert every.latest(at("2026-12-02 10:05:00")) == at("2026-12-02 10:05:00")  # due at once
    assert every.following(at("2026-12-02 10:05:00")) == at("2026-12-02 10:10:00")


def test_a_cron_tick_at_the_moment_itself_is_due() -> None:
    cron = Cron("*/5 * * * *")
    assert cron.latest(at("2026-12-02 10:05:00")) == at("2026-12-02 10:05:00")
    assert cron.latest(at("2026-12-02 10:09:59")) == at("2026-12-02 10:05:00")
    assert cron.following(at("2026-12-02 10:05:00")) == at("2026-12-02 10:10:00")
    daily = Cron("0 3 * * *")
    assert daily.latest(at("2026-12-02 02:59:00")) == at("2026-12-01 03:00:00")


@pytest.mark.parametrize("bad", ["", "* * *", "61 * * * *", "every minute", "* * * * * *"])
def test_a_bad_cron_expression_is_refused_at_registration(bad: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        Registry().periodic(bad, "k")


@pytest.mark.parametrize("bad", [0, 0.5, -1, float("nan"), float("inf")])
def test_a_bad_interval_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        parse(bad)


def test_names_are_unique_and_default_to_the_kind() -> None:
    registry = Registry()
    spec = registry.periodic(timedelta(minutes=1), "cleanup")
    assert spec.name == "cleanup" and spec.schedule.text == "every 60s"
    with pytest.raises(ValueError, match="exists"):
        registry.periodic(30, "cleanup")
    registry.periodic(30, "cleanup", name="cleanup-fast")
    assert [p.name for p in registry.periodics] == ["cleanup", "cleanup-fast"]


@pytest.mark.parametrize("seconds", [1.1, 1.7, 2.3, 7.77, 3600.1])
def test_a_fractional_interval_always_moves_on(seconds: float) -> None:
    # In floats, the tick after a tick of 1.1 s could be the tick itself: the scheduler then
    # fired nothing and woke again at once (77 passes in 4 s), and showed next = last.
    every = Every(seconds)
    tick = every.latest(at("2026-12-03 12:10:08.6"))
    for _ in range(2000):
        following = every.following(tick)
        assert following > tick
        assert every.latest(following) == following  # a tick is due at its own moment
        assert (following - tick).total_seconds() == pytest.approx(seconds, abs=1e-6)
        tick = following


@pytest.mark.parametrize("never", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
def test_a_cron_that_never_matches_is_refused_at_registration(never: str) -> None:
    with pytest.raises(ValueError, match="matches no date"):
        Registry().periodic(never, "k")


def test_a_cron_that_matches_rarely_is_accepted() -> None:
    leap = Cron("0 0 29 2 *")  # every four years (eight across 2100)
    assert leap.following(at("2097-01-01 00:00:00")) == at("2104-02-29 00:00:00")
    assert leap.latest(at("2103-12-31 00:00:00")) == at("2096-02-29 00:00:00")
