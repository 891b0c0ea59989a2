"""Values that arrive as text from a URL (query strings, path segments), parsed once.

`str.isdigit()` is the trap this module exists for: it is true for `²`, `①` or `٣`, which
`int()` then refuses (`①`) or reads as another number (`٣` is 3). A whole number here is ASCII
digits only. A NUL byte is refused in every name: Postgres text cannot hold one, so it would
reach the database only to fail there (a 500 instead of a 400).
"""

from __future__ import annotations

MAX_BIGINT = 2**63 - 1  # the largest id (and bigint) Postgres stores
MAX_NAME_CHARS = 128  # a queue's or a kind's name, as the schema's CHECKs say
_ASCII_DIGITS = frozenset("0123456789")
# Digits beyond this cannot be within any range we accept (2**63 has 19), and Python refuses
# to parse more than 4,300 anyway: never convert what is longer.
_MAX_DIGITS = 19


def whole_number(text: str | None, low: int, high: int) -> int | None:
    """`text` as an integer within `low`-`high`, or None when it is not one.

    Args:
        text: ASCII digits only (no sign, no spaces, no other script's digits); None reads as
            not a number.
        low: the smallest value accepted.
        high: the largest value accepted.
    """
    if not text or len(text) > _MAX_DIGITS or not set(text) <= _ASCII_DIGITS:
        return None
    value = int(text)
    return value if low <= value <= high else None


def is_name(text: str) -> bool:
    """Whether `text` may name a queue or a kind: 1-128 characters, no NUL byte."""
    return 1 <= len(text) <= MAX_NAME_CHARS and "\x00" not in text
