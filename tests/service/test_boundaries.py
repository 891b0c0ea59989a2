"""The service uses pgqueue's public API only: no table of pgqueue's, no private module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import service

SERVICE = Path(service.__file__).parent
MODULES = sorted(SERVICE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SERVICE)))
def test_the_service_reads_no_pgqueue_table(path: Path) -> None:
    # Jobs are read through the view pgqueue owns (pgqueue.job_status), so what a live job
    # is stays pgqueue's to define.
    text = path.read_text()
    for table in ("pgqueue.jobs", "pgqueue.concurrency_slots", "pgqueue.finished_counts"):
        assert table not in text, f"{path.name} names {table}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SERVICE)))
def test_the_service_imports_pgqueue_itself_only(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pgqueue"):
            assert node.module == "pgqueue", f"{path.name}:{node.lineno} imports {node.module}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("pgqueue."), f"{path.name}: {alias.name}"
