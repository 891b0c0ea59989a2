"""The end of an attempt as a value, decided and described by pure functions.

What the handler did is an `Ending` (it returned, completed the job in its own transaction,
raised, or was stopped); `decide` turns it, with the job and the retry policy, into an
`Outcome`: what to write. The completer writes it (`Completer.finish`) and says what was
written; `report` turns outcome and written row into a `Report`: which count, which log line,
which hook event. The runner only runs the handler and carries these values between the
steps, so every way an attempt can end is told here, in one place, and tested without a
database.

To add a kind of outcome: a dataclass below, added to `Outcome`; its branch in
`decide`; its write in `Completer.finish`; its count, log line and event in `report`. Each
dispatch on an outcome ends in `assert_never`, so `mypy --strict` names every step that does
not handle the new kind yet. They are `isinstance` chains rather than `match` statements: a
class pattern builds a set, a list and a tuple each time it is tried, and a success goes
through three dispatches (measured with callgrind: `match` cost a no-op job 7% more of the
worker's instructions, 108k per job before this module). For the same reason the values are
slotted dataclasses that nothing changes, not frozen ones: a frozen one's `__init__` sets
each field through `object.__setattr__`, and the two built for every success cost 3.4%.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias, assert_never

from pgqueue import errors, models, retry
from pgqueue.worker import events
from pgqueue.worker.held import StopReason
from pgqueue.worker.outcomes import End

MAX_ERROR_CHARS = 8000  # last_error keeps the message and the tail of the traceback
CANCELLED_ERROR = "cancelled while running"  # last_error of a job a cancel ended while it ran


# What the handler did.


@dataclasses.dataclass(slots=True)
class Returned:
    """The handler returned `result`."""

    result: Any


@dataclasses.dataclass(slots=True)
class CompletedInTransaction:
    """The handler completed the job in its own transaction (`ctx.complete_in`), and the row,
    read back, says so: `result` is what it stored, and nothing is left to write."""

    result: Any


@dataclasses.dataclass(slots=True)
class Raised:
    """The handler raised `error`."""

    error: Exception


@dataclasses.dataclass(slots=True)
class Stopped:
    """The handler was stopped: its task cancelled by the worker (which says why first), or
    `JobCancelled` raised by `ctx.progress()`."""

    reason: StopReason


Ending: TypeAlias = Returned | CompletedInTransaction | Raised | Stopped


# What the end of the attempt is: what to write.


@dataclasses.dataclass(slots=True)
class Succeeded:
    """The job succeeded with `result` (`result_json`, encoded; None when the handler's own
    transaction wrote the success already)."""

    result: Any
    result_json: str | None


@dataclasses.dataclass(slots=True)
class Failed:
    """The attempt failed and is spent: retry after `delay_s` if `retryable` and attempts
    remain, else fail for good (the database decides, from the row it locks)."""

    error: Exception
    error_text: str  # last_error
    retryable: bool
    delay_s: float


@dataclasses.dataclass(slots=True)
class Throttled:
    """The upstream pushed back (`RetryLater(throttle_s=...)` on a job with a rate-limit key):
    pause the key for `pause_s` everywhere and retry after `delay_s`, the attempt not spent."""

    error: Exception
    error_text: str  # last_error
    rate_limit_key: str
    pause_s: float
    delay_s: float


@dataclasses.dataclass(slots=True)
class UpstreamFailed:
    """The job's upstream failed (`UpstreamDown` on a job with a rate-limit key): the attempt
    fails as `Failed` does, retried after `delay_s`, and the key's breaker counts it; while
    the breaker is open or probing, and for the failure that opens it, the attempt is given
    back and the job waits for the breaker instead (the row written says which)."""

    error: Exception
    error_text: str  # last_error
    rate_limit_key: str
    delay_s: float


@dataclasses.dataclass(slots=True)
class Cancelled:
    """A cancel was requested and stopped the handler: the job ends `cancelled`."""


@dataclasses.dataclass(slots=True)
class Released:
    """The worker stopped first: the job goes back to the queue, its attempt not spent (or
    ends `cancelled`, when a cancel was requested meanwhile)."""


@dataclasses.dataclass(slots=True)
class LeaseLost:
    """The job is no longer ours: nothing is written. `stalled` when the worker found out (a
    renewal, the lease's deadline) and stopped the handler, rather than the handler's own
    fenced write (`LeaseLost` raised in it)."""

    stalled: bool


Outcome: TypeAlias = (
    Succeeded | Failed | Throttled | UpstreamFailed | Cancelled | Released | LeaseLost
)

# What the completer wrote: the row where the statement returns one, the new state where it
# returns only that (a batched success, a release), None when nothing was written.
Written: TypeAlias = models.Job | models.JobState | None


def decide(job: models.Job, ending: Ending, policy: retry.RetryPolicy) -> Outcome:
    """The outcome of `job`'s attempt that ended so.

    Args:
        job: the job as claimed (`attempts` counts this attempt).
        ending: what the handler did.
        policy: the backoff of a failed attempt that did not say when to retry.
    """
    if isinstance(ending, Returned):
        result = ending.result
        try:
            # allow_nan=False: NaN is not JSON, and Postgres would refuse the whole batch.
            result_json = "null" if result is None else json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            error = errors.DoNotRetry(f"the handler's result is not JSON: {exc}")
            return _failure(job, error, policy)
        return Succeeded(result, result_json)
    if isinstance(ending, CompletedInTransaction):
        return Succeeded(ending.result, None)
    if isinstance(ending, Raised):
        return _failure(job, ending.error, policy)
    if isinstance(ending, Stopped):
        return _stopped(ending.reason)
    assert_never(ending)


def _stopped(reason: StopReason) -> Outcome:
    if reason is StopReason.LEASE_LOST:
        return LeaseLost(stalled=True)
    if reason is StopReason.CANCEL_REQUESTED:
        return Cancelled()
    if reason is StopReason.SHUTDOWN:
        return Released()
    assert_never(reason)


def _failure(job: models.Job, error: Exception, policy: retry.RetryPolicy) -> Outcome:
    if isinstance(error, errors.LeaseLost):
        return LeaseLost(stalled=False)
    # Both are at most a year already (RetryLater and RetryPolicy cap them); the store makes
    # sure of it where the value meets the database.
    if isinstance(error, errors.RetryLater):
        delay_s = error.delay_s
    else:
        delay_s = policy.delay_s(job.attempts)
    text = describe(error)
    if isinstance(error, errors.UpstreamDown) and job.rate_limit_key is not None:
        return UpstreamFailed(error, text, job.rate_limit_key, delay_s)
    throttle_s = error.throttle_s if isinstance(error, errors.RetryLater) else None
    if throttle_s is not None and job.rate_limit_key is not None:
        # The upstream is busy, not the job at fault: pause the whole key and give the
        # attempt back (bounded by time, not attempts). A job without a key has nothing to
        # pause: its throttle is a plain retry.
        return Throttled(error, text, job.rate_limit_key, throttle_s, delay_s)
    return Failed(error, text, not isinstance(error, errors.DoNotRetry), delay_s)


def timed_out(timeout_s: float | None) -> Exception:
    """The error of an attempt whose job's own `timeout` ran out (not a `TimeoutError` the
    handler raised): a failed attempt like any other."""
    return _TimedOut(timeout_s)


class _TimedOut(Exception):
    # Private: its name is in the jobs' last_error ("_TimedOut: timed out after 2.0s").
    def __init__(self, timeout_s: float | None) -> None:
        super().__init__(f"timed out after {timeout_s}s")


def describe(error: BaseException) -> str:
    """`error` as the job's `last_error`: the message of an error meant for the job, else the
    traceback; at most `MAX_ERROR_CHARS`, keeping the end."""
    if isinstance(error, errors.JobError | _TimedOut):
        text = f"{type(error).__name__}: {error}"
    else:
        text = "".join(traceback.format_exception(error)).rstrip()
    return text if len(text) <= MAX_ERROR_CHARS else "…" + text[-MAX_ERROR_CHARS:]


# What to say about it.


class LogLine(NamedTuple):
    """One log call: `logger.log(level, message, *args, extra=extra)`."""

    level: int
    message: str
    args: tuple[Any, ...]
    extra: dict[str, Any]


class Report(NamedTuple):
    """What the runner does once an outcome is written: count it (`end`), log `line` and
    emit `event` (each None when there is nothing to say, or nobody listening)."""

    end: End
    line: LogLine | None
    event: events.Event | None


def report(
    job: models.Job,
    outcome: Outcome,
    written: Written,
    duration_s: float,
    *,
    logs: Callable[[int], bool],
    wants: Callable[[events.EventName], bool],
) -> Report:
    """The report of `job`'s attempt that came to `outcome`, of which `written` was written.

    Args:
        job: the job as claimed.
        outcome: what was decided.
        written: what the completer wrote (None: nothing, the job is not ours).
        duration_s: how long the handler ran.
        logs: whether a line of this level is logged (`logger.isEnabledFor`): a line nobody
            reads is not built, since building one costs more than a no-op job's handler.
        wants: whether a hook listens for this event (`Hooks.wants`), likewise.
    """
    if written is None:
        return _lost(job, outcome, logs, wants)
    if isinstance(outcome, Succeeded):
        line = None
        if logs(logging.INFO):
            message = "job %s succeeded in %.3fs (attempt %d)"
            args = (duration_s, job.attempts)
            line = _line(logging.INFO, job, "job_succeeded", message, args, duration_s)
        event = None
        if wants("completed"):
            result = outcome.result
            done = job._replace(state=models.JobState.SUCCEEDED, result=result)
            event = events.Event("completed", job.id, job=done, result=result)
        if line is None and event is None:
            return _QUIET_SUCCESS  # one per job on a busy worker: not even a tuple built
        return Report(End.SUCCEEDED, line, event)
    if isinstance(outcome, Failed | Throttled | UpstreamFailed):
        return _failed(job, outcome, _row(job, written), duration_s, logs, wants)
    if isinstance(outcome, Cancelled):
        return _cancelled(job, "job %s cancelled", _row(job, written), logs, wants)
    if isinstance(outcome, Released):
        if written is models.JobState.CANCELLED:
            message = "job %s cancelled at shutdown (a cancel was requested)"
            ended = job._replace(state=written, last_error=CANCELLED_ERROR)
            return _cancelled(job, message, ended, logs, wants)
        line = None
        if logs(logging.INFO):
            message = "job %s released at shutdown; its attempt is not spent"
            line = _line(logging.INFO, job, "job_released", message)
        return Report(End.RELEASED, line, None)
    if isinstance(outcome, LeaseLost):  # nothing to write, so nothing written: reported above
        raise AssertionError(f"job {job.id}: a lost lease cannot have written {written!r}")
    assert_never(outcome)


_QUIET_SUCCESS = Report(End.SUCCEEDED, None, None)


def _row(job: models.Job, written: models.Job | models.JobState) -> models.Job:
    # The row as written, where the statement returned one (the fenced single writes do).
    return written if isinstance(written, models.Job) else job._replace(state=written)


def _lost(
    job: models.Job,
    outcome: Outcome,
    logs: Callable[[int], bool],
    wants: Callable[[events.EventName], bool],
) -> Report:
    line = None
    if logs(logging.WARNING):
        message = "job %s: lease lost; its outcome was not written"
        line = _line(logging.WARNING, job, "lease_lost", message)
    event = None
    # Only a loss the worker found out about is a stall; a handler's own fenced write that
    # found the job gone (LeaseLost raised in it) is not told to the hooks.
    if isinstance(outcome, LeaseLost) and outcome.stalled and wants("stalled"):
        event = events.Event("stalled", job.id, job=job, error="lease lost")
    return Report(End.LOST, line, event)


def _failed(
    job: models.Job,
    outcome: Failed | Throttled | UpstreamFailed,
    row: models.Job,
    duration_s: float,
    logs: Callable[[int], bool],
    wants: Callable[[events.EventName], bool],
) -> Report:
    if row.state is models.JobState.CANCELLED:
        message = "job %s cancelled (it failed after a cancel was requested)"
        return _cancelled(job, message, row, logs, wants)
    will_retry = row.state is models.JobState.QUEUED
    if isinstance(outcome, Throttled) and will_retry:
        level, action = logging.WARNING, "job_throttled"
        message = "job %s throttled: key %s paused for %.1fs, attempt not spent: %s"
        args: tuple[Any, ...] = (outcome.rate_limit_key, outcome.pause_s, outcome.error_text)
    elif isinstance(outcome, UpstreamFailed) and will_retry and row.attempts < job.attempts:
        level, action = logging.WARNING, "job_upstream_down"
        message = "job %s waits for key %s's breaker, attempt not spent: %s"
        args = (outcome.rate_limit_key, outcome.error_text)
    else:
        level = logging.WARNING if will_retry else logging.ERROR
        action = "job_failed"
        message = "job %s failed (attempt %d/%d, %s): %s"
        retry = f"retry in {outcome.delay_s:.1f}s" if will_retry else "no retry"
        args = (job.attempts, job.max_attempts, retry, outcome.error_text)
    line = None
    if logs(level):
        line = _line(
            level, job, action, message, args, duration_s,
            will_retry=will_retry, error=outcome.error_text,
        )  # fmt: skip
    event = None
    if wants("failed"):
        event = events.Event("failed", job.id, job=row, error=outcome.error, will_retry=will_retry)
    return Report(End.RETRIED if will_retry else End.FAILED, line, event)


def _cancelled(
    job: models.Job,
    message: str,
    ended: models.Job,
    logs: Callable[[int], bool],
    wants: Callable[[events.EventName], bool],
) -> Report:
    line = _line(logging.INFO, job, "job_cancelled", message) if logs(logging.INFO) else None
    event = None
    # A cancel ended the job for good: the `failed` hooks hear of it, as of any final end.
    if wants("failed"):
        error = errors.JobCancelled()
        event = events.Event("failed", job.id, job=ended, error=error, will_retry=False)
    return Report(End.FAILED, line, event)


def _line(
    level: int,
    job: models.Job,
    action: str,
    message: str,
    args: tuple[Any, ...] = (),
    duration_s: float | None = None,
    **fields: Any,
) -> LogLine:
    extra: dict[str, Any] = {"action": action}
    if duration_s is not None:
        extra["duration_s"] = round(duration_s, 6)
    extra.update(fields)
    extra.update(log_fields(job))
    return LogLine(level, message, (job.id, *args), extra)


def log_fields(job: models.Job) -> dict[str, Any]:
    """The job's fields of every log line about its attempt."""
    return {"job_id": job.id, "kind": job.kind, "queue": job.queue, "attempt": job.attempts}
