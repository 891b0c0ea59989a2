"""The shared test tools themselves: the fake upstream against the real http provider, the
process harness, and the template databases."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.images import (
    HttpImageProvider,
    ImageRequest,
    PermanentImageError,
    RetryableImageError,
)
from tests.support import db, settings
from tests.support.processes import ProcessError, Processes, python_command, run
from tests.support.upstream import API_KEY, Answer, Call, FakeUpstream, error, png_bytes
from tests.support.wait import wait_for

PROJECT = "7b0c5a6e-2f4d-4c3e-9a51-0d9e8f7a6b5c"


def _request(shot_number: int, job_id: int) -> ImageRequest:
    return ImageRequest(
        shot_number=shot_number,
        description="rain on the window",
        style="noir",
        aspect_ratio="16:9",
        request_id=f"storyboard-{PROJECT}-{shot_number}-{job_id}",
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as shared:
        yield shared


def _provider(
    client: httpx.AsyncClient, upstream: FakeUpstream, key: str = API_KEY
) -> HttpImageProvider:
    return HttpImageProvider(
        client, base_url=upstream.base_url, api_key=key, model="seedream-test", timeout_s=5
    )


async def test_calls_are_attributed_by_the_request_id_header(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    def refuse_the_first_call_of_shot_2(call: Call) -> Answer | None:
        if call.shot_number == 2 and call.nth == 1:
            return error(503, "busy", retry_after="2")
        return None

    upstream.script = refuse_the_first_call_of_shot_2
    provider = _provider(client, upstream)
    image = await provider.generate(_request(1, 41))
    assert image.data == png_bytes(1280, 720)
    with pytest.raises(RetryableImageError) as refused:
        await provider.generate(_request(2, 42))
    assert refused.value.retry_after_s == 2.0 and "busy" in str(refused.value)
    await provider.generate(_request(2, 42))

    assert [(c.shot_number, c.job_id, c.nth, c.status) for c in upstream.calls_for(PROJECT)] == [
        (1, 41, 1, 200),
        (2, 42, 1, 503),
        (2, 42, 2, 200),
    ]
    first = upstream.calls_for(PROJECT, 1)[0]
    assert first.request_id == f"storyboard-{PROJECT}-1-41"
    assert first.ended is not None and first.ended >= first.started
    assert first.body["model"] == "seedream-test" and first.body["size"] == "1280x720"
    assert upstream.max_in_flight[PROJECT] == 1


async def test_a_url_answer_is_fetched_and_a_wrong_key_is_refused(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.image = "url"
    image = await _provider(client, upstream).generate(_request(1, 1))
    assert image.data == png_bytes(1280, 720)
    with pytest.raises(PermanentImageError, match="401"):
        await _provider(client, upstream, key="wrong").generate(_request(1, 2))
    # A call without a request id is recorded too, under no project.
    anonymous = ImageRequest(shot_number=3, description="d", style="", aspect_ratio="1:1")
    await _provider(client, upstream).generate(anonymous)
    assert [c.request_id for c in upstream.calls_for("")] == [""]


async def test_latency_counts_calls_in_flight(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.latency_s = 0.2
    provider = _provider(client, upstream)
    await asyncio.gather(*(provider.generate(_request(n, n)) for n in (1, 2, 3)))
    assert upstream.max_in_flight[PROJECT] == 3 == upstream.max_total_in_flight
    assert all(c.ended is not None and c.ended - c.started >= 0.2 for c in upstream.calls)
    upstream.reset()
    assert upstream.calls == [] and upstream.max_total_in_flight == 0


async def test_a_child_is_logged_awaited_and_its_group_killed(
    processes: Processes, tmp_path: Path
) -> None:
    done = processes.python("done", "-c", "print('hello'); raise SystemExit(3)")
    assert await done.exited(10) == 3
    assert done.output().strip() == "hello" and done.log_path == tmp_path / "done.log"
    with pytest.raises(ProcessError, match="exited 3, expected 0"):
        await done.exited(1, expect=0)

    # A child that starts a grandchild of its own, then waits for it.
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    parent = processes.python("parent", "-c", script, env={"MARKER": "yes"})
    grandchild = int(await wait_for(lambda: parent.output().strip(), 10, "the grandchild's pid"))
    parent.check_alive()
    processes.close()
    assert parent.returncode == -signal.SIGKILL
    await wait_for(lambda: not _alive(grandchild), 10, "the grandchild is gone too")
    with pytest.raises(ProcessError, match="exited -9"):
        parent.check_alive()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): ask /proc whether it is one.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


def test_children_start_without_our_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_CONCURRENCY", "99")
    monkeypatch.setenv("IMAGE_API_KEY", "a developer's own")
    monkeypatch.setenv("STORYBOARD_QUEUE", "theirs")
    names = ["PGQUEUE_CONCURRENCY", "IMAGE_API_KEY", "STORYBOARD_QUEUE", "PATH"]
    printed = run(
        python_command("-c", f"import os; print(sorted(set(os.environ) & {set(names)!r}))")
    )
    assert printed.strip() == "['PATH']"
    assert {"DATABASE_URL", "IMAGE_API_KEY", "STORYBOARD_QUEUE", "MEDIA_DIR"} <= set(
        settings.SERVICE_VARIABLES
    )
    with pytest.raises(ProcessError, match="exited 2"):
        run(python_command("-c", "import sys; sys.exit(2)"))


async def test_a_fresh_database_is_a_migrated_clone(databases: db.Databases) -> None:
    async with databases.fresh("harness") as url:
        assert db.database_of(url).startswith("t_harness_")
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT to_regclass('pgqueue.jobs') IS NOT NULL")
        finally:
            await conn.close()
    assert not await db.answers(url)  # dropped
