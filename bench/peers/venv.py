"""The peers' own virtualenv, `bench/.peers/venv`, created and filled on first use.

What goes in is pyproject.toml's `bench-peers` group (never installed into the project's own
venv). The peers install in one pip call; when that fails (a peer that does not build here),
each package is tried alone, so that one peer that cannot be had leaves the others measurable:
`ensure` returns the versions of what is there, and the bench reports a missing peer as failed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

from tests.support.processes import ROOT

VENV = ROOT / "bench" / ".peers" / "venv"
PYTHON = VENV / "bin" / "python"
GROUP = "bench-peers"
INSTALL_TIMEOUT_S = 600

_VERSIONS = (
    "import importlib.metadata as m, json, sys\n"
    "found = {}\n"
    "for d in sys.argv[1:]:\n"
    "    try:\n"
    "        found[d] = m.version(d)\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
    "print(json.dumps(found))\n"
)


def packages() -> tuple[str, ...]:
    """The requirements of pyproject.toml's `bench-peers` group."""
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    return tuple(groups[GROUP])


def distribution(requirement: str) -> str:
    """`psycopg[binary,pool]` -> `psycopg`, `dbos>=3.4,<4` -> `dbos`."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return match.group(0)


def ensure(*, upgrade: bool = False) -> dict[str, str]:
    """Create the venv and install what is missing (all of it when `upgrade`); the versions of
    the distributions that are installed (a peer that could not be installed is absent)."""
    if not PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = packages()
    names = [distribution(r) for r in wanted]
    versions = _versions(names)
    missing = [r for r in wanted if distribution(r) not in versions]
    if upgrade or missing:
        todo = list(wanted) if upgrade else missing
        if not _pip(todo):
            for requirement in todo:  # one by one: a peer that fails leaves the others
                _pip([requirement])
        versions = _versions(names)
    return versions


def _pip(requirements: list[str]) -> bool:
    result = subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", *requirements],
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    return result.returncode == 0


def _versions(names: list[str]) -> dict[str, str]:
    result = subprocess.run(
        [str(PYTHON), "-c", _VERSIONS, *names], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return {}
    versions: dict[str, str] = json.loads(result.stdout)
    return versions
