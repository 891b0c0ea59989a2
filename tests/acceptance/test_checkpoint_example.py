"""The library guide's checkpoint example is examples/checkpoint.py: it runs as the guide says."""

from __future__ import annotations

from tests.support import docs, processes, settings


def test_the_docs_show_the_example_verbatim() -> None:
    assert docs.example_body("checkpoint") in docs.page("library.md")


def test_the_example_pays_once_for_two_attempts(db_url: str) -> None:
    output = processes.run(
        processes.python_command("examples/checkpoint.py"),
        env={**settings.child_env(), "DATABASE_URL": db_url},
        timeout=60,
    )
    assert output.strip().splitlines()[-1] == (
        "succeeded after 2 attempts, paid 1: https://cdn.example/frame-1.png"
    ), output
