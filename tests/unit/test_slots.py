"""Slots: taken in bulk before a claim, given back one by one or in bulk."""

from __future__ import annotations

import pytest

from pgqueue.worker.slots import Slots


async def test_take_all_then_give_back() -> None:
    slots = Slots(3)
    assert slots.take_all() == 3 and slots.free == 0 and slots.take_all() == 0
    slots.give_back(2)
    assert slots.free == 2 and slots.freed.is_set()
    assert slots.take_all() == 2 and slots.in_use == 3


async def test_giving_back_more_than_taken_is_a_bug() -> None:
    slots = Slots(2)
    slots.take_all()
    slots.give_back(2)
    with pytest.raises(AssertionError):
        slots.give_back(1)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Slots(0)
