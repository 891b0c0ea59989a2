"""The README's periodic-jobs example is examples/periodic.py, and it runs as the README says."""

from __future__ import annotations

from tests.support import processes, settings
from tests.support.processes import ROOT


def test_readme_shows_the_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "periodic.py").read_text()
    assert example.split('"""', 2)[2].strip() in readme


def test_three_workers_run_each_tick_once(db_url: str) -> None:
    output = processes.run(
        processes.python_command("examples/periodic.py"),
        env={**settings.child_env(), "DATABASE_URL": db_url},
        timeout=60,
    )
    lines = output.strip().splitlines()
    assert lines[-2].startswith("heartbeat.report: every 1s, ticks run: "), output
    assert lines[-1] == "one job per tick: True", output
