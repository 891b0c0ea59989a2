"""The guide's periodic-jobs example is examples/periodic.py: it runs as the guide says."""

from __future__ import annotations

from tests.support import docs, processes, settings


def test_the_docs_show_the_example_verbatim() -> None:
    assert docs.example_body("periodic") in docs.page("library.md")


def test_three_workers_run_each_tick_once(db_url: str) -> None:
    output = processes.run(
        processes.python_command("examples/periodic.py"),
        env={**settings.child_env(), "DATABASE_URL": db_url},
        timeout=60,
    )
    lines = output.strip().splitlines()
    assert lines[-2].startswith("heartbeat.report: every 1s, ticks run: "), output
    assert lines[-1] == "one job per tick: True", output
