// The typed client, the events stream and the example route against a running API, a
// storyboard worker and the example's Python worker.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import pg from "pg";
import { APP_TABLES, type Accepted, followGeneration, generateRoute } from "../examples/generate-route.ts";
import { createApiClient, followEvents, isEvent, type Schemas, waitFinished } from "../src/index.ts";
import { apiToken, apiUrl, databaseUrl } from "./env.ts";

const api = createApiClient({ baseUrl: apiUrl(), token: apiToken() });
const pool = new pg.Pool({ connectionString: databaseUrl(), max: 4 });
const listener = new pg.Client({ connectionString: databaseUrl() });

function projectBody(title: string, shots: number): Schemas["ProjectIn"] {
  return {
    title,
    style: "ink",
    aspect_ratio: "1:1",
    characters: [{ name: "Bo", description: "a nervous informant" }],
    shots: Array.from({ length: shots }, (_, i) => ({
      shot_number: i + 1,
      description: `shot ${i + 1}: Bo waits under a streetlight in the rain`,
      duration_seconds: 2,
      characters: ["Bo"],
    })),
  };
}

before(async () => {
  await listener.connect();
  await pool.query(APP_TABLES);
});
after(async () => {
  await listener.end();
  await pool.end();
});

test("the typed client creates, reads and generates; errors are the Error schema", async () => {
  const created = await api.POST("/api/projects", { body: projectBody("typed", 2) });
  assert.equal(created.response.status, 201);
  assert.ok(created.data);
  const project = await api.GET("/api/projects/{project_id}", { params: { path: { project_id: created.data.id } } });
  assert.equal(project.data?.title, "typed");
  assert.equal(project.data?.shots.length, 2);

  const missing = await api.GET("/api/projects/{project_id}", {
    params: { path: { project_id: "00000000-0000-4000-8000-000000000000" } },
  });
  assert.equal(missing.response.status, 404);
  assert.equal(missing.error?.error.code, "not_found");

  const invalid = await api.POST("/api/projects", { body: { ...projectBody("bad", 1), aspect_ratio: "4:3" as never } });
  assert.equal(invalid.response.status, 422);
  assert.ok((invalid.error?.error.details ?? []).length > 0);

  const anonymous = createApiClient({ baseUrl: apiUrl() });
  const refused = await anonymous.GET("/api/projects");
  assert.equal(refused.response.status, 401);
  assert.equal(refused.error?.error.code, "unauthorized");
});

test("the events stream follows a generation to done", async () => {
  const created = await api.POST("/api/projects", { body: projectBody("streamed", 3) });
  assert.ok(created.data);
  const projectId = created.data.id;
  const generated = await api.POST("/api/projects/{project_id}/storyboards/generate", {
    params: { path: { project_id: projectId } },
  });
  assert.equal(generated.response.status, 202);
  assert.equal(generated.data?.job_ids.length, 3);
  const names: string[] = [];
  let final: Schemas["Status"] | undefined;
  for await (const message of followEvents(api, projectId, { signal: AbortSignal.timeout(60_000) })) {
    names.push(message.event);
    if (isEvent(message, "done")) final = message.data;
  }
  assert.equal(names[0], "status");
  assert.equal(names.at(-1), "done");
  assert.equal(final?.status, "completed");
  assert.equal(final?.succeeded, 3);
  for (const storyboard of final?.storyboards ?? []) {
    assert.ok(storyboard.image_url, `shot ${storyboard.shot_number} has an image`);
    const image = await fetch(new URL(storyboard.image_url, apiUrl()));
    assert.equal(image.status, 200);
    assert.equal(image.headers.get("content-type"), "image/png");
  }
});

test("the route handler commits its rows and the shots' jobs together, and follows the images", async () => {
  const POST = generateRoute({ pool, api });
  const body = projectBody("routed", 2);
  const response = await POST(new Request("http://app.local/api/storyboards/generate", { method: "POST", body: JSON.stringify(body) }));
  assert.equal(response.status, 202);
  const accepted = (await response.json()) as Accepted;
  assert.equal(accepted.brief_job_ids.length, 2);
  assert.equal(accepted.storyboard_job_ids.length, 2);

  const { rows } = await pool.query(
    `SELECT s.shot_number, s.brief_job_id, j.kind, j.queue
     FROM app_shots AS s JOIN pgqueue.jobs AS j ON j.id = s.brief_job_id
     WHERE s.request_id = $1 ORDER BY s.shot_number`,
    [accepted.request_id],
  );
  assert.deepEqual(
    rows.map((r) => [r.shot_number, Number(r.brief_job_id), r.kind, r.queue]),
    [
      [1, accepted.brief_job_ids[0], "app.shot_brief", "app"],
      [2, accepted.brief_job_ids[1], "app.shot_brief", "app"],
    ],
  );

  const briefs = await waitFinished(listener, accepted.brief_job_ids, { timeoutMs: 30_000 });
  assert.deepEqual(
    [...briefs.values()].map((b) => [b.state, (b.result as { shot_number: number }).shot_number]).sort(),
    [
      ["succeeded", 1],
      ["succeeded", 2],
    ],
  );
  const seen: number[] = [];
  const status = await followGeneration(api, accepted.project_id, (s) => seen.push(s.percent));
  assert.equal(status.status, "completed");
  assert.equal(status.succeeded, 2);
  assert.ok(seen.length >= 1);
});

test("following opens a new stream after timeout, and gives up after its reopens", async () => {
  // Never generated: the stream sends its status, then \`timeout\` after STREAM_MAX_S (4 s here).
  const created = await api.POST("/api/projects", { body: projectBody("never generated", 1) });
  assert.ok(created.data);
  const seen: string[] = [];
  await assert.rejects(
    followGeneration(api, created.data.id, (status) => seen.push(status.status), { reopens: 1, pauseMs: 10 }),
    /ended without done 2 times \(last event: timeout\)/,
  );
  assert.deepEqual(seen, ["pending", "pending"], "one status per stream");
});

test("the route handler answers the API's error and enqueues nothing for a refused project", async () => {
  const before = await pool.query("SELECT count(*)::int AS n FROM pgqueue.jobs WHERE kind = 'app.shot_brief'");
  const POST = generateRoute({ pool, api });
  const response = await POST(
    new Request("http://app.local/api/storyboards/generate", { method: "POST", body: JSON.stringify({ title: "", shots: [] }) }),
  );
  assert.equal(response.status, 422);
  const answer = (await response.json()) as Schemas["Error"];
  assert.equal(answer.error.code, "validation_error");
  const now = await pool.query("SELECT count(*)::int AS n FROM pgqueue.jobs WHERE kind = 'app.shot_brief'");
  assert.equal(now.rows[0].n, before.rows[0].n);
});

test("the README's example runs as a script", async () => {
  const script = fileURLToPath(new URL("../examples/generate-route.ts", import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, [script], { timeout: 90_000 });
  assert.match(stdout, /POST answered 202/);
  assert.match(stdout, /brief job \d+ succeeded/);
  assert.match(stdout, /done: completed, 2\/2 images/);
});
