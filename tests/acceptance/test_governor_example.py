"""The library guide's governor example is examples/governor.py: it runs as the guide says."""

from __future__ import annotations

from tests.support import docs, processes, settings


def test_the_docs_show_the_example_verbatim() -> None:
    assert docs.example_body("governor") in docs.page("library.md")


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
