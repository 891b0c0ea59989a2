"""The peers' own virtualenv, `bench/.peers/venv`, created and filled on first use."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.processes import ROOT

VENV = ROOT / "bench" / ".peers" / "venv"
PYTHON = VENV / "bin" / "python"
# The peers at their latest releases, plus what their fastest documented settings need.
PACKAGES = ("pgqueuer", "procrastinate", "uvloop", "asyncpg", "psycopg[binary,pool]")
DISTRIBUTIONS = ("pgqueuer", "procrastinate", "uvloop", "asyncpg", "psycopg")
INSTALL_TIMEOUT_S = 600

_VERSIONS = (
    "import importlib.metadata as m, json; "
    f"print(json.dumps({{d: m.version(d) for d in {DISTRIBUTIONS!r}}}))"
)


def ensure(*, upgrade: bool = False) -> dict[str, str]:
    """Create the venv and install the peers when missing (or when `upgrade`); their versions."""
    if not PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if upgrade or _versions() is None:
        subprocess.run(
            [str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", *PACKAGES],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    versions = _versions()
    if versions is None:
        raise RuntimeError(f"could not install {', '.join(PACKAGES)} into {VENV}")
    return versions


def _versions() -> dict[str, str] | None:
    result = subprocess.run(
        [str(PYTHON), "-c", _VERSIONS], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return None
    versions: dict[str, str] = json.loads(result.stdout)
    return versions
