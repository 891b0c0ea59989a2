"""The README's governor example is examples/governor.py, and it runs as the README says."""

from __future__ import annotations

from tests.support import processes, settings
from tests.support.processes import ROOT


def test_readme_shows_the_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "governor.py").read_text()
    assert example.split('"""', 2)[2].strip() in readme


def test_the_example_takes_turns_parks_and_breaks(db_url: str) -> None:
    output = processes.run(
        processes.python_command("examples/governor.py"),
        env={**settings.child_env(), "DATABASE_URL": db_url},
        timeout=60,
    )
    lines = [line for line in output.splitlines() if line.startswith(("calls", "then", "bob"))]
    assert lines[0] == "calls into the outage: 3", output
    assert lines[1] == "then: bob ann bob ann ann ann ann ann", output
    assert lines[2] == "bob spent 2 of 2; 1 shot waits for more", output
