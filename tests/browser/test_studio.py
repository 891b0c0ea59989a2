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
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartStudio, Studio, screenshot
from tests.service.support import bearer, project_body
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
    await expect(duration_error).to_have_text("must be at most 60 seconds")
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
    await expect(page.locator("#generate")).to_have_text("Retry failed shots")
    await screenshot(page, "studio-refusal")

    # Generate on the partial project tries the failed shot again, and only that one.
    await page.get_by_role("button", name="Retry failed shots").click()
    await expect(page.locator("#board-message")).to_have_text("Generating 1 shot(s).")
    await expect(page.locator("#board-message")).to_be_hidden()  # done again: said its piece
    await expect(_card(page, 2)).to_have_attribute("data-status", "failed")
    assert len(studio.upstream.calls_for(studio.upstream.calls[0].project_id, 2)) == 2
    assert len(studio.upstream.calls) == 4


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
        await expect(_card(page, shot).locator(".wait")).to_have_text(
            "waiting for a free slot: this project's shots take turns"
        )
    await expect(page.locator("#board-outlook")).to_contain_text(re.compile(r"about \d+ s left"))
    await screenshot(page, "studio-waiting")


async def test_the_form_says_what_to_fix_in_plain_words(
    start_studio: StartStudio, page: Page
) -> None:
    studio = await start_studio()
    await page.goto(f"{studio.url}/#token={studio.token}")
    await page.get_by_role("button", name="New project").click()
    # No title, a character named twice, and every shot removed.
    await page.get_by_role("button", name="Add character").click()
    for row in (0, 1):
        await page.locator("#characters .row").nth(row).locator('[data-part="name"]').fill("Ann")
    await page.locator("#shots .row").first.get_by_role("button", name="Remove").click()
    await page.get_by_role("button", name="Create project").click()

    form = page.locator("#project-form")
    await expect(form.locator('[data-loc="title"]')).to_have_text("must not be empty")
    await expect(form.locator('[data-loc="shots"]')).to_have_text("add at least 1 shot")
    await expect(form.locator('[data-loc=""]')).to_have_text(
        "2 problems to fix: see the marked fields below."
    )
    await expect(page.locator("#title")).to_be_focused()
    text = await form.inner_text()
    assert "should" not in text and "after validation" not in text, text

    # The title and a shot given, the cross-field problem comes next, beside its field.
    await page.locator("#title").fill("Twins")
    await page.get_by_role("button", name="Add shot").click()
    await page.locator("#shots .row").first.locator('[data-part="description"]').fill("Two Anns")
    await page.get_by_role("button", name="Create project").click()
    second = page.locator("#characters .row").nth(1)
    await expect(second.locator('[data-sub="name"]')).to_have_text("Ann is already a character")
    await expect(second.locator('[data-part="name"]')).to_have_class(re.compile("invalid"))
    await expect(form.locator('[data-loc="title"]')).to_be_empty()


# How each reason to wait is brought about (the settings of the API and the worker, the
# fake upstream's answer), and what the board then says of each shot.
WAITS: dict[str, tuple[dict[str, str], Answer, dict[int, tuple[str, str]]]] = {
    "queued": (
        {"PGQUEUE_CONCURRENCY": "1", "IMAGE_TIMEOUT_S": "60"},
        hang(),
        {2: ("queued", r"^queued for a worker$")},
    ),
    "rate_limit": (
        {"IMAGE_RATE_LIMIT": "1/min", "IMAGE_TIMEOUT_S": "60"},
        hang(),
        {2: ("rate_limit", r"^rate limited by the image service; next try in \d+ s, at \d\d:")},
    ),
    "over_budget": (
        {"BUDGET_PRO_PER_DAY": "1", "IMAGE_TIMEOUT_S": "60"},
        hang(),
        {2: ("over_budget", r"^over today's budget; resumes in (\d+ h )?\d+ (s|min), at \d\d:")},
    ),
    "retry_scheduled": (
        {"PGQUEUE_RETRY_DELAY_MS": "60000", "PGQUEUE_RETRY_CAP_S": "120", "IMAGE_BREAKER": "off"},
        error(500, "upstream broke"),
        {1: ("retry_scheduled", r"^the last attempt failed; retry in \d+ s, at \d\d:")},
    ),
    "upstream_down": (
        # The first failure opens the breaker: no call starts until it closes.
        {"STORYBOARD_CONCURRENCY": "1", "IMAGE_BREAKER": "1/30s,open=60s"},
        error(500, "upstream broke"),
        {2: ("upstream_down", r"^the image service is down; next try in \d+ s, at \d\d:")},
    ),
}


@pytest.mark.parametrize("case", list(WAITS))
async def test_a_waiting_shot_says_why_whatever_holds_it(
    start_studio: StartStudio, page: Page, case: str
) -> None:
    env, answer, expected = WAITS[case]
    studio = await start_studio(**env)
    studio.upstream.script = lambda call: answer
    project_id = await _create_by_api(studio, shots=3, title="Held")
    async with httpx.AsyncClient(base_url=studio.url, headers=studio.headers) as client:
        response = await client.post(f"/api/projects/{project_id}/storyboards/generate")
        assert response.status_code == 202, response.text
    await _open_project(page, studio, "Held")
    for shot, (reason, text) in expected.items():
        await expect(_card(page, shot)).to_have_attribute("data-wait", reason)
        await expect(_card(page, shot).locator(".badge")).to_have_text("waiting")
        await expect(_card(page, shot).locator(".wait")).to_have_text(re.compile(text))
    # The summary counts waiting shots apart from those whose call is in flight.
    await expect(page.locator("#board-summary")).to_contain_text(re.compile(r"[1-3] waiting"))
    await expect(page.locator("#generate")).to_be_disabled()
    if case == "over_budget":
        await screenshot(page, "studio-budget")


async def test_a_paused_queue_holds_every_shot_and_says_so(
    start_studio: StartStudio, page: Page, db_url: str
) -> None:
    studio = await start_studio()
    admin = await bearer(db_url, "root", admin=True)
    async with httpx.AsyncClient(base_url=studio.url, headers=admin) as client:
        assert (await client.post("/api/queues/default/pause")).status_code == 200
    project_id = await _create_by_api(studio, shots=2, title="Paused")
    await _open_project(page, studio, "Paused")
    await page.get_by_role("button", name="Generate", exact=True).click()
    await expect(page.locator("#board-message")).to_have_text("Generating 2 shot(s).")
    for shot in (1, 2):
        await expect(_card(page, shot)).to_have_attribute("data-wait", "queue_paused")
        await expect(_card(page, shot).locator(".wait")).to_contain_text("queue paused")
    await expect(page.locator("#board-summary")).to_have_text("generating · 0% · 2 waiting")
    async with httpx.AsyncClient(base_url=studio.url, headers=admin) as client:
        assert (await client.post("/api/queues/default/resume")).status_code == 200
    for shot in (1, 2):
        await expect(_card(page, shot)).to_have_attribute("data-status", "success")
    assert project_id


async def _image_bytes(studio: Studio, page: Page, shot: int) -> tuple[str, bytes]:
    src = await _card(page, shot).locator("img").get_attribute("src")
    assert src
    async with httpx.AsyncClient(base_url=studio.url) as client:
        response = await client.get(src)
        assert response.status_code == 200
        return src, response.content


async def test_the_offline_renderer_regenerates_a_new_picture_and_all_of_them(
    start_studio: StartStudio, page: Page, db_url: str
) -> None:
    studio = await start_studio(IMAGE_PROVIDER="local")
    await _create_by_api(studio, shots=3, title="Offline", style="film noir, charcoal")
    await _open_project(page, studio, "Offline")
    await page.get_by_role("button", name="Generate", exact=True).click()
    for shot in (1, 2, 3):
        await expect(_card(page, shot)).to_have_attribute("data-status", "success")
        await expect(_card(page, shot).locator("img")).to_be_visible()
    await expect(page.locator("#generate")).to_have_text("Regenerate all")
    await expect(page.locator("#board-message")).to_be_hidden()  # "Generating 3 shot(s)." is over
    await screenshot(page, "studio-board-offline")
    assert not studio.upstream.calls  # drawn here, not bought

    # Regenerate one: the card says so from the click until its new picture is in.
    before_src, before = await _image_bytes(studio, page, 2)
    await _card(page, 2).evaluate(
        """card => {
            window.seenBadges = [];
            new MutationObserver(() => window.seenBadges.push(
                card.querySelector('.badge').textContent + '|' +
                card.querySelector('.regenerate').textContent)
            ).observe(card, {subtree: true, childList: true, characterData: true});
        }"""
    )
    await _card(page, 2).get_by_role("button", name="Regenerate").click()
    await expect(_card(page, 2).locator("img")).not_to_have_attribute("src", before_src)
    await expect(_card(page, 2)).to_have_attribute("data-status", "success")
    seen = await page.evaluate("window.seenBadges")
    assert "regenerating|Regenerating…" in seen, seen
    _, after = await _image_bytes(studio, page, 2)
    assert after != before  # another composition, not the same frame again

    # Regenerate all on the finished project, while the queue is paused: every card says it
    # is being made again (and why it waits), the old pictures dimmed under a note.
    admin = await bearer(db_url, "root", admin=True)
    async with httpx.AsyncClient(base_url=studio.url, headers=admin) as client:
        assert (await client.post("/api/queues/default/pause")).status_code == 200
    sources = [await _card(page, n).locator("img").get_attribute("src") for n in (1, 2, 3)]
    await page.get_by_role("button", name="Regenerate all").click()
    await expect(page.locator("#board-message")).to_have_text("Regenerating all 3 shot(s).")
    for shot in (1, 2, 3):
        await expect(_card(page, shot)).to_have_attribute("data-wait", "queue_paused")
        await expect(_card(page, shot).locator(".frame-note")).to_have_text("Waiting…")
        await expect(_card(page, shot).locator(".regenerate")).to_have_text("Regenerating…")
    await expect(page.locator("#generate")).to_be_disabled()
    await screenshot(page, "studio-regenerating")
    async with httpx.AsyncClient(base_url=studio.url, headers=admin) as client:
        assert (await client.post("/api/queues/default/resume")).status_code == 200
    for shot, source in zip((1, 2, 3), sources, strict=True):
        await expect(_card(page, shot).locator("img")).not_to_have_attribute("src", source or "")
        await expect(_card(page, shot)).to_have_attribute("data-status", "success")
        await expect(_card(page, shot).locator(".frame-note")).to_be_empty()
    await expect(page.locator("#generate")).to_have_text("Regenerate all")
    await expect(page.locator("#generate")).to_be_enabled()


async def test_the_form_fields_are_named_by_their_labels_and_the_page_loads_cleanly(
    start_studio: StartStudio, page: Page
) -> None:
    studio = await start_studio()
    failed: list[str] = []
    page.on("console", lambda message: message.type == "error" and failed.append(message.text))
    await page.goto(f"{studio.url}/#token={studio.token}")
    await page.get_by_role("button", name="New project").click()
    await page.get_by_role("button", name="Add shot").click()

    # A row's fields are reached by their labels, as a screen reader names them.
    second = page.locator("#shots .row").nth(1)
    await second.get_by_label("Description").fill("Ann lights a cigarette")
    await second.get_by_label("Characters (comma separated)").fill("Ann")
    await expect(second.locator('[data-part="description"]')).to_have_value(
        "Ann lights a cigarette"
    )
    await expect(page.get_by_label("Description")).to_have_count(3)  # a character, two shots
    await page.locator("#characters .row").get_by_text("Name", exact=True).click()
    await expect(page.locator('#characters [data-part="name"]')).to_be_focused()

    # The icon is inline: the browser asks for no /favicon.ico, so nothing fails to load.
    icon = await page.locator('link[rel="icon"]').get_attribute("href")
    assert icon is not None and icon.startswith("data:image/svg+xml,")
    await page.wait_for_load_state("networkidle")
    assert not failed, failed
