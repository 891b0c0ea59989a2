"""The queue dashboard in a real browser (Debian's Chromium through Playwright), against the real
API and a real worker as processes and the fake upstream: an admin signs in, reads a failed
job's traceback, retries it, cancels a queued job, pauses the queue (the worker leaves a new
job alone) and resumes it. Every action is confirmed in a dialog and shows on the page at once.
"""

from __future__ import annotations

import re
import time
from typing import Any

import asyncpg
import httpx
from playwright.async_api import Dialog, Page, expect

from pgqueue import Queue
from tests.browser.conftest import StartStudio, screenshot, shot_image
from tests.service.support import bearer, hold_service_schedules, project_body
from tests.support.upstream import Answer, Call, error
from tests.support.wait import wait_for

REFUSAL = "The request was rejected because it may violate our content policy"
QUIET_S = 1.5  # three of the worker's fallback polls (0.5 s): long enough to see it keep off


async def _job(client: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    answer = await client.get(f"/api/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


async def _wait_state(client: httpx.AsyncClient, job_id: int, state: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        job = await _job(client, job_id)
        return job if job["state"] == state else None

    return await wait_for(reached, timeout=20, message=f"job {job_id} {state}")


def _row(page: Page, job_id: int) -> Any:
    return page.locator(f'#jobs tr[data-job="{job_id}"]')


async def test_an_admin_retries_cancels_pauses_and_resumes(
    start_studio: StartStudio, page: Page, db_url: str
) -> None:
    await hold_service_schedules(db_url)  # the queue's counts are of this test's jobs only
    studio = await start_studio()
    admin = await bearer(db_url, "root", admin=True)
    refuse_two = True

    def script(call: Call) -> Answer:
        return error(400, REFUSAL) if refuse_two and call.shot_number == 2 else shot_image(call)

    studio.upstream.script = script
    questions: list[str] = []

    async def confirm(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)

    async with httpx.AsyncClient(base_url=studio.url, headers=admin) as client:
        created = await client.post("/api/projects", json=project_body(3), headers=studio.headers)
        project_id = created.json()["id"]
        generated = await client.post(
            f"/api/projects/{project_id}/storyboards/generate", headers=studio.headers
        )
        first, refused, third = generated.json()["job_ids"]
        for job_id in (first, third):
            await _wait_state(client, job_id, "succeeded")
        await _wait_state(client, refused, "failed")
        # A kind the service's worker has no handler for waits in the queue: one to cancel.
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
        try:
            waiting = await Queue(pool).enqueue("report.weekly", {"week": 48})
            await Queue(pool).set_rate_limit("reports", 5, 60)  # shown beside the queues
            await Queue(pool).set_breaker("reports", threshold=5, window_s=30, open_s=30)
            await Queue(pool).set_budget("user:ann", 25)
        finally:
            await pool.close()

        # Signed out, the dashboard asks for a token; an admin's opens it.
        await page.goto(f"{studio.url}/dashboard/")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        # An inline icon: no /favicon.ico request, which would 404 beside the dashboard.
        await expect(page.locator('link[rel="icon"]')).to_have_attribute(
            "href", re.compile(r"^data:image/svg\+xml,")
        )
        await page.locator("#token").fill(admin["Authorization"].removeprefix("Bearer "))
        await page.get_by_role("button", name="Sign in").click()
        queue_row = page.locator('#queues tr[data-queue="default"]')
        await expect(queue_row.locator('[data-part="completed"]')).to_have_text("2")
        await expect(queue_row.locator('[data-part="failed"]')).to_have_text("1")
        await expect(queue_row.locator('[data-part="waiting"]')).to_have_text("1")
        await expect(queue_row.locator("svg.chart rect[fill='#1f7a4d']").first).to_be_attached()
        await expect(_row(page, refused).locator('[data-part="state"]')).to_have_text("failed")
        limit_row = page.locator('#rate-limits tr[data-key="reports"]')
        await expect(limit_row.locator('[data-part="limit"]')).to_have_text("5 per 60.0 s")
        await expect(limit_row.locator('[data-part="recent"]')).to_have_text("0 of 5")
        await expect(limit_row.locator('[data-part="blocked"]')).to_have_text("now")
        await expect(limit_row.locator('[data-part="breaker"]')).to_have_text("closed")
        budget_row = page.locator('#budgets tr[data-key="user:ann"]')
        await expect(budget_row.locator('[data-part="spent"]')).to_have_text("0 of 25 per 24.0 h")
        await expect(budget_row.locator('[data-part="available"]')).to_have_text("25")
        await screenshot(page, "dashboard")

        # The failed job's page: payload, attempts and the upstream's refusal in its error.
        await _row(page, refused).get_by_role("link", name=str(refused)).click()
        await expect(page.locator('[data-part="payload"]')).to_contain_text(project_id)
        await expect(page.locator('[data-part="error"]')).to_contain_text(REFUSAL)
        await expect(page.locator('[data-part="attempts"]')).to_contain_text("of 3")
        await screenshot(page, "dashboard-job")

        # Retry it (the upstream now answers): confirmed, queued at once, then it succeeds.
        refuse_two = False
        await page.get_by_role("button", name="Retry").click()
        await expect(page.locator(".notice")).to_contain_text(f"Job {refused} is queued again")
        assert questions[-1].startswith(f"Retry job {refused}")
        await _wait_state(client, refused, "succeeded")
        # The open page follows it (no reload) and offers to reload for the new details.
        await expect(page.locator('#job [data-part="state"]')).to_have_text("succeeded")
        await page.locator("#refresh").click()
        await expect(page.locator('#job [data-part="state"]')).to_have_text("succeeded")
        # Its refusal moved to the attempt history; the succeeded job shows no current error.
        history = page.locator('[data-part="attempt-history"]')
        await expect(history.locator('tr[data-outcome="failed"]')).to_contain_text(REFUSAL)
        await expect(history.locator('tr[data-outcome="succeeded"]')).to_have_count(1)
        await expect(page.locator('[data-part="error"]')).to_have_count(0)
        await screenshot(page, "dashboard-job-attempts")

        # Cancel the waiting job from the listing: cancelled at once, on the page it came from.
        await page.get_by_role("link", name=re.compile("dashboard")).first.click()
        await _row(page, waiting.id).get_by_role("button", name="Cancel").click()
        await expect(page.locator(".notice")).to_contain_text(f"Job {waiting.id} is cancelled")
        await expect(_row(page, waiting.id).locator('[data-part="state"]')).to_have_text(
            "cancelled"
        )
        assert (await _job(client, waiting.id))["state"] == "cancelled"

        # Pause: the worker leaves a new job of the queue alone until it is resumed.
        await queue_row.get_by_role("button", name="Pause").click()
        await expect(queue_row.locator('[data-part="paused"]')).to_be_visible()
        assert questions[-1].startswith("Pause queue default")
        again = await client.post(
            f"/api/projects/{project_id}/storyboards/1/regenerate", headers=studio.headers
        )
        (held,) = again.json()["job_ids"] if "job_ids" in again.json() else [again.json()["job_id"]]
        quiet_until = time.monotonic() + QUIET_S

        async def left_alone() -> bool:
            job = await _job(client, held)
            assert job["state"] == "queued" and job["attempts"] == 0, job
            return time.monotonic() > quiet_until

        await wait_for(left_alone, timeout=QUIET_S + 5, message="the paused job left alone")
        await page.reload()
        await expect(queue_row.locator('[data-part="waiting"]')).to_have_text("1")

        await queue_row.get_by_role("button", name="Resume").click()
        await expect(page.locator(".notice")).to_contain_text("Queue default is resumed")
        await expect(queue_row.locator('[data-part="paused"]')).to_have_count(0)
        await _wait_state(client, held, "succeeded")
        await page.reload()
        await expect(_row(page, held).locator('[data-part="state"]')).to_have_text("succeeded")
        await screenshot(page, "dashboard-after")


FOREIGN = "http://other-site.test/"  # a page of another site, served by the test's route


async def test_a_session_is_a_key_that_another_site_cannot_end_and_sign_out_does(
    start_studio: StartStudio, page: Page, db_url: str
) -> None:
    studio = await start_studio()
    token = (await bearer(db_url, "root", admin=True))["Authorization"].removeprefix("Bearer ")
    await page.goto(f"{studio.url}/dashboard/")
    await page.locator("#token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Queues")).to_be_visible()
    (cookie,) = await page.context.cookies()
    assert cookie["value"] != token and token not in cookie["value"]
    assert 0 < cookie["expires"] - time.time() <= 8 * 3600 + 60  # it ends, in the browser too

    # Another site's page posts a sign-out form at the dashboard: refused, still signed in.
    form = (
        f'<form method="post" action="{studio.url}/dashboard/sign-out"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    await page.route(FOREIGN, lambda route: route.fulfill(body=form, content_type="text/html"))
    async with page.expect_navigation(url=re.compile(f"^{re.escape(studio.url)}/dashboard/")):
        await page.goto(FOREIGN)
    await expect(page.locator("body")).to_contain_text("cross-site request refused")
    await page.goto(f"{studio.url}/dashboard/")
    await expect(page.get_by_role("heading", name="Queues")).to_be_visible()

    # Signing out ends the session itself: a copy of the cookie is refused afterwards.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.context.add_cookies([cookie])  # type: ignore[list-item]
    await page.goto(f"{studio.url}/dashboard/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
