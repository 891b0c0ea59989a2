"""Exceptions raised by pgqueue, and the ones handlers raise to steer retries.

    PgQueueError
    ├── JobError                 raised by handlers to steer what happens to the job
    │   ├── RetryLater           retry after an explicit delay, or (throttle_s) pause the
    │   │                        job's rate-limit key and retry without spending the attempt
    │   ├── UpstreamDown         the upstream failed transiently (5xx, time-out, connection):
    │   │                        a retry with backoff that counts toward the key's breaker
    │   └── DoNotRetry           fail the job now, whatever attempts remain
    ├── LeaseLost                the worker no longer holds the job: its writes were refused
    ├── JobCancelled             the job was cancelled while its handler ran
    ├── ConfigurationError       the database does not work the way the settings say
    │   └── SchemaMissing        no pgqueue schema, or an older one: `python -m pgqueue migrate`
    ├── JobNotFound              (Queue.retry) no job has the id
    ├── JobStateConflict         (Queue.retry) the job is not in a state the action applies to
    └── SchemaVersionError       (pgqueue.schema) the database's schema is not one this
                                 version can upgrade or downgrade

Every class's docstring is its default message.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgqueue.models import Job

MAX_RETRY_DELAY_S = 365 * 86400.0  # a longer delay is taken as this (a year)


class PgQueueError(Exception):
    """A pgqueue error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class JobError(PgQueueError):
    """The handler asked for a particular outcome."""


class RetryLater(JobError):
    """The handler asked to be retried later."""

    def __init__(
        self,
        message: str | None = None,
        *,
        delay_s: float | None = None,
        throttle_s: float | None = None,
    ) -> None:
        """Retry after `delay_s` seconds instead of the policy's backoff; or, with
        `throttle_s`, say that the upstream pushed back (a 429 with `Retry-After`).

        A plain retry spends the attempt, so a job that keeps asking is failed once its
        attempts are spent rather than retried for ever. A throttle does not: the job's
        rate-limit key pauses for `throttle_s` seconds on every worker and drain (no job of
        the key starts meanwhile), and the job goes back to the queue with its attempt given
        back, because a busy upstream is no fault of the job's. A throttled job's bound is
        time, not attempts: an application that must give up (a deadline of its own) raises
        `DoNotRetry` when the wait would pass it. A job without a rate-limit key has no key
        to pause: a throttle is then a plain retry after `throttle_s`, spending the attempt.

        Args:
            message: why, stored in the job's `last_error`.
            delay_s: seconds to wait before the next attempt: a finite number >= 0; more than
                a year is taken as a year. With `throttle_s`, defaults to it.
            throttle_s: seconds to pause the job's rate-limit key for (same range).

        Raises:
            ValueError: neither is given, or one is negative, infinite or NaN.
        """
        if delay_s is None and throttle_s is None:
            raise ValueError("give delay_s (a retry) or throttle_s (the upstream pushed back)")
        for name, value in (("delay_s", delay_s), ("throttle_s", throttle_s)):
            if value is not None and not (
                isinstance(value, int | float) and math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        super().__init__(message)
        self.throttle_s = None if throttle_s is None else min(float(throttle_s), MAX_RETRY_DELAY_S)
        chosen = delay_s if delay_s is not None else throttle_s
        assert chosen is not None
        self.delay_s = min(float(chosen), MAX_RETRY_DELAY_S)


class UpstreamDown(JobError):
    """The job's upstream failed transiently (a 5xx, a time-out, a connection error).

    Raised by a handler whose job names a rate-limit key, for a failure of the service that
    key stands for rather than of the job: the attempt fails and is retried with backoff like
    any other error, and the key's breaker (`Queue.set_breaker`) counts it. Enough of them in
    a row open the breaker: then no job of the key starts on any worker until a probe
    succeeds, and the jobs that wait for it (the one that opened it, the probe that failed,
    calls that were in flight) spend no attempt. Without a breaker on the key it is a plain
    retryable failure. A 429 is not this: raise `RetryLater(throttle_s=...)` for it.
    """


class DoNotRetry(JobError):
    """The job failed in a way that retrying cannot fix."""


class LeaseLost(PgQueueError):
    """The job's lease was lost: another worker may own it now."""


class JobCancelled(PgQueueError):
    """The job was cancelled.

    Raised by `JobContext.progress()` when it learns that someone cancelled the job; a handler
    lets it propagate and the job ends `cancelled`. A worker that learns of the cancel first
    (at a heartbeat) cancels the handler's task instead: the handler then sees the usual
    `asyncio.CancelledError`, and must not swallow it.
    """


class ConfigurationError(PgQueueError):
    """The database does not work the way the settings say (e.g. a transaction pooler in
    front of a URL configured as direct): a person must change a setting; retrying won't help."""


class SchemaMissing(ConfigurationError):
    """The database has no pgqueue schema, or an older one than this package needs: run
    `python -m pgqueue migrate` (or the application's migrations) on it."""


class JobNotFound(PgQueueError):
    """No job has this id (it never existed, or retention deleted it)."""


class JobStateConflict(PgQueueError):
    """The job is not in a state this action applies to.

    Raised by `Queue.retry` for a job that is neither failed nor cancelled. `job` is the job as
    it was found, so the caller can say what state it is in (an HTTP API answers 409).
    """

    def __init__(self, message: str | None = None, *, job: Job | None = None) -> None:
        super().__init__(message)
        self.job = job
