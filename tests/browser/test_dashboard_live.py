"""The dashboard an operator keeps open, in a real browser (Debian's Chromium through
Playwright) against the real API and worker as processes: counts and job states change on the
page without a reload (and the polling stops while the tab is hidden), a payload search, bulk
retry and bulk cancel by filter confirmed with the number of jobs, the workers, the run time
percentiles per kind, and relative times with the UTC time on hover.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import asyncpg
import httpx
from playwright.async_api import Page, Request, expect

from pgqueue import Queue
from tests.browser.conftest import StartStudio, screenshot
from tests.service.support import bearer, hold_service_schedules, project_body
from tests.support.wait import wait_for

REPORTS = "reports"  # a queue the service's worker does not take: its jobs stay where put
UTC_TITLE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
QUIET_S = 5.0  # two and a half poll periods: long enough to see a hidden tab stay quiet


async def _sign_in(page: Page, url: str, db_url: str) -> None:
    admin = await bearer(db_url, "root", admin=True)
    await page.goto(f"{url}/dashboard/")
    await page.locator("#token").fill(admin["Authorization"].removeprefix("Bearer "))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Queues")).to_be_visible()


async def _fail(db_url: str, job_ids: list[int]) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "UPDATE pgqueue.jobs SET state = 'failed', finished_at = now(),"
            " last_error = 'ReportError: the warehouse timed out' WHERE id = ANY($1)",
            job_ids,
        )
    finally:
        await conn.close()


async def test_counts_and_states_change_on_the_page_without_a_reload(
    start_studio: StartStudio, page: Page, db_url: str
) -> None:
    await hold_service_schedules(db_url)
    studio = await start_studio()
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        queue = Queue(pool)
        first = await queue.enqueue("report.weekly", {"week": 1}, queue=REPORTS)
        # Some jobs that ran: their run times per kind, and a worker that is alive.
        async with httpx.AsyncClient(base_url=studio.url, headers=studio.headers) as client:
            created = await client.post("/api/projects", json=project_body(2))
            project_id = created.json()["id"]
            generate = await client.post(f"/api/projects/{project_id}/storyboards/generate")
            job_ids = generate.json()["job_ids"]

        async def generated() -> bool:
            jobs = await queue.get_many(job_ids)
            return all(job.state.value == "succeeded" for job in jobs)

        await wait_for(generated, timeout=30, message="the two shots generated")

        await _sign_in(page, studio.url, db_url)
        await page.evaluate("window.loadedOnce = true")  # gone if the page reloads
        row = page.locator(f'#queues tr[data-queue="{REPORTS}"]')
        await expect(row.locator('[data-part="waiting"]')).to_have_text("1")

        # New jobs and a cancel, elsewhere: the counts and the listed job's state follow.
        for week in (2, 3):
            await queue.enqueue("report.weekly", {"week": week}, queue=REPORTS)
        await expect(row.locator('[data-part="waiting"]')).to_have_text("3")
        await queue.cancel(first.id)
        job_row = page.locator(f'#jobs tr[data-job="{first.id}"]')
        await expect(job_row.locator('[data-part="state"]')).to_have_text("cancelled")
        await expect(job_row.locator('[data-part="state"]')).to_have_class(re.compile("cancelled"))
        await expect(row.locator('[data-part="cancelled"]')).to_have_text("1")
        # Its Cancel button was for a queued job: gone; its finished time is now shown.
        await expect(job_row.get_by_role("button", name="Cancel")).to_have_count(0)
        await expect(job_row.locator('[data-part="finished"] time')).to_have_text(
            re.compile(r"(ago|just now)$")
        )
        assert await page.evaluate("window.loadedOnce") is True

        # The worker: alive, its queues and slots, its last heartbeat a moment ago.
        worker = page.locator("#workers tbody tr").first
        await expect(worker.locator('[data-part="presence"]')).to_have_text("alive")
        await expect(worker.locator('[data-part="slots"]')).to_have_text(
            re.compile(r"^\d+ of \d+$")
        )
        beat = worker.locator('[data-part="heartbeat"] time')
        await expect(beat).to_have_text(re.compile(r"(s ago|just now|in \d+ s)$"))
        assert UTC_TITLE.match(await beat.get_attribute("title") or ""), "the UTC time on hover"

        # Run times of the kind that ran, p50 to p99.
        durations = page.locator("#durations tbody tr").first
        await expect(durations.locator('[data-part="jobs"]')).to_have_text("2")
        for part in ("p50", "p95", "p99"):
            await expect(durations.locator(f'[data-part="{part}"]')).to_have_text(
                re.compile(r"^\d+(\.\d)? (ms|s)$")
            )

        # Relative times in the listing, the absolute one in the title.
        created_at = job_row.locator("time").first
        await expect(created_at).to_have_text(re.compile(r"(ago|just now)$"))
        assert UTC_TITLE.match(await created_at.get_attribute("title") or "")
        await screenshot(page, "dashboard-live")

        # A hidden tab asks nothing; shown again, it polls at once.
        polls: list[float] = []

        def seen(request: Request) -> None:
            if "/dashboard/live" in request.url:
                polls.append(time.monotonic())

        page.on("request", seen)
        await page.evaluate(
            "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
            "document.dispatchEvent(new Event('visibilitychange'))"
        )
        hidden_at = time.monotonic()

        async def stayed_quiet() -> bool:
            assert not [t for t in polls if t > hidden_at + 0.1], "a hidden tab polled"
            return time.monotonic() > hidden_at + QUIET_S

        await wait_for(stayed_quiet, timeout=QUIET_S + 5, message="a quiet hidden tab")
        await page.evaluate(
            "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
            "document.dispatchEvent(new Event('visibilitychange'))"
        )
        await wait_for(
            lambda: _true_when(bool(polls)), timeout=5, message="a poll once shown again"
        )
    finally:
        await pool.close()


async def _true_when(value: bool) -> bool:
    return value


async def test_a_payload_search_then_bulk_retry_and_cancel_confirmed_with_the_count(
    start_studio: StartStudio, page: Page, db_url: str
) -> None:
    studio = await start_studio()
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        queue = Queue(pool)
        batch = [
            await queue.enqueue("report.weekly", {"batch": "b1", "week": w}, queue=REPORTS)
            for w in range(3)
        ]
        other = await queue.enqueue("report.weekly", {"batch": "b2"}, queue=REPORTS)
        await _fail(db_url, [j.id for j in batch] + [other.id])
    finally:
        await pool.close()
    await _sign_in(page, studio.url, db_url)

    # A malformed payload filter is refused, saying what is expected.
    await page.goto(f"{studio.url}/dashboard/?payload=%7B%22batch%22%3A")
    await expect(page.locator(".error")).to_contain_text("payload must be a JSON object")

    # Search by payload: only the batch's jobs; their error is theirs, in the listing.
    await page.goto(f"{studio.url}/dashboard/")
    await page.locator('input[name="payload"]').fill('{"batch": "b1"}')
    await page.locator('select[name="state"]').select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("#jobs tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.first.locator('[data-part="last-error"]')).to_have_text(
        "ReportError: the warehouse timed out"
    )
    await expect(page.locator(".bulk")).to_contain_text("JSON containment match")

    # Bulk retry: the confirmation counts the jobs, the action says how many it changed.
    await page.locator("#bulk-retry").click()
    await expect(page.locator('#bulk [data-part="count"]')).to_contain_text("3 failed jobs go back")
    await expect(page.locator("#bulk")).to_contain_text('payload containing {"batch": "b1"}')
    await screenshot(page, "dashboard-bulk")
    await page.get_by_role("button", name="Retry 3 jobs").click()
    await expect(page.locator(".notice")).to_contain_text("3 job(s) queued again")
    await expect(page.locator("#no-jobs")).to_be_visible()  # none failed of the batch now

    # Bulk cancel of the same batch, now queued; the other batch stays failed.
    await page.locator('select[name="state"]').select_option("")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(3)
    for state in await rows.locator('[data-part="state"]').all_text_contents():
        assert state == "queued"
    await page.locator("#bulk-cancel").click()
    await expect(page.locator('#bulk [data-part="count"]')).to_contain_text("3 queued or running")
    await page.get_by_role("button", name="Cancel 3 jobs").click()
    await expect(page.locator(".notice")).to_contain_text("3 job(s) cancelled")
    await expect(rows.locator('[data-part="state"]')).to_have_text(["cancelled"] * 3)

    check = await asyncpg.connect(db_url)
    try:
        states = dict(
            await check.fetch(
                "SELECT payload ->> 'batch', string_agg(DISTINCT state::text, ',')"
                " FROM pgqueue.jobs WHERE queue = $1 GROUP BY 1",
                REPORTS,
            )
        )
    finally:
        await check.close()
    assert states == {"b1": "cancelled", "b2": "failed"}

    # Nothing left to cancel: the confirmation says so and offers no button.
    await page.locator("#bulk-cancel").click()
    await expect(page.locator('#bulk [data-part="count"]')).to_have_text(
        "No job matches: nothing to cancel."
    )
    await expect(page.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)


async def test_a_bulk_action_from_another_site_is_refused(
    start_studio: StartStudio, db_url: str
) -> None:
    studio = await start_studio()
    token = (await bearer(db_url, "root", admin=True))["Authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(base_url=studio.url) as client:
        signed_in = await client.post("/dashboard/sign-in", data={"token": token})
        assert signed_in.status_code == 303
        form: dict[str, Any] = {"payload": json.dumps({"batch": "b1"}), "up_to": "1000"}
        foreign = await client.post(
            "/dashboard/bulk/cancel", data=form, headers={"Origin": "http://other-site.test"}
        )
        assert foreign.status_code == 403 and "cross-site request refused" in foreign.text
        missing = await client.post("/dashboard/bulk/cancel", data={"payload": "{}"})
        assert missing.status_code == 400 and "up_to" in missing.text
        nowhere = await client.get("/dashboard/bulk/delete")
        assert nowhere.status_code == 404
        live = await client.get("/dashboard/live", params={"ids": "1,x"})
        assert live.status_code == 400
        answer = await client.get("/dashboard/live", params={"ids": ""})
        assert answer.status_code == 200 and set(answer.json()) == {
            "now",
            "queues",
            "jobs",
            "workers",
        }
