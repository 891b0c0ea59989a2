"""The end of an attempt as a value: every way `attempt.decide` ends an attempt, and what
`attempt.report` counts, logs and emits for each, from what was written. No database."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any, get_args

import pytest

from pgqueue import errors, models, retry
from pgqueue.worker import attempt
from pgqueue.worker.held import StopReason
from pgqueue.worker.outcomes import End, Outcomes

POLICY = retry.RetryPolicy(base_s=5.0, cap_s=3600.0, jitter=0.0)  # no jitter: exact delays
KEY = "upstream"


def _job(*, attempts: int = 2, rate_limit_key: str | None = None) -> models.Job:
    now = datetime.now(UTC)
    return models.Job(
        id=7, queue="default", kind="k", payload={}, state=models.JobState.RUNNING,
        priority=0, attempts=attempts, max_attempts=3, run_at=now, lease_expires_at=now,
        lease_token=107, worker_id="w", last_error=None, progress=None, result=None,
        idempotency_key=None, concurrency_key=None, concurrency_limit=None, timeout_s=None,
        cancel_requested_at=None, created_at=now, started_at=now, finished_at=None,
        rate_limit_key=rate_limit_key,
    )  # fmt: skip


JOB = _job()
KEYED = _job(rate_limit_key=KEY)


def _raised(error: Exception, job: models.Job = JOB) -> attempt.Outcome:
    return attempt.decide(job, attempt.Raised(error), POLICY)


# decide: what the handler did becomes what to write.


@pytest.mark.parametrize(
    ("result", "result_json"),
    [({"n": 1}, '{"n": 1}'), (None, "null"), ([1, "two"], '[1, "two"]'), ("s", '"s"')],
)
def test_a_returned_result_succeeds_with_its_json(result: Any, result_json: str) -> None:
    outcome = attempt.decide(JOB, attempt.Returned(result), POLICY)
    assert outcome == attempt.Succeeded(result, result_json)


@pytest.mark.parametrize("result", [object(), math.nan, {"x": {1, 2}}])
def test_a_result_that_is_not_json_fails_for_good(result: Any) -> None:
    outcome = attempt.decide(JOB, attempt.Returned(result), POLICY)
    assert isinstance(outcome, attempt.Failed)
    assert isinstance(outcome.error, errors.DoNotRetry) and not outcome.retryable
    assert outcome.error_text.startswith("DoNotRetry: the handler's result is not JSON: ")


def test_a_success_the_handler_wrote_itself_leaves_nothing_to_write() -> None:
    outcome = attempt.decide(JOB, attempt.CompletedInTransaction({"n": 1}), POLICY)
    assert outcome == attempt.Succeeded({"n": 1}, None)


def test_an_exception_spends_the_attempt_and_backs_off_by_the_policy() -> None:
    error = ValueError("boom")
    outcome = _raised(error)
    assert isinstance(outcome, attempt.Failed)
    assert outcome.error is error and outcome.retryable
    assert outcome.delay_s == 10.0  # 5 s x 2^(attempt 2 - 1)
    # Not one of the job errors: its traceback is kept (this one was never raised: none).
    assert outcome.error_text == "ValueError: boom"


def test_an_exception_raised_keeps_its_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        error = exc
    text = attempt.describe(error)
    assert text.startswith("Traceback (most recent call last):")
    assert text.endswith("ValueError: boom")


def test_retry_later_says_when() -> None:
    error = errors.RetryLater("busy", delay_s=7)
    assert _raised(error) == attempt.Failed(error, "RetryLater: busy", True, 7.0)


def test_do_not_retry_fails_for_good() -> None:
    error = errors.DoNotRetry("bad input")
    outcome = _raised(error)
    assert outcome == attempt.Failed(error, "DoNotRetry: bad input", False, 10.0)


def test_a_throttle_of_a_keyed_job_pauses_its_key_without_spending_the_attempt() -> None:
    error = errors.RetryLater("429", throttle_s=3)
    assert _raised(error, KEYED) == attempt.Throttled(error, "RetryLater: 429", KEY, 3.0, 3.0)
    later = errors.RetryLater("429", throttle_s=3, delay_s=10)
    assert _raised(later, KEYED) == attempt.Throttled(later, "RetryLater: 429", KEY, 3.0, 10.0)


def test_a_throttle_of_a_job_without_a_key_is_a_plain_retry() -> None:
    error = errors.RetryLater("429", throttle_s=3)
    assert _raised(error) == attempt.Failed(error, "RetryLater: 429", True, 3.0)


def test_an_upstream_down_counts_toward_the_keys_breaker() -> None:
    error = errors.UpstreamDown("503")
    assert _raised(error, KEYED) == attempt.UpstreamFailed(error, "UpstreamDown: 503", KEY, 10.0)
    # Without a key there is no breaker: a plain retryable failure.
    assert _raised(error) == attempt.Failed(error, "UpstreamDown: 503", True, 10.0)


def test_a_lease_lost_in_the_handler_writes_nothing_and_is_no_stall() -> None:
    assert _raised(errors.LeaseLost()) == attempt.LeaseLost(stalled=False)


def test_a_timeout_is_a_failed_attempt() -> None:
    outcome = _raised(attempt.timed_out(0.2))
    assert isinstance(outcome, attempt.Failed) and outcome.retryable
    assert outcome.error_text == "_TimedOut: timed out after 0.2s"


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        (StopReason.LEASE_LOST, attempt.LeaseLost(stalled=True)),
        (StopReason.CANCEL_REQUESTED, attempt.Cancelled()),
        (StopReason.SHUTDOWN, attempt.Released()),
    ],
)
def test_a_stopped_handler(reason: StopReason, outcome: attempt.Outcome) -> None:
    assert attempt.decide(JOB, attempt.Stopped(reason), POLICY) == outcome


def test_a_long_error_keeps_its_end() -> None:
    text = attempt.describe(ValueError("x" * 20_000 + "the end"))
    assert len(text) == attempt.MAX_ERROR_CHARS + 1
    assert text.startswith("…") and text.endswith("the end")


# report: what was written becomes one count, one log line and one event.


def _report(outcome: attempt.Outcome, written: attempt.Written) -> attempt.Report:
    return attempt.report(
        JOB, outcome, written, 0.25, logs=lambda _level: True, wants=lambda _name: True
    )


def _row(state: models.JobState, **changes: Any) -> models.Job:
    return JOB._replace(state=state, **changes)


def _said(report: attempt.Report) -> tuple[int, str, str]:
    assert report.line is not None
    line = report.line
    assert {"job_id": 7, "kind": "k", "queue": "default", "attempt": 2}.items() <= (
        line.extra.items()
    )
    return line.level, line.extra["action"], line.message % line.args


SUCCEEDED = attempt.Succeeded({"n": 1}, '{"n": 1}')
FAILED = attempt.Failed(ValueError("boom"), "ValueError: boom", True, 10.0)
THROTTLED = attempt.Throttled(errors.RetryLater("429", throttle_s=3), "429", KEY, 3.0, 4.0)


def test_a_success_written() -> None:
    report = _report(SUCCEEDED, models.JobState.SUCCEEDED)
    assert report.end is End.SUCCEEDED
    assert _said(report) == (logging.INFO, "job_succeeded", "job 7 succeeded in 0.250s (attempt 2)")
    assert report.line is not None and report.line.extra["duration_s"] == 0.25
    event = report.event
    assert event is not None and event.name == "completed" and event.result == {"n": 1}
    assert event.job is not None and event.job.state is models.JobState.SUCCEEDED
    assert event.job.result == {"n": 1}


def test_a_success_the_handler_wrote_reads_the_same() -> None:
    report = _report(attempt.Succeeded({"n": 1}, None), models.JobState.SUCCEEDED)
    assert report.end is End.SUCCEEDED and _said(report)[1] == "job_succeeded"


@pytest.mark.parametrize(
    "outcome", [SUCCEEDED, FAILED, THROTTLED, attempt.Cancelled(), attempt.Released()]
)
def test_nothing_written_is_a_lost_lease(outcome: attempt.Outcome) -> None:
    report = _report(outcome, None)
    assert report.end is End.LOST and report.event is None
    message = "job 7: lease lost; its outcome was not written"
    assert _said(report) == (logging.WARNING, "lease_lost", message)


def test_a_lease_the_worker_found_lost_is_a_stall() -> None:
    report = _report(attempt.LeaseLost(stalled=True), None)
    assert report.end is End.LOST and _said(report)[1] == "lease_lost"
    assert report.event is not None and report.event.name == "stalled"
    assert report.event.error == "lease lost" and report.event.job is JOB
    assert _report(attempt.LeaseLost(stalled=False), None).event is None


def test_a_lost_lease_has_nothing_written() -> None:
    with pytest.raises(AssertionError):
        _report(attempt.LeaseLost(stalled=True), models.JobState.QUEUED)


def test_a_failure_retried() -> None:
    row = _row(models.JobState.QUEUED, last_error="ValueError: boom")
    report = _report(FAILED, row)
    assert report.end is End.RETRIED
    message = "job 7 failed (attempt 2/3, retry in 10.0s): ValueError: boom"
    assert _said(report) == (logging.WARNING, "job_failed", message)
    assert report.line is not None
    assert report.line.extra["will_retry"] is True
    assert report.line.extra["error"] == "ValueError: boom"
    assert report.line.extra["duration_s"] == 0.25
    event = report.event
    assert event is not None and event.name == "failed" and event.job is row
    assert event.error is FAILED.error and event.will_retry


def test_a_failure_for_good() -> None:
    row = _row(models.JobState.FAILED)
    report = _report(FAILED, row)
    assert report.end is End.FAILED
    message = "job 7 failed (attempt 2/3, no retry): ValueError: boom"
    assert _said(report) == (logging.ERROR, "job_failed", message)
    assert report.event is not None and not report.event.will_retry


@pytest.mark.parametrize("outcome", [FAILED, THROTTLED])
def test_a_failure_after_a_cancel_was_requested_ends_cancelled(
    outcome: attempt.Outcome,
) -> None:
    row = _row(models.JobState.CANCELLED)
    report = _report(outcome, row)
    assert report.end is End.FAILED
    message = "job 7 cancelled (it failed after a cancel was requested)"
    assert _said(report) == (logging.INFO, "job_cancelled", message)
    _assert_cancel_event(report, row)


def test_a_throttle_requeued() -> None:
    report = _report(THROTTLED, _row(models.JobState.QUEUED, attempts=1))
    assert report.end is End.RETRIED
    message = "job 7 throttled: key upstream paused for 3.0s, attempt not spent: 429"
    assert _said(report) == (logging.WARNING, "job_throttled", message)
    assert report.event is not None and report.event.will_retry


def test_an_upstream_failure_spared_or_spent() -> None:
    outcome = attempt.UpstreamFailed(errors.UpstreamDown("503"), "503", KEY, 10.0)
    spared = _report(outcome, _row(models.JobState.QUEUED, attempts=JOB.attempts - 1))
    message = "job 7 waits for key upstream's breaker, attempt not spent: 503"
    assert spared.end is End.RETRIED
    assert _said(spared) == (logging.WARNING, "job_upstream_down", message)
    spent = _report(outcome, _row(models.JobState.QUEUED, attempts=JOB.attempts))
    assert spent.end is End.RETRIED and _said(spent)[1] == "job_failed"


def test_a_cancel_written() -> None:
    row = _row(models.JobState.CANCELLED, last_error=attempt.CANCELLED_ERROR)
    report = _report(attempt.Cancelled(), row)
    assert report.end is End.FAILED
    assert _said(report) == (logging.INFO, "job_cancelled", "job 7 cancelled")
    _assert_cancel_event(report, row)


def test_a_release_written() -> None:
    report = _report(attempt.Released(), models.JobState.QUEUED)
    assert report.end is End.RELEASED and report.event is None
    message = "job 7 released at shutdown; its attempt is not spent"
    assert _said(report) == (logging.INFO, "job_released", message)


def test_a_release_of_a_job_whose_cancel_was_requested_ends_it_cancelled() -> None:
    report = _report(attempt.Released(), models.JobState.CANCELLED)
    assert report.end is End.FAILED
    message = "job 7 cancelled at shutdown (a cancel was requested)"
    assert _said(report) == (logging.INFO, "job_cancelled", message)
    ended = _row(models.JobState.CANCELLED, last_error=attempt.CANCELLED_ERROR)
    _assert_cancel_event(report, ended)


def _assert_cancel_event(report: attempt.Report, job: models.Job) -> None:
    event = report.event
    assert event is not None and event.name == "failed" and event.job == job
    assert isinstance(event.error, errors.JobCancelled) and not event.will_retry


@pytest.mark.parametrize(
    ("outcome", "written"),
    [
        (SUCCEEDED, models.JobState.SUCCEEDED),
        (FAILED, _row(models.JobState.QUEUED)),
        (attempt.Released(), models.JobState.CANCELLED),
        (attempt.LeaseLost(stalled=True), None),
    ],
)
def test_nothing_is_built_for_nobody(outcome: attempt.Outcome, written: attempt.Written) -> None:
    # Neither a line below the logger's level nor an event no hook listens for.
    asked: list[object] = []

    def logs(level: int) -> bool:
        asked.append(level)
        return False

    def wants(name: str) -> bool:
        asked.append(name)
        return False

    report = attempt.report(JOB, outcome, written, 0.1, logs=logs, wants=wants)
    assert report.line is None and report.event is None and asked


def test_every_end_is_counted_in_its_own_field() -> None:
    outcomes = Outcomes()
    for end in End:
        outcomes.count(end)
    outcomes.count(End.SUCCEEDED)
    assert outcomes.as_dict() == {
        "ran": 0, "succeeded": 2, "failed": 1, "retried": 1, "released": 1, "lost": 1,
    }  # fmt: skip


def test_every_outcome_kind_is_decided_from_some_ending() -> None:
    # A kind added to Outcome must be reachable from decide (and reported, and written: mypy
    # checks those matches; this one checks that the kind is produced at all).
    endings: list[attempt.Ending] = [
        attempt.Returned(1),
        attempt.Raised(ValueError()),
        attempt.Raised(errors.RetryLater("429", throttle_s=1)),
        attempt.Raised(errors.UpstreamDown("503")),
        attempt.Raised(errors.LeaseLost()),
        *(attempt.Stopped(reason) for reason in StopReason),
    ]
    decided = {type(attempt.decide(KEYED, ending, POLICY)) for ending in endings}
    assert decided == set(get_args(attempt.Outcome))
