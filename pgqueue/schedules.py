"""When periodic jobs are due: cron expressions (UTC) and fixed intervals.

A schedule only answers "which tick is the latest at or before this moment?" and "which comes
next?"; the scheduler (pgqueue/worker/scheduler.py) turns the latest tick into at most one job
across the whole fleet. Ticks are the same on every worker: a cron tick is a calendar minute,
an interval tick a multiple of the interval since the Unix epoch.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

MIN_INTERVAL_S = 1.0  # finer ticks would be a busy loop, not a schedule
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# The longest gap between two ticks of a cron expression that has any: February 29th skips
# 2100 (8 years). Bounding croniter's search also keeps a failing one from taking seconds.
MAX_YEARS_BETWEEN_TICKS = 8


class Schedule(Protocol):
    """A sequence of ticks."""

    @property
    def text(self) -> str:
        """The schedule as the user wrote it (stored with the schedule, shown in the dashboard)."""
        ...

    def latest(self, now: datetime) -> datetime:
        """The latest tick at or before `now`."""
        ...

    def following(self, tick: datetime) -> datetime:
        """The first tick after `tick`."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Every:
    """Every `seconds`, aligned on the epoch (so every worker agrees on the ticks).

    Ticks are whole microseconds since the epoch (what a timestamptz holds), computed in
    integers: in floats, `floor(elapsed / 1.1) * 1.1` can land a hair below the tick it started
    from, so the tick after a tick was the tick itself (a scheduler pass every few ms).
    """

    seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= MIN_INTERVAL_S):
            raise ValueError(
                f"an interval must be at least {MIN_INTERVAL_S:g} s, got {self.seconds!r}"
            )

    @property
    def text(self) -> str:
        return f"every {self.seconds:g}s"

    @property
    def _step_us(self) -> int:
        return round(self.seconds * 1_000_000)

    def latest(self, now: datetime) -> datetime:
        elapsed_us = (now - EPOCH) // MICROSECOND
        return EPOCH + (elapsed_us // self._step_us * self._step_us) * MICROSECOND

    def following(self, tick: datetime) -> datetime:
        return self.latest(tick) + self._step_us * MICROSECOND


@dataclasses.dataclass(frozen=True, slots=True)
class Cron:
    """A five-field cron expression, read in UTC (`croniter`, the `cron` extra).

    An expression that names no real date (`0 0 30 2 *`, February 30th) is valid cron syntax
    but has no tick: it is refused here, at registration, rather than failing every time the
    scheduler asks for its ticks.
    """

    text: str

    def __post_init__(self) -> None:
        croniter = _croniter()
        if not croniter.is_valid(self.text) or len(self.text.split()) != 5:
            raise ValueError(
                f"not a five-field cron expression: {self.text!r} (e.g. '*/5 * * * *')"
            )
        try:
            self.following(datetime.now(UTC))
        except _bad_date() as exc:
            raise ValueError(
                f"the cron expression {self.text!r} matches no date within "
                f"{MAX_YEARS_BETWEEN_TICKS} years (a day that no month has?)"
            ) from exc

    def latest(self, now: datetime) -> datetime:
        # get_prev is strictly before its start: start a microsecond later so that a tick
        # exactly at `now` counts as due.
        start = now.astimezone(UTC) + MICROSECOND
        tick: datetime = _iterate(self.text, start).get_prev(datetime)
        return tick

    def following(self, tick: datetime) -> datetime:
        after: datetime = _iterate(self.text, tick.astimezone(UTC)).get_next(datetime)
        return after


def parse(schedule: str | float | timedelta) -> Schedule:
    """A schedule from a cron expression, a number of seconds or a timedelta."""
    if isinstance(schedule, timedelta):
        return Every(schedule.total_seconds())
    if isinstance(schedule, int | float):
        return Every(float(schedule))
    return Cron(schedule.strip())


def _iterate(text: str, start: datetime) -> Any:
    return _croniter()(text, start, max_years_between_matches=MAX_YEARS_BETWEEN_TICKS)


def _bad_date() -> type[Exception]:
    import croniter

    error: type[Exception] = croniter.CroniterBadDateError
    return error


def _croniter() -> Any:
    try:
        import croniter
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError(
            "cron schedules need croniter: pip install 'pgqueue-durable[cron]' (or give the "
            "schedule as a number of seconds)"
        ) from None
    return croniter.croniter
