"""A Python client generated from `/openapi.json` by openapi-python-client, as a user of the API
would make one, run against a real `python -m service api` process: it creates a project, reads
it back typed, and gets a typed `Error` on a 404 (the generator dropped every error answer while
`Error.details` had no `items`).

The generator runs with `--fail-on-warning`: a schema it cannot read fails the test instead of
silently leaving an operation or a model out of the client. Its one setting: the images'
`image/*` types read as bytes (`content_type_overrides`, the generator's own knob for types it
does not know).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from service.openapi import openapi_document
from tests.service import support
from tests.support import docs
from tests.support.ports import free_port
from tests.support.processes import Processes, wait_ready

PACKAGE = "storyboard_client"
GENERATOR_CONFIG = {
    "content_type_overrides": dict.fromkeys(
        ("image/png", "image/jpeg", "image/webp"), "application/octet-stream"
    ),
}
GENERATE_TIMEOUT_S = 120


def generate_client(where: Path) -> ModuleType:
    """Generate the client package into `where` and import it."""
    document = where / "openapi.json"
    document.write_text(json.dumps(openapi_document()))
    config = where / "generator.json"
    config.write_text(json.dumps(GENERATOR_CONFIG))
    bin_dir = Path(sys.executable).parent  # the generator formats its output with our ruff
    command = [str(bin_dir / "openapi-python-client"), "generate", "--path", str(document)]
    command += ["--config", str(config), "--meta", "none", "--output-path", str(where / PACKAGE)]
    command += ["--fail-on-warning"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT_S,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))


@pytest.fixture
async def api_url(db_url: str, processes: Processes, tmp_path: Path) -> str:
    """`python -m service api` on a free port."""
    port = free_port()
    env = {"DATABASE_URL": db_url, "MEDIA_DIR": str(tmp_path / "media")}
    api = processes.service("api", "--port", str(port), env=env)
    url = f"http://127.0.0.1:{port}"
    await wait_ready(f"{url}/readyz", api, timeout=30)
    return url


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_generated_client_creates_a_project_and_gets_typed_errors(
    tmp_path: Path, api_url: str, db_url: str
) -> None:
    client_package = generate_client(tmp_path)
    models = _module("models")
    create_project = _module("api.projects.create_project")
    get_project = _module("api.projects.get_project")
    list_projects = _module("api.projects.list_projects")
    get_status = _module("api.projects.get_status")
    get_job = _module("api.jobs.get_job")
    healthz = _module("api.service.healthz")

    token = (await support.bearer(db_url, "alice"))["Authorization"].removeprefix("Bearer ")
    client = client_package.AuthenticatedClient(base_url=api_url, token=token)
    async with client as api:
        body = models.ProjectIn.from_dict(support.project_body(2))
        created = await create_project.asyncio_detailed(client=api, body=body)
        assert created.status_code == 201, created.content
        project = created.parsed
        assert isinstance(project, models.Project)
        assert project.title == "Test film" and project.aspect_ratio == models.AspectRatio("16:9")
        assert [shot.shot_number for shot in project.shots] == [1, 2]
        assert [board.status for board in project.storyboards] == [
            models.StoryboardState.PENDING
        ] * 2

        read = await get_project.asyncio(client=api, project_id=project.id)
        assert isinstance(read, models.Project) and read.id == project.id
        listed = await list_projects.asyncio(client=api)
        assert isinstance(listed, models.ProjectList)
        assert [p.id for p in listed.projects] == [project.id]
        status = await get_status.asyncio(client=api, project_id=project.id)
        assert isinstance(status, models.Status)
        assert status.status == models.ProjectState.PENDING and status.total == 2

        # The errors are typed: a 404 is an `Error`, its code and message readable.
        missing = await get_project.asyncio_detailed(client=api, project_id=uuid.uuid4())
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Error), missing.content
        assert missing.parsed.error.code == "not_found"
        assert missing.parsed.error.message == "project not found"
        assert missing.parsed.error.details == []
        no_job = await get_job.asyncio_detailed(client=api, job_id=987654)
        assert no_job.status_code == 404 and isinstance(no_job.parsed, models.Error)

        # A validation error's details are typed too.
        bad = models.ProjectIn.from_dict({**support.project_body(1), "title": " "})
        refused = await create_project.asyncio_detailed(client=api, body=bad)
        assert refused.status_code == 422 and isinstance(refused.parsed, models.Error)
        (detail,) = refused.parsed.error.details
        assert isinstance(detail, models.ErrorDetail) and detail.loc == ["title"]

    # docs/api.md's example, as it is written there, on this API with this user's token: it
    # runs the synchronous client, so it runs in a thread (the API is another process).
    (example,) = docs.blocks("api.md", "python")
    example = example.replace('"http://127.0.0.1:8000"', repr(api_url))
    example = example.replace('"<token of make run>"', repr(token))
    assert api_url in example and token in example, "docs/api.md's example names both"
    await asyncio.to_thread(exec, compile(example, "docs/api.md", "exec"), {})

    anonymous = client_package.Client(base_url=api_url)
    async with anonymous as api:
        assert (await healthz.asyncio(client=api)).status == models.HealthStatus.OK
        unauthorized = await get_project.asyncio_detailed(client=api, project_id=uuid.uuid4())
        assert unauthorized.status_code == 401 and isinstance(unauthorized.parsed, models.Error)
        assert unauthorized.parsed.error.code == "unauthorized"
