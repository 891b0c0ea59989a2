"""The README's library example is examples/quickstart.py, and it runs as printed."""

from __future__ import annotations

from tests.support import processes, settings
from tests.support.processes import ROOT


def test_readme_shows_the_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    body = example.split('"""', 2)[2].strip()  # without the module docstring
    assert body in readme


def test_the_example_runs(db_url: str) -> None:
    output = processes.run(
        processes.python_command("examples/quickstart.py"),
        env={**settings.child_env(), "DATABASE_URL": db_url},
        timeout=60,
    )
    assert output.strip() == "succeeded hello, Ada {'message': 'halfway there', 'percent': 50}"
