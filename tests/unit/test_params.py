"""`pgqueue.params`: whole numbers are ASCII digits within a range; names hold no NUL."""

from __future__ import annotations

import pytest

from pgqueue import params


@pytest.mark.parametrize(
    "text",
    ["²", "①", "\u0663", "\uff11", "-1", "+1", " 1", "1 ", "1.0", "1e3", "", None, "9" * 5000],
)
def test_what_is_not_a_whole_number(text: str | None) -> None:
    assert params.whole_number(text, 0, params.MAX_BIGINT) is None


def test_whole_numbers_within_their_range() -> None:
    assert params.whole_number("0042", 1, 50) == 42
    assert params.whole_number("0", 1, 50) is None
    assert params.whole_number("51", 1, 50) is None
    assert params.whole_number(str(params.MAX_BIGINT), 1, params.MAX_BIGINT) == params.MAX_BIGINT
    assert params.whole_number(str(params.MAX_BIGINT + 1), 1, params.MAX_BIGINT) is None


def test_names() -> None:
    assert params.is_name("default")
    assert not params.is_name("")
    assert not params.is_name("a\x00b")
    assert params.is_name("q" * 128)
    assert not params.is_name("q" * 129)
