// The storyboard studio: plain JavaScript, no build step. The token lives in localStorage
// and goes to the API as a bearer header only; it never appears in a URL the server sees.
"use strict";

(function () {
  const TOKEN_KEY = "storyboard-token";
  // How long the board waits for a project to finish: the server's STREAM_MAX_S. The page's
  // own timer runs a few seconds longer, so the server's `timeout` event (with its message)
  // normally ends the wait; the timer is for a stream that went silent.
  const LIMIT_S = Number(document.body.dataset.streamMaxS || "300");
  const LIMIT_MS = LIMIT_S * 1000 + 5000;
  const LIMIT_TEXT = LIMIT_S >= 60 && LIMIT_S % 60 === 0 ? LIMIT_S / 60 + " minutes" : LIMIT_S + " s";
  const $ = (id) => document.getElementById(id);
  const views = ["sign-in", "projects", "create", "board"];
  let current = null; // the project on the board: {id, title, aspect_ratio, ...}
  let live = null; // the open stream: {controller, timer}
  let lastStatus = null; // the board's last status answer
  // Shots regenerating since a click: shot number -> the new job's id (null until the API answers).
  const regenerating = new Map();

  // -- the token ----------------------------------------------------------------------------

  function takeFragmentToken() {
    const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (match) {
      localStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      // Out of the address bar and the history: the fragment has done its work.
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
  }
  const token = () => localStorage.getItem(TOKEN_KEY);

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token() };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (response.status === 401) { signOut("Your token was refused: sign in again."); }
    return { ok: response.ok, status: response.status, data };
  }

  function errorMessage(answer) {
    const error = answer.data && answer.data.error;
    return error ? error.message : "the server answered " + answer.status;
  }

  // -- views --------------------------------------------------------------------------------

  function show(view) {
    for (const name of views) { $(name).hidden = name !== view; }
    $("who").hidden = view === "sign-in";
    if (view !== "board") { stopStream(); }
  }

  function signOut(message) {
    localStorage.removeItem(TOKEN_KEY);
    show("sign-in");
    $("sign-in-error").textContent = message || "";
  }

  async function signIn(value) {
    localStorage.setItem(TOKEN_KEY, value.trim());
    const answer = await api("GET", "/api/projects");
    if (!answer.ok) {
      if (answer.status !== 401) { $("sign-in-error").textContent = errorMessage(answer); }
      return;
    }
    $("who-token").textContent = "Signed in (" + value.trim().slice(0, 8) + "…)";
    renderProjects(answer.data.projects);
  }

  async function loadProjects() {
    const answer = await api("GET", "/api/projects");
    if (answer.ok) { renderProjects(answer.data.projects); }
  }

  function renderProjects(projects) {
    show("projects");
    const list = $("project-list");
    list.replaceChildren();
    $("projects-empty").hidden = projects.length > 0;
    for (const project of projects) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "project";
      const title = document.createElement("strong");
      title.textContent = project.title;
      const meta = document.createElement("span");
      meta.className = "muted";
      meta.textContent = project.aspect_ratio + " · " + project.status;
      button.append(title, meta);
      button.addEventListener("click", () => openBoard(project.id));
      item.append(button);
      list.append(item);
    }
  }

  // -- the project form ---------------------------------------------------------------------

  let rowsAdded = 0;

  function addRow(kind, values) {
    const row = $(kind + "-row").content.firstElementChild.cloneNode(true);
    // Each label names its field (screen readers, a click on the label focuses the field):
    // the template cannot carry ids, since every row is a copy of it.
    rowsAdded += 1;
    for (const field of row.querySelectorAll(".field")) {
      const input = field.querySelector("[data-part]");
      input.id = kind + "-" + rowsAdded + "-" + input.dataset.part;
      field.querySelector("label").htmlFor = input.id;
    }
    for (const [part, value] of Object.entries(values || {})) {
      row.querySelector('[data-part="' + part + '"]').value = value;
    }
    row.querySelector("[data-remove]").addEventListener("click", () => row.remove());
    $(kind === "character" ? "characters" : "shots").append(row);
    return row;
  }

  function newProject() {
    const form = $("project-form");
    form.reset();
    clearErrors(form);
    $("characters").replaceChildren();
    $("shots").replaceChildren();
    addRow("character");
    addRow("shot", { shot_number: "1", duration_seconds: "3" });
    show("create");
    $("title").focus();
  }

  function readForm() {
    const rows = (id) => Array.from($(id).children);
    const part = (row, name) => row.querySelector('[data-part="' + name + '"]').value.trim();
    const number = (text) => (text !== "" && !Number.isNaN(Number(text)) ? Number(text) : text);
    const characters = rows("characters")
      .filter((row) => part(row, "name") || part(row, "description") || part(row, "reference_image_url"))
      .map((row) => {
        const character = { name: part(row, "name"), description: part(row, "description") };
        if (part(row, "reference_image_url")) {
          character.reference_image_url = part(row, "reference_image_url");
        }
        return character;
      });
    const shots = rows("shots").map((row) => ({
      shot_number: number(part(row, "shot_number")),
      description: part(row, "description"),
      duration_seconds: number(part(row, "duration_seconds")),
      characters: part(row, "characters").split(",").map((s) => s.trim()).filter(Boolean),
    }));
    return {
      body: {
        title: $("title").value.trim(),
        style: $("style").value.trim(),
        aspect_ratio: $("aspect_ratio").value,
        characters,
        shots,
      },
      // Which row each list index came from: empty character rows are left out.
      characterRows: rows("characters").filter((row) =>
        part(row, "name") || part(row, "description") || part(row, "reference_image_url")),
      shotRows: rows("shots"),
    };
  }

  function clearErrors(form) {
    for (const el of form.querySelectorAll(".error")) { el.textContent = ""; }
    for (const el of form.querySelectorAll(".invalid")) { el.classList.remove("invalid"); }
  }

  // A validation error goes beside its field: `loc` is ["shots", 0, "description"] and the
  // like; what names no field shows above the form.
  function showErrors(form, details, message, sent) {
    let placed = 0;
    for (const detail of details) {
      const loc = (detail.loc || []).filter((p) => p !== "body");
      let target = null;
      let input = null;
      if ((loc[0] === "characters" || loc[0] === "shots") && typeof loc[1] === "number") {
        const row = (loc[0] === "characters" ? sent.characterRows : sent.shotRows)[loc[1]];
        if (row) {
          const sub = typeof loc[2] === "string" ? loc[2] : "";
          target = row.querySelector('[data-sub="' + sub + '"]');
          input = sub ? row.querySelector('[data-part="' + sub + '"]') : null;
        }
      } else if (loc.length >= 1) {
        target = form.querySelector('[data-loc="' + loc[0] + '"]');
        input = form.querySelector('[data-field="' + loc[0] + '"]');
      }
      // The API words each message to stand beside its field; one that found no field goes
      // above the form with the place it names.
      const text = target ? String(detail.message) : placeText(loc) + String(detail.message);
      target = target || form.querySelector('[data-loc=""]');
      target.textContent = (target.textContent ? target.textContent + " " : "") + text;
      if (input) { input.classList.add("invalid"); input.setAttribute("aria-invalid", "true"); }
      placed += 1;
    }
    const top = form.querySelector('[data-loc=""]');
    if (!placed) {
      top.textContent = message;
    } else if (!top.textContent) {
      top.textContent = placed === 1 ? "One problem to fix: see the marked field below."
        : placed + " problems to fix: see the marked fields below.";
    }
    const first = form.querySelector(".invalid");
    if (first) { first.focus(); }
  }

  // "Shot row 2, duration: " for ["shots", 1, "duration_seconds"]; "" for the body itself.
  function placeText(loc) {
    const names = { shots: "Shot row", characters: "Character row", duration_seconds: "duration",
      shot_number: "shot number", reference_image_url: "reference image URL", aspect_ratio: "aspect ratio" };
    const words = [];
    for (let i = 0; i < loc.length; i += 1) {
      if (typeof loc[i + 1] === "number") { words.push((names[loc[i]] || loc[i]) + " " + (loc[i + 1] + 1)); i += 1; }
      else { words.push(names[loc[i]] || String(loc[i])); }
    }
    return words.length ? words.join(", ") + ": " : "";
  }

  async function createProject(event) {
    event.preventDefault();
    const form = $("project-form");
    clearErrors(form);
    const sent = readForm();
    $("create-submit").disabled = true;
    try {
      const answer = await api("POST", "/api/projects", sent.body);
      if (answer.ok) { openBoard(answer.data.id); return; }
      const error = (answer.data && answer.data.error) || {};
      showErrors(form, error.details || [], errorMessage(answer), sent);
    } finally {
      $("create-submit").disabled = false;
    }
  }

  // -- the board ----------------------------------------------------------------------------

  async function openBoard(projectId) {
    const answer = await api("GET", "/api/projects/" + projectId);
    if (!answer.ok) { $("board-error").textContent = errorMessage(answer); return; }
    current = answer.data;
    regenerating.clear();
    setMessage("");
    show("board");
    $("board-title").textContent = current.title;
    $("board-meta").textContent =
      [current.style, current.aspect_ratio, current.shots.length + " shot(s)"].filter(Boolean).join(" · ");
    $("board-error").textContent = "";
    $("stream-notice").hidden = true;
    const cards = $("cards");
    cards.replaceChildren();
    cards.dataset.aspect = current.aspect_ratio;
    for (const shot of current.shots) {
      const card = $("card").content.firstElementChild.cloneNode(true);
      card.dataset.shot = shot.shot_number;
      card.querySelector(".frame").style.aspectRatio = current.aspect_ratio.replace(":", " / ");
      card.querySelector(".shot-label").textContent = "Shot " + shot.shot_number;
      card.querySelector(".placeholder").textContent = shot.description;
      card.querySelector(".regenerate").addEventListener("click", () => regenerate(shot.shot_number));
      cards.append(card);
    }
    const status = await api("GET", "/api/projects/" + projectId + "/storyboards/status");
    if (status.ok) {
      render(status.data);
      if (!status.data.done) { watch(); }
    }
  }

  // A time of day in the page's zone, 12:03:04; "" for none.
  function clockTime(iso) {
    return iso ? new Date(iso).toTimeString().slice(0, 8) : "";
  }

  // "in 42 s" / "in 3 min" until an ISO time; "" for none or past.
  function inText(iso) {
    if (!iso) { return ""; }
    const seconds = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
    if (seconds <= 0) { return ""; }
    if (seconds < 90) { return "in " + seconds + " s"; }
    const minutes = Math.round(seconds / 60);
    return minutes < 90 ? "in " + minutes + " min"
      : "in " + Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  // Why a shot waits, in plain words (the status answer's wait_reason and next_attempt_at).
  function waitText(board) {
    const at = clockTime(board.next_attempt_at);
    const when = at ? [inText(board.next_attempt_at), "at " + at].filter(Boolean).join(", ") : "";
    const until = (text, then) => (when ? text + "; " + then + " " + when : text);
    switch (board.wait_reason) {
      case "concurrency": return "waiting for a free slot: this project's shots take turns";
      case "rate_limit": return until("rate limited by the image service", "next try");
      case "upstream_down": return until("the image service is down", "next try");
      case "over_budget": return until("over today's budget", "resumes");
      case "retry_scheduled": return until("the last attempt failed", "retry");
      case "queue_paused": return "queue paused by an operator";
      case "queued": return until("queued for a worker", "starts");
      default: return "";
    }
  }

  // The board's Generate button says what it will do for the project's state.
  function generateAction(status) {
    if (status.generating > 0) { return { label: "Generating…", disabled: true }; }
    if (status.pending > 0) { return { label: "Generate" }; } // new shots (and failed ones) first
    if (status.failed > 0) { return { label: "Retry failed shots" }; }
    // Every shot has its picture: what a user asks for here is a new set of pictures.
    if (status.succeeded > 0) { return { label: "Regenerate all", force: true }; }
    return { label: "Generate" };
  }

  // The project's outlook: time left and credits spent ("" while there is nothing to say).
  function outlookText(status) {
    const parts = [];
    if (!status.done && status.eta_s !== null && status.eta_s !== undefined) {
      parts.push(status.eta_s < 90 ? "about " + status.eta_s + " s left"
        : "about " + Math.round(status.eta_s / 60) + " min left");
    } else if (!status.done && status.generating) {
      parts.push("time left unknown");
    }
    if (status.spent) {
      const spent = Number(status.spent.toFixed(4));
      parts.push(spent + (spent === 1 ? " credit spent" : " credits spent"));
    }
    return parts.join(" · ");
  }

  function render(status) {
    lastStatus = status;
    // A shot whose call is not in flight waits (and says why): it is not counted as generating.
    const waiting = status.storyboards.filter((b) => b.status === "generating" && b.wait_reason).length;
    $("board-progress-fill").style.width = status.percent + "%";
    $("board-progress").setAttribute("aria-valuenow", String(status.percent));
    // Only the counts there are: "generating · 40% · 2 done, 1 generating, 2 waiting".
    const counts = [[status.succeeded, "done"], [status.generating - waiting, "generating"],
      [waiting, "waiting"], [status.failed, "failed"], [status.pending, "not started"]]
      .filter(([n]) => n > 0).map(([n, what]) => n + " " + what);
    $("board-summary").textContent =
      [status.status, status.percent + "%", counts.join(", ")].filter(Boolean).join(" · ");
    // "Generating 3 shot(s)." has said its piece once they are done.
    if (status.done && $("board-message").dataset.until === "done") { setMessage(""); }
    $("board-outlook").textContent = outlookText(status);
    const action = generateAction(status);
    $("generate").textContent = action.label;
    $("generate").disabled = Boolean(action.disabled);
    for (const board of status.storyboards) { renderCard(board); }
  }

  function renderCard(board) {
    const card = $("cards").querySelector('[data-shot="' + board.shot_number + '"]');
    if (!card) { return; }
    // A regenerate is under way from the click until its own job (not the old one) finishes.
    // (Until the API answers with that job's id, the status still shows the old job's end.)
    const asked = regenerating.get(board.shot_number);
    if (asked && board.job_id === asked && board.status !== "generating") {
      regenerating.delete(board.shot_number);
    }
    const again = regenerating.has(board.shot_number);
    const status = again ? "generating" : board.status;
    card.dataset.status = status;
    card.dataset.regenerating = again ? "true" : "";
    const waiting = status === "generating" && Boolean(board.wait_reason);
    card.dataset.wait = waiting ? board.wait_reason : "";
    const badge = card.querySelector(".badge");
    badge.textContent = waiting ? "waiting" : again ? "regenerating" : status;
    badge.className = "badge " + (waiting ? "waiting" : status);
    card.querySelector(".wait").textContent = waiting ? waitText(board) : "";
    const image = card.querySelector("img");
    if (board.image_url) {
      if (image.getAttribute("src") !== board.image_url) { image.src = board.image_url; }
      image.alt = "Shot " + board.shot_number;
      image.hidden = false;
    } else {
      image.hidden = true;
      image.removeAttribute("src");
    }
    card.querySelector(".placeholder").hidden = Boolean(board.image_url);
    // Over the old picture while the new one is made: the card shows that it is.
    card.querySelector(".frame-note").textContent =
      board.image_url && status === "generating" ? (waiting ? "Waiting…" : "Regenerating…") : "";
    card.querySelector(".attempt").textContent = board.attempts ? "attempt " + board.attempts : "";
    card.querySelector(".card-error").textContent = again ? "" : board.error || "";
    const button = card.querySelector(".regenerate");
    button.disabled = status === "generating";
    button.textContent = again ? "Regenerating…" : "Regenerate";
  }

  function notice(message, canLookAgain) {
    $("stream-notice").hidden = !message;
    $("stream-message").textContent = message || "";
    $("look-again").hidden = !canLookAgain;
    $("stream-notice").classList.toggle("stopped", Boolean(canLookAgain));
  }

  function stopStream() {
    if (live) {
      clearTimeout(live.timer);
      live.controller.abort();
      live = null;
    }
  }

  // The event stream, read with fetch: EventSource cannot send the bearer header.
  async function watch() {
    stopStream();
    const project = current;
    const controller = new AbortController();
    const mine = { controller, timer: null, stopped: null };
    live = mine;
    mine.timer = setTimeout(() => {
      mine.stopped = "Stopped waiting after " + LIMIT_TEXT + "; the work may still be going on.";
      controller.abort();
    }, LIMIT_MS);
    notice("Live: updates appear as each shot changes.", false);
    let ended = null; // what the stream ended with
    let away = false; // the server said the database is unavailable
    try {
      const response = await fetch("/api/projects/" + project.id + "/storyboards/events", {
        headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (!response.ok) {
        let data = null;
        try { data = await response.json(); } catch (e) { data = null; }
        ended = { event: "failure", data: (data && data.error) || { message: "HTTP " + response.status } };
      } else {
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) { break; }
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const event = parseEvent(block);
            if (!event) { continue; }
            if (event.event === "status" || event.event === "done") { render(event.data); }
            // After `unavailable`, the server sends the status again once the database is back.
            if (event.event === "status" && away) { away = false; notice("Live: updates appear as each shot changes.", false); }
            if (event.event === "unavailable") { away = true; notice("The database is unavailable; waiting for it to come back.", false); }
            if (["done", "timeout", "failure", "shutdown"].includes(event.event)) { ended = event; }
          }
        }
      }
    } catch (error) {
      if (live !== mine && !mine.stopped) { return; } // replaced by another stream, or left
      ended = ended || { event: "failure", data: { message: mine.stopped ? "" : String(error.message || error) } };
    } finally {
      clearTimeout(mine.timer);
      if (live === mine) { live = null; }
    }
    if (current !== project || (live && live !== mine)) { return; }
    if (mine.stopped) {
      notice(mine.stopped, true);
    } else if (ended && ended.event === "done") {
      notice("", false);
    } else if (ended && ended.event === "timeout") {
      notice("Stopped waiting: " + ended.data.message, true);
    } else {
      const why = ended && ended.data && ended.data.message ? ": " + ended.data.message : "";
      notice("The live connection ended before the project was done" + why + ".", true);
    }
  }

  function parseEvent(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) { continue; } // a heartbeat comment
      if (line.startsWith("event:")) { name = line.slice(6).trim(); }
      if (line.startsWith("data:")) { data.push(line.slice(5).trimStart()); }
    }
    if (!data.length) { return null; }
    return { event: name, data: JSON.parse(data.join("\n")) };
  }

  async function lookAgain() {
    if (!current) { return; }
    const status = await api("GET", "/api/projects/" + current.id + "/storyboards/status");
    if (!status.ok) { $("board-error").textContent = errorMessage(status); return; }
    render(status.data);
    if (status.data.done) { notice("", false); } else { watch(); }
  }

  // A line under the board's head; `until` "done" clears it when the project is done.
  function setMessage(text, until) {
    $("board-message").textContent = text;
    $("board-message").dataset.until = until || "";
  }

  // Generate what the button says: new shots and failed ones, or (on a completed project)
  // every shot again; a click that finds nothing to do says so instead of doing nothing.
  async function generate() {
    $("board-error").textContent = "";
    setMessage("");
    const action = lastStatus ? generateAction(lastStatus) : { label: "Generate" };
    const body = action.force ? { force: true } : {};
    $("generate").disabled = true;
    const answer = await api("POST", "/api/projects/" + current.id + "/storyboards/generate", body);
    if (!answer.ok) {
      $("board-error").textContent = errorMessage(answer);
      $("generate").disabled = false;
      return;
    }
    const queued = answer.data.queued;
    if (action.force) {
      // job_ids come in shot-number order, as current.shots do.
      current.shots.forEach((shot, i) => regenerating.set(shot.shot_number, answer.data.job_ids[i]));
      if (lastStatus) { render(lastStatus); }
    }
    if (queued === 0) {
      setMessage("Nothing to generate: every shot already has its picture or is on its way.");
    } else {
      setMessage((action.force ? "Regenerating all " : "Generating ") + queued + " shot(s).", "done");
    }
    watch();
  }

  async function regenerate(shotNumber) {
    $("board-error").textContent = "";
    setMessage("");
    regenerating.set(shotNumber, null);
    if (lastStatus) { render(lastStatus); } // the card says so at once, before the server does
    const answer = await api("POST", "/api/projects/" + current.id + "/storyboards/" + shotNumber + "/regenerate");
    if (!answer.ok) {
      regenerating.delete(shotNumber);
      if (lastStatus) { render(lastStatus); }
      $("board-error").textContent = errorMessage(answer);
      return;
    }
    regenerating.set(shotNumber, answer.data.job_id);
    watch();
  }

  // -- wiring -------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      $("sign-in-error").textContent = "";
      signIn($("token").value);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("new-project").addEventListener("click", newProject);
    $("add-character").addEventListener("click", () => addRow("character"));
    $("add-shot").addEventListener("click", () => {
      const numbers = Array.from($("shots").children).map((row) =>
        Number(row.querySelector('[data-part="shot_number"]').value) || 0);
      addRow("shot", { shot_number: String(Math.max(0, ...numbers) + 1), duration_seconds: "3" });
    });
    $("project-form").addEventListener("submit", createProject);
    for (const back of document.querySelectorAll("[data-back]")) { back.addEventListener("click", loadProjects); }
    $("generate").addEventListener("click", generate);
    $("look-again").addEventListener("click", lookAgain);
    takeFragmentToken();
    if (token()) { signIn(token()); } else { show("sign-in"); }
  });
})();
