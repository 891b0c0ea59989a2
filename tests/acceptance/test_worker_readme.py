"""The README's library example is examples/quickstart.py, and it runs as printed."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.dbutil import ROOT


def test_readme_shows_the_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    body = example.split('"""', 2)[2].strip()  # without the module docstring
    assert body in readme


def test_the_example_runs(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "examples/quickstart.py"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == "succeeded hello, Ada {'message': 'halfway there', 'percent': 50}"
    )
