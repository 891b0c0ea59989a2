// pgqueue's dashboard: the only script. Every change is a POST form; this asks first. On a page
// that says where (body[data-live]), it also polls a small JSON answer every 2 s while the tab
// is visible and writes the queues' counts, the listed jobs' states and the workers' slots into
// the page, and keeps every relative time ("3 min ago") current. Without it the page still
// shows everything as of its load.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

const POLL_MS = 2000;
const STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
let skewMs = 0; // the server's clock minus this one, from the last answer

function relative(seconds) {
  const size = Math.abs(seconds);
  if (size < 1) return "just now";
  let amount;
  if (size < 90) amount = `${Math.round(size)} s`;
  else if (size < 90 * 60) amount = `${Math.round(size / 60)} min`;
  else if (size < 36 * 3600) amount = `${Math.round(size / 3600)} h`;
  else amount = `${Math.round(size / 86400)} d`;
  return seconds < 0 ? `${amount} ago` : `in ${amount}`;
}

function refreshTimes() {
  const now = Date.now() + skewMs;
  for (const time of document.querySelectorAll("time[data-relative]")) {
    const moment = Date.parse(time.getAttribute("datetime"));
    if (!Number.isNaN(moment)) time.textContent = relative((moment - now) / 1000);
  }
}

function setText(scope, part, text) {
  const cell = scope.querySelector(`[data-part="${part}"]`);
  if (cell && cell.textContent !== String(text)) {
    cell.textContent = String(text);
    return cell;
  }
  return null;
}

function showQueues(queues) {
  for (const info of queues) {
    const row = document.querySelector(`#queues tr[data-queue="${CSS.escape(info.queue)}"]`);
    if (!row) continue;
    for (const part of ["waiting", "delayed", "active", "completed", "failed", "cancelled", "oldest"]) {
      setText(row, part, info[part]);
    }
    const failed = row.querySelector('[data-part="failed"]');
    if (failed) failed.classList.toggle("bad", info.failed > 0);
  }
}

function showJobs(jobs) {
  let changed = false;
  for (const scope of document.querySelectorAll("[data-job]")) {
    const job = jobs[scope.dataset.job];
    if (!job) continue;
    const badge = scope.querySelector('[data-part="state"]');
    if (badge && badge.textContent !== job.state) {
      badge.textContent = job.state;
      badge.classList.remove(...STATES);
      badge.classList.add(job.state);
      changed = true;
      if (scope.tagName === "TR") showChangedRow(scope, job);
    }
    if (scope.tagName === "TR") setText(scope, "attempts", job.attempts);
  }
  const reload = document.getElementById("refresh");
  if (reload && changed) reload.hidden = false; // the job page's details are of its load
}

// A listed job whose state changed: its buttons were for the old state (gone, reload for the
// new ones), its finished time is now known, its error is the page's no longer.
function showChangedRow(row, job) {
  const actions = row.querySelector('[data-part="actions"]');
  if (actions) actions.textContent = "";
  const error = row.querySelector('[data-part="last-error"]');
  if (error && job.state === "succeeded") error.textContent = "";
  const finished = row.querySelector('[data-part="finished"]');
  if (finished && job.finished_at) {
    const time = document.createElement("time");
    time.setAttribute("datetime", job.finished_at);
    time.title = job.finished_title;
    time.dataset.relative = "";
    finished.replaceChildren(time);
  }
}

function showWorkers(workers) {
  for (const worker of workers) {
    const row = document.querySelector(`#workers tr[data-worker="${CSS.escape(worker.id)}"]`);
    if (!row) continue;
    setText(row, "slots", `${worker.running} of ${worker.concurrency}`);
    const beat = row.querySelector('[data-part="heartbeat"] time');
    if (beat) beat.setAttribute("datetime", worker.heartbeat_at);
    const presence = row.querySelector('[data-part="presence"] .state');
    if (presence && worker.stale !== row.classList.contains("stale")) {
      row.classList.toggle("stale", worker.stale); // it stopped beating without exiting
      presence.textContent = worker.stale ? "gone" : "alive";
      presence.classList.toggle("failed", worker.stale);
      presence.classList.toggle("succeeded", !worker.stale);
    }
  }
}

async function poll(url, status) {
  if (document.hidden) return; // no requests from a tab nobody looks at
  const ids = [...document.querySelectorAll("[data-job]")].map((el) => el.dataset.job);
  try {
    const answer = await fetch(`${url}?ids=${ids.join(",")}`, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (!answer.ok) {
      status.textContent = answer.status === 401 || answer.status === 403 ? "signed out: reload" : "not live";
      status.classList.add("off");
      return;
    }
    const data = await answer.json();
    skewMs = Date.parse(data.now) - Date.now();
    showQueues(data.queues);
    showJobs(data.jobs);
    showWorkers(data.workers);
    status.textContent = "live";
    status.classList.remove("off");
    status.title = `updated ${new Date(Date.now() + skewMs).toISOString()}`;
  } catch (error) {
    status.textContent = "not live"; // the server is unreachable: try again at the next tick
    status.classList.add("off");
  }
  refreshTimes();
}

const liveUrl = document.body.dataset.live;
if (liveUrl) {
  const status = document.getElementById("live-status") || document.createElement("span");
  let timer = window.setInterval(() => poll(liveUrl, status), POLL_MS);
  document.addEventListener("visibilitychange", () => {
    window.clearInterval(timer);
    if (!document.hidden) {
      poll(liveUrl, status); // at once on coming back, then every 2 s
      timer = window.setInterval(() => poll(liveUrl, status), POLL_MS);
    }
  });
}
