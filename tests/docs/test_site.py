"""The docs site builds with `mkdocs build --strict` (what `make docs` runs), so a broken link,
a missing anchor, a page left out of the nav, an included file that is gone or a reference to a
name pgqueue no longer has fails the suite; and the README's links lead to files of this
repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docs import DOCS
from tests.support.processes import ROOT

BUILD_TIMEOUT_S = 240  # about 10 s alone; the whole suite shares two cores
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_PATH = re.compile(r"`(\.\./[^`\s]+)`")  # a path written out: `../somewhere/file.md`


@pytest.mark.timeout(BUILD_TIMEOUT_S + 30)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        # Material's notice about its own future is not about this site.
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The reference is rendered from the docstrings, the governor's inherited methods included.
    reference = (site / "reference" / "queue.html").read_text()
    for name in ("pgqueue.Queue.enqueue", "pgqueue.Queue.set_budget", "pgqueue.Queue.retry"):
        assert f'id="{name}"' in reference, name
    # Pages that include a file of the repository show it (the bench's method, its last run).
    method = (site / "bench-method.html").read_text()
    assert "What is measured" in method


def test_the_readme_links_to_files_of_this_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = [t for t in LINK.findall(readme) if not t.startswith(("http://", "https://"))]
    assert targets, "the README links into the docs"
    for target in targets:
        path = (ROOT / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target


def test_no_page_links_outside_the_repository_for_its_own_material() -> None:
    # Relative links that climb out of the checkout (the project's notes live beside it, not in
    # it) would work on one machine and nowhere else.
    for path in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        text = path.read_text()
        for target in [*LINK.findall(text), *CODE_PATH.findall(text)]:
            if target.startswith(("http://", "https://", "#")):
                continue
            resolved = (path.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(ROOT), f"{path.relative_to(ROOT)}: {target}"


def test_pip_install_lines_name_this_distribution() -> None:
    # `pgqueue` on PyPI is somebody else's project: ours is pgqueue-durable (import `pgqueue`).
    install = re.compile(r"pip install\s+(?:-\S+\s+)*'?([A-Za-z][\w.-]*)")
    named = []
    for path in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for name in install.findall(path.read_text()):
            named.append(name)
            assert name == "pgqueue-durable", f"{path.relative_to(ROOT)}: pip install {name}"
    assert len(named) >= 5, named
