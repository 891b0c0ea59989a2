"""JobSpec refuses bad arguments with a message that says how to fix them."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pgqueue import JobSpec, JobState


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": ""}, "kind"),
        ({"kind": "x" * 129}, "kind"),
        ({"kind": "k", "queue": ""}, "queue"),
        ({"kind": "k", "run_at": datetime(2026, 1, 1)}, "timezone-aware"),
        (
            {"kind": "k", "delay": timedelta(seconds=1), "run_at": datetime.now().astimezone()},
            "not both",
        ),
        ({"kind": "k", "max_attempts": 0}, "max_attempts"),
        ({"kind": "k", "timeout": timedelta(0)}, "timeout"),
        ({"kind": "k", "concurrency_key": "p"}, "together"),
        ({"kind": "k", "concurrency_key": "p", "concurrency_limit": 0}, "concurrency_limit"),
        ({"kind": "k", "priority": 2**31}, "priority"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobSpec(**kwargs)  # type: ignore[arg-type]


def test_terminal_states() -> None:
    assert {s for s in JobState if s.is_terminal} == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
    }
