"""The storyboard studio in a real browser (Debian's Chromium through Playwright), against the
real API and a real worker as processes, and the fake upstream.

Each test waits on what the page shows (Playwright's `expect` retries until its timeout),
never on sleeps; the 5-minute limit is reached by moving the page's clock, not by waiting.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import httpx
from playwright.async_api import Page, expect

from tests.browser.conftest import StartStudio, Studio, screenshot
from tests.service.support import project_body
from tests.support.upstream import Answer, Call, error, hang
from tests.support.wait import wait_for

REFUSAL = "The request was rejected because it may violate our content policy"


async def _create_by_api(studio: Studio, **options: Any) -> str:
    async with httpx.AsyncClient(base_url=studio.url, headers=studio.headers) as client:
        answer = await client.post("/api/projects", json=project_body(**options))
        assert answer.status_code == 201, answer.text
        project_id: str = answer.json()["id"]
        return project_id


async def _open_project(page: Page, studio: Studio, title: str) -> None:
    await page.goto(f"{studio.url}/#token={studio.token}")
    await page.get_by_role("button", name=re.compile(title)).click()
    await expect(page.locator("#board")).to_be_visible()


def _card(page: Page, shot: int) -> Any:
    return page.locator(f'.card[data-shot="{shot}"]')


async def test_sign_in_create_with_a_validation_error_generate_and_regenerate(
    start_studio: StartStudio, page: Page
) -> None:
    studio = await start_studio()
    await page.goto(f"{studio.url}/#token={studio.token}")

    # Signed in through the fragment: the token is kept in the browser, out of the URL.
    await expect(page.locator("#projects")).to_be_visible()
    assert "token" not in page.url
    assert await page.evaluate("localStorage.getItem('storyboard-token')") == studio.token

    await page.get_by_role("button", name="New project").click()
    await page.locator("#title").fill("Night shift")
    await page.locator("#style").fill("film noir, charcoal")
    await page.locator("#aspect_ratio").select_option("16:9")
    character = page.locator("#characters .row").nth(0)
    await character.locator('[data-part="name"]').fill("Ann")
    await character.locator('[data-part="description"]').fill("a tired detective in a grey coat")
    await character.locator('[data-part="reference_image_url"]').fill("ftp://example.com/ann.png")
    first = page.locator("#shots .row").nth(0)
    await first.locator('[data-part="description"]').fill("Rain on the office window")
    await first.locator('[data-part="duration_seconds"]').fill("90")  # the limit is 60
    for description in ("Ann lights a cigarette", "A car passes below", "Gone"):
        await page.get_by_role("button", name="Add shot").click()
        row = page.locator("#shots .row").last
        await row.locator('[data-part="description"]').fill(description)
        await row.locator('[data-part="characters"]').fill("Ann")
    await page.locator("#shots .row").last.get_by_role("button", name="Remove").click()
    await expect(page.locator("#shots .row")).to_have_count(3)

    # The server's validation errors, each beside its field.
    await page.get_by_role("button", name="Create project").click()
    duration_error = first.locator('[data-sub="duration_seconds"]')
    await expect(duration_error).to_contain_text("60")
    await expect(first.locator('[data-part="duration_seconds"]')).to_have_class(
        re.compile("invalid")
    )
    await expect(character.locator('[data-sub="reference_image_url"]')).not_to_be_empty()
    await screenshot(page, "studio-form")

    await first.locator('[data-part="duration_seconds"]').fill("3")
    await character.locator('[data-part="reference_image_url"]').fill("https://example.com/ann.png")
    await page.get_by_role("button", name="Create project").click()

    # The board: one card per shot, in the project's aspect ratio.
    await expect(page.locator("#board-title")).to_have_text("Night shift")
    cards = page.locator(".card")
    await expect(cards).to_have_count(3)
    box = await cards.nth(0).locator(".frame").bounding_box()
    assert box is not None and abs(box["width"] / box["height"] - 16 / 9) < 0.05

    await page.get_by_role("button", name="Generate", exact=True).click()
    await expect(page.locator("#stream-message")).to_contain_text("Live")
    await expect(page.locator('.card[data-status="generating"]').first).to_be_visible()
    for shot in (1, 2, 3):
        await expect(_card(page, shot)).to_have_attribute("data-status", "success")
        await expect(_card(page, shot).locator("img")).to_be_visible()
    await expect(page.locator("#board-summary")).to_contain_text("completed · 100%")
    await expect(page.locator("#stream-notice")).to_be_hidden()  # `done` came: nothing to say
    await expect(_card(page, 2).locator(".attempt")).to_have_text("attempt 1")
    for shot in (1, 2, 3):  # every image loaded (naturalWidth is 0 for a broken one)
        loaded = (
            await _card(page, shot).locator("img").evaluate("i => i.complete && i.naturalWidth")
        )
        assert loaded, f"shot {shot}'s image did not load"
    await screenshot(page, "studio-board")

    # Regenerate one shot: it generates again, and comes back with a new image.
    before = await _card(page, 2).locator("img").get_attribute("src")
    await _card(page, 2).get_by_role("button", name="Regenerate").click()
    await expect(_card(page, 2)).to_have_attribute("data-status", "generating")
    await expect(_card(page, 2)).to_have_attribute("data-status", "success")
    await expect(_card(page, 2).locator("img")).not_to_have_attribute("src", before or "")
    assert len(studio.upstream.calls) == 4

    # At phone width: one column, nothing wider than the screen.
    await page.set_viewport_size({"width": 390, "height": 844})
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"
    await screenshot(page, "studio-phone")


async def test_a_content_policy_refusal_shows_its_message_on_its_card(
    start_studio: StartStudio, page: Page
) -> None:
    studio = await start_studio()
    images = studio.upstream.script
    assert images is not None

    def refuse_shot_two(call: Call) -> Answer | None:
        return error(400, REFUSAL) if call.shot_number == 2 else images(call)

    studio.upstream.script = refuse_shot_two
    await _create_by_api(studio, shots=3, aspect_ratio="9:16", title="Refused")
    await _open_project(page, studio, "Refused")
    box = await _card(page, 1).locator(".frame").bounding_box()
    assert box is not None and abs(box["width"] / box["height"] - 9 / 16) < 0.05
    await page.get_by_role("button", name="Generate", exact=True).click()

    await expect(_card(page, 2)).to_have_attribute("data-status", "failed")
    await expect(_card(page, 2).locator(".card-error")).to_contain_text(REFUSAL)
    for shot in (1, 3):
        await expect(_card(page, shot)).to_have_attribute("data-status", "success")
    await expect(page.locator("#board-summary")).to_contain_text("partial")
    assert len(studio.upstream.calls_for(studio.upstream.calls[0].project_id, 2)) == 1
    await screenshot(page, "studio-refusal")


async def test_the_board_stops_waiting_after_five_minutes_and_can_look_again(
    start_studio: StartStudio, page: Page
) -> None:
    studio = await start_studio()
    studio.upstream.script = lambda call: hang()  # nothing finishes while the test looks
    await _create_by_api(studio, shots=2, title="Slow")
    await page.clock.install()  # the page's timers run on a clock the test moves
    await _open_project(page, studio, "Slow")
    await page.get_by_role("button", name="Generate", exact=True).click()
    await expect(page.locator("#stream-message")).to_contain_text("Live")
    await expect(_card(page, 1)).to_have_attribute("data-status", "generating")

    await page.clock.fast_forward("05:06")  # STREAM_MAX_S (300 s) and its 5 s grace
    notice = page.locator("#stream-notice")
    await expect(notice).to_contain_text("Stopped waiting after 5 minutes")
    await expect(page.get_by_role("button", name="Look again")).to_be_visible()
    await screenshot(page, "studio-stopped")

    await page.get_by_role("button", name="Look again").click()
    await expect(page.locator("#stream-message")).to_contain_text("Live")
    await expect(page.get_by_role("button", name="Look again")).to_be_hidden()


async def test_a_stream_the_server_ends_at_stream_max_s_says_so(
    start_studio: StartStudio, page: Page
) -> None:
    studio = await start_studio(STREAM_MAX_S="2")
    studio.upstream.script = lambda call: hang()
    await _create_by_api(studio, shots=1, title="Short")
    await _open_project(page, studio, "Short")
    assert await page.locator("body").get_attribute("data-stream-max-s") == "2.0"
    await page.get_by_role("button", name="Generate", exact=True).click()
    await expect(page.locator("#stream-notice")).to_contain_text("Stopped waiting")
    await expect(page.locator("#stream-notice")).to_contain_text("2 s")
    await expect(page.get_by_role("button", name="Look again")).to_be_visible()


async def test_a_waiting_shot_says_why_and_the_project_its_time_left(
    start_studio: StartStudio, page: Page, pool: asyncpg.Pool
) -> None:
    studio = await start_studio()
    studio.upstream.script = lambda call: hang()  # the first three calls stay in flight
    # The queue finished a minute's worth of jobs lately: a rate to estimate the time left by.
    await pool.execute(
        "INSERT INTO pgqueue.finished_counts (queue, state, minute, n)"
        " VALUES ('default', 'succeeded', date_trunc('minute', now()) - interval '1 minute', 30)"
    )
    project_id = await _create_by_api(studio, shots=5, title="Crowded")
    async with httpx.AsyncClient(base_url=studio.url, headers=studio.headers) as client:
        answer = await client.post(f"/api/projects/{project_id}/storyboards/generate")
        assert answer.status_code == 202, answer.text

    async def three_in_flight() -> bool:
        running = await pool.fetchval("SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'")
        return bool(running == 3)

    await wait_for(three_in_flight, timeout=10, message="the project's three slots taken")
    await _open_project(page, studio, "Crowded")
    for shot in (1, 2, 3):  # in flight: generating, no reason to wait
        await expect(_card(page, shot).locator(".badge")).to_have_text("generating")
        await expect(_card(page, shot).locator(".wait")).to_be_empty()
    for shot in (4, 5):  # the project's cap (STORYBOARD_CONCURRENCY=3) holds them
        await expect(_card(page, shot)).to_have_attribute("data-wait", "concurrency")
        await expect(_card(page, shot).locator(".badge")).to_have_text("waiting")
        await expect(_card(page, shot).locator(".wait")).to_have_text("waiting for a free slot")
    await expect(page.locator("#board-outlook")).to_contain_text(re.compile(r"about \d+ s left"))
    await screenshot(page, "studio-waiting")
