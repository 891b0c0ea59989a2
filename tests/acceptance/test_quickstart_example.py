"""The first example of the README and the library guide (examples/quickstart.py) runs."""

from __future__ import annotations

from tests.support import docs, processes, settings


def test_the_docs_show_the_example_verbatim() -> None:
    for page in ("README.md", "library.md"):
        assert docs.example_body("quickstart") in docs.page(page), page


def test_the_example_runs(db_url: str) -> None:
    output = processes.run(
        processes.python_command("examples/quickstart.py"),
        env={**settings.child_env(), "DATABASE_URL": db_url},
        timeout=60,
    )
    assert output.strip() == "succeeded hello, Ada {'message': 'halfway there', 'percent': 50}"
