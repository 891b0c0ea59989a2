"""The API docs at `/docs` in a real browser (Debian's Chromium through Playwright), served by a
real `python -m service api`: Swagger UI renders every operation of `/openapi.json`, from files
this origin serves (no CDN), without a script error or a Content-Security-Policy violation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from playwright.async_api import ConsoleMessage, Page, Request, expect

from service.openapi import openapi_document
from tests.browser.conftest import SCREENSHOTS_VARIABLE, StartStudio, screenshot


async def test_the_docs_render_every_operation_from_this_origin(
    start_studio: StartStudio, page: Page
) -> None:
    studio = await start_studio()
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", console)
    page.on("requestfailed", lambda request: problems.append(_failed(request)))

    await page.goto(f"{studio.url}/docs")
    operations = [
        (method, path, operation["operationId"])
        for path, item in openapi_document()["paths"].items()
        for method, operation in item.items()
    ]
    blocks = page.locator(".opblock")
    await expect(blocks).to_have_count(len(operations))
    for method, _path, operation_id in operations:
        block = page.locator(f".opblock-{method}").filter(has_text=operation_id)
        await expect(block.first).to_be_visible()
    await expect(page.locator(".opblock-summary-path").filter(has_text="/events")).to_be_visible()

    # One operation opened: its answers, the typed error among them.
    create = page.locator(".opblock-post").filter(has_text="create_project").first
    await create.locator(".opblock-summary").click()
    await expect(create.locator(".responses-table").first).to_contain_text("201")
    await expect(create.locator(".responses-table").first).to_contain_text("422")
    await screenshot(page, "docs")
    await create.locator(".opblock-summary").click()  # closed again

    # The live stream: its media type and the events it sends, named.
    stream = page.locator(".opblock-get").filter(has_text="stream_events").first
    await stream.locator(".opblock-summary").click()
    responses = stream.locator(".responses-table").first
    await expect(responses).to_contain_text("text/event-stream")
    for event in ("status", "done", "timeout", "unavailable", "error"):
        await expect(responses).to_contain_text(f"{event}")
    await expect(responses).to_contain_text("event: done")  # the example stream
    await stream.screenshot(path=str(_kept("docs-events")))

    assert requested and all(url.startswith(studio.url) for url in requested), requested
    assert not problems, problems


def _kept(name: str) -> Path:
    # Beside the other screenshots when they are kept (make screenshots), else thrown away.
    directory = Path(os.environ.get(SCREENSHOTS_VARIABLE) or tempfile.mkdtemp())
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.png"


def _failed(request: Request) -> str:
    return f"{request.method} {request.url}: {request.failure}"
