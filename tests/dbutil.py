"""Moved to `tests.support.db`; these names stay until every importer uses the new ones."""

from __future__ import annotations

from tests.support.db import (
    LOCAL_URL,
    create_database,
    drop_database,
    migrate,
    unique_name,
    with_database,
)
from tests.support.processes import ROOT

__all__ = [
    "LOCAL_URL",
    "ROOT",
    "create_database",
    "drop_database",
    "migrate",
    "unique_name",
    "with_database",
]
