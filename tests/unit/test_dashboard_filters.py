"""The dashboard's filter reading and time formatting, pure: what a URL or form carries becomes
a `JobFilter` or a clear refusal, and times read as '3 min ago' with the UTC time on hover."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from pgqueue import JobState, reports
from pgqueue.dashboard import filters, timefmt


def test_a_filter_reads_back_from_its_own_fields() -> None:
    found = filters.read(
        {"queue": " default ", "state": "failed", "kind": "render", "payload": '{"b": [1], "a": 2}'}
    )
    assert found == reports.JobFilter("default", JobState.FAILED, "render", {"a": 2, "b": [1]})
    assert filters.read(filters.as_fields(found)) == found
    assert filters.read({"queue": "", "payload": "  "}) == reports.JobFilter()
    assert filters.describe(reports.JobFilter()) == "no filter: every job"
    assert filters.describe(found) == (
        'queue default, state failed, kind render, payload containing {"a": 2, "b": [1]}'
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"state": "done"}, "state must be one of"),
        ({"queue": "q\x00"}, "queue must be 1-128"),
        ({"kind": "k" * 129}, "kind must be 1-128"),
        ({"payload": "[1]"}, "payload must be a JSON object"),
        ({"payload": '{"a":'}, "payload must be a JSON object"),
        ({"payload": '{"a": NaN}'}, "payload must be a JSON object"),
        ({"payload": '{"a": 1e400}'}, "payload must be a JSON object"),
        ({"payload": '{"a": "\\ud800"}'}, "payload must be a JSON object"),
        ({"payload": '{"a": "\\u0000"}'}, "NUL"),
        ({"payload": '{"a": [{"\\u0000": 1}]}'}, "NUL"),
        ({"payload": "[" * 100_000}, "at most 2000 characters"),
        ({"payload": "[" * 1999}, "payload must be a JSON object"),
    ],
)
def test_a_malformed_filter_is_refused_saying_what_is_expected(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(filters.BadFilter, match=message):
        filters.read(values)


def test_a_deeply_nested_filter_is_read_or_refused_never_a_recursion_error() -> None:
    deep = '{"a": ' + "[" * 400 + "]" * 400 + "}"
    assert filters.read({"payload": deep}).payload is not None
    with pytest.raises(filters.BadFilter, match="NUL"):
        filters.read({"payload": '{"a": ' + "[" * 400 + '"\\u0000"' + "]" * 400 + "}"})
    # As deep as 2,000 characters allow: read, or refused as 400 (the JSON codec's own
    # recursion limit, which depends on the caller's stack), never an uncaught error.
    deepest = '{"a": ' + "[" * 990 + "]" * 990 + "}"
    with contextlib.suppress(filters.BadFilter):
        filters.read({"payload": deepest})


def test_only_the_states_an_action_may_change_that_the_filter_allows() -> None:
    retryable = (JobState.FAILED, JobState.CANCELLED)
    assert reports.JobFilter().states(retryable) == ["failed", "cancelled"]
    assert reports.JobFilter(state=JobState.CANCELLED).states(retryable) == ["cancelled"]
    assert reports.JobFilter(state=JobState.QUEUED).states(retryable) == []


NOW = datetime(2026, 12, 3, 15, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset_s", "text"),
    [
        (0, "just now"),
        (-0.4, "just now"),
        (-42, "42 s ago"),
        (-180, "3 min ago"),
        (20, "in 20 s"),
        (-3 * 3600, "3 h ago"),
        (-3 * 86400, "3 d ago"),
    ],
)
def test_times_read_relative_with_the_utc_time_on_hover(offset_s: float, text: str) -> None:
    moment = NOW + timedelta(seconds=offset_s)
    html = str(timefmt.ago(moment, NOW))
    assert f">{text}</time>" in html
    assert f'title="{timefmt.when(moment)}"' in html and "UTC" in timefmt.when(moment)
    assert f'datetime="{moment.isoformat()}"' in html and "data-relative" in html
    assert str(timefmt.ago(None, NOW)) == ""
