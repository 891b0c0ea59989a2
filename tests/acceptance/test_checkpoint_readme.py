"""The README's checkpoint example is examples/checkpoint.py, and it runs as the README says."""

from __future__ import annotations

from tests.support import processes, settings
from tests.support.processes import ROOT


def test_readme_shows_the_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "checkpoint.py").read_text()
    assert example.split('"""', 2)[2].strip() in readme


def test_the_example_pays_once_for_two_attempts(db_url: str) -> None:
    output = processes.run(
        processes.python_command("examples/checkpoint.py"),
        env={**settings.child_env(), "DATABASE_URL": db_url},
        timeout=60,
    )
    assert output.strip().splitlines()[-1] == (
        "succeeded after 2 attempts, paid 1: https://cdn.example/frame-1.png"
    ), output
