"""The docs' pages and the examples they show, for the tests that keep the two the same."""

from __future__ import annotations

import re

from tests.support.processes import ROOT

DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"


def page(name: str) -> str:
    """The text of `docs/<name>` (or of `README.md` for "README.md", the docs' front door)."""
    path = ROOT / name if name == "README.md" else DOCS / name
    return path.read_text()


def example_body(name: str) -> str:
    """`examples/<name>.py` without its module docstring: what the docs show, verbatim."""
    return (EXAMPLES / f"{name}.py").read_text().split('"""', 2)[2].strip()


# A fenced block, also inside a list item (indented with its item): the indent, the language
# and the code.
BLOCK = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.M | re.S)


def blocks(name: str, language: str) -> list[str]:
    """The code of every block of `language` on a page (see `page`), as a reader copies it."""
    return [
        re.sub(rf"(?m)^{indent}", "", code)
        for indent, lang, code in BLOCK.findall(page(name))
        if lang == language
    ]
