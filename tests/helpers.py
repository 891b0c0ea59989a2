"""Moved to `tests.support.wait`; this name stays until every importer uses the new one."""

from __future__ import annotations

from tests.support.wait import POLL_S, wait_for

__all__ = ["POLL_S", "wait_for"]
