"""The library guide's rate-limit example is examples/rate_limit.py: it runs as the guide says."""

from __future__ import annotations

from tests.support import docs, processes, settings


def test_the_docs_show_the_example_verbatim() -> None:
    assert docs.example_body("rate_limit") in docs.page("library.md")


def test_the_example_keeps_to_the_limit_and_the_pause(db_url: str) -> None:
    output = processes.run(
        processes.python_command("examples/rate_limit.py"),
        env={**settings.child_env(), "DATABASE_URL": db_url},
        timeout=60,
    )
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1] == "[('succeeded', 1)]", output
    moments = [float(line.split("s shot")[0]) for line in lines if "s shot" in line]
    assert len(moments) == 6, output  # six jobs, each printed once (the throttled one later)
    assert max(moments.count(m) for m in set(moments)) <= 2, output
    assert not [m for m in moments if 1.5 < m < 3.0], output  # the key's 2 s pause
