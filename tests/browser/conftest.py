"""Fixtures of the browser tests: the real API and a real worker as processes, on the fake
upstream, and Debian's Chromium driven by Playwright.

The studio's tests sign in as a user would; `STUDIO_SCREENSHOTS=<dir>` (what `make
screenshots` sets) also keeps screenshots of what they saw there, for the docs.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.async_api import Browser, Page, async_playwright

from tests.service.support import bearer
from tests.support import settings
from tests.support.ports import free_port
from tests.support.processes import Processes, wait_ready
from tests.support.upstream import Answer, Call, FakeUpstream

CHROMIUM = "/usr/bin/chromium"  # Debian's (tools/system-deps.sh installs it), not a download
REGISTRY = "service.jobs:registry"
SCREENSHOTS_VARIABLE = "STUDIO_SCREENSHOTS"
EXPECT_TIMEOUT_MS = 15_000  # what a page may take to show what a test waits for

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None and not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: `make test` installs it (as root)",
)


class Studio:
    """The app as a user reaches it: its URL, a signed-in token, and the fake upstream."""

    def __init__(self, url: str, token: str, upstream: FakeUpstream) -> None:
        self.url = url
        self.token = token
        self.upstream = upstream

    @property
    def headers(self) -> dict[str, str]:
        """Authorization headers of the test's user, for API calls beside the browser."""
        return {"Authorization": f"Bearer {self.token}"}


StartStudio = Callable[..., Awaitable[Studio]]


def shot_image(call: Call) -> Answer:
    """A picture per shot (a band of colour and its number), so the board shows them apart."""
    width, height = (int(n) for n in str(call.body["size"]).split("x"))
    hue = (call.shot_number * 67 + call.nth * 23) % 255
    image = Image.new("RGB", (width, height), (40 + hue // 2, 70 + (hue * 3) % 120, 150))
    draw = ImageDraw.Draw(image)
    for band in range(0, height, max(1, height // 8)):
        draw.rectangle(
            (0, band, width, band + height // 16), fill=(30 + hue // 3, 50, 90 + hue // 4)
        )
    draw.ellipse((width // 3, height // 4, 2 * width // 3, 3 * height // 4), fill=(235, 200, 120))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Answer(data=buffer.getvalue())


@pytest.fixture
def upstream_images(upstream: FakeUpstream) -> FakeUpstream:
    """The fake upstream answering a picture of its own per shot, after a short while."""
    upstream.latency_s = 0.3
    upstream.script = shot_image
    return upstream


@pytest.fixture
async def start_studio(
    db_url: str, upstream_images: FakeUpstream, processes: Processes, tmp_path: Path
) -> StartStudio:
    """`await start_studio(**env)`: `python -m service api` on a free port, one worker on the
    fake upstream (env on top of the test's for both: the API enqueues with the limits the
    worker enforces), and a token; at most one worker per test, started by the first call."""
    base = settings.service_env(db_url, tmp_path / "media", upstream_images, **settings.WORKER_ENV)
    workers: list[object] = []

    async def start(**env: str) -> Studio:
        if not workers:
            workers.append(processes.worker(REGISTRY, env={**base, **env}))
        port = free_port()
        api = processes.service("api", "--port", str(port), env={**base, **env})
        url = f"http://127.0.0.1:{port}"
        await wait_ready(f"{url}/readyz", api)
        headers = await bearer(db_url, "alice", tier="pro")
        token = headers["Authorization"].removeprefix("Bearer ")
        return Studio(url, token, upstream_images)

    return start


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless (as root it needs no sandbox flags from us: Playwright
    passes --no-sandbox when it runs as root)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page (its own storage) at desktop width."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    await context.close()
    assert not errors, f"the page's script failed: {errors}"


async def screenshot(page: Page, name: str) -> None:
    """Keep a screenshot `<name>.png` when `STUDIO_SCREENSHOTS` names a directory."""
    directory = os.environ.get(SCREENSHOTS_VARIABLE)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)
