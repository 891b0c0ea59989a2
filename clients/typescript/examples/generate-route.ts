// The original app's route handler, `app/api/storyboards/generate/route.ts` of a Next.js app,
// written with this package. In a Next.js app:
//
//   // app/api/storyboards/generate/route.ts
//   export const POST = generateRoute({ pool, api });   // pool: pg.Pool, api: createApiClient(...)
//
// What POST does with a project's body (the API's `ProjectIn`):
//   1. creates the project through the typed API client (`create_project`);
//   2. in ONE transaction: inserts the app's own rows (a request and its shots) and enqueues,
//      with `pgqueue.enqueue`, one `app.shot_brief` job per shot, which a Python worker runs
//      (examples/shot_briefs.py). A rollback leaves neither rows nor jobs; the commit wakes
//      the worker at once;
//   3. after the commit, starts the images' generation through the API (`generate_storyboards`):
//      nothing is generated for a request the app did not record.
// Then `followGeneration` follows the images through the API's live events stream, and
// `waitFinished` hears the briefs end.
//
// Run it against a running API and worker (see README.md): `node examples/generate-route.ts`
// with DATABASE_URL, STORYBOARD_API_URL and STORYBOARD_API_TOKEN set.
import { pathToFileURL } from "node:url";
import pg from "pg";
import { type ApiClient, createApiClient, enqueue, followEvents, isEvent, type JobId, type Schemas, waitFinished } from "../src/index.ts";

export const BRIEF_KIND = "app.shot_brief";
export const BRIEF_QUEUE = "app";

/** The app's own tables (in its database, which holds pgqueue's schema too). */
export const APP_TABLES = `
CREATE TABLE IF NOT EXISTS app_storyboard_requests (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id uuid NOT NULL,
    title text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS app_shots (
    request_id bigint NOT NULL REFERENCES app_storyboard_requests (id),
    shot_number integer NOT NULL,
    description text NOT NULL,
    brief_job_id bigint NOT NULL,
    PRIMARY KEY (request_id, shot_number)
);`;

export interface RouteDeps {
  pool: pg.Pool;
  api: ApiClient;
}

/** What POST answers with 202. */
export interface Accepted {
  request_id: number;
  project_id: string;
  brief_job_ids: JobId[];
  storyboard_job_ids: number[];
}

/** The route handler: `POST(request)` as Next.js calls it. */
export function generateRoute({ pool, api }: RouteDeps): (request: Request) => Promise<Response> {
  return async function POST(request: Request): Promise<Response> {
    const body = (await request.json()) as Schemas["ProjectIn"];
    const created = await api.POST("/api/projects", { body });
    if (created.error !== undefined) return Response.json(created.error, { status: created.response.status });
    const project = created.data;

    const client = await pool.connect();
    let requestId: number;
    const briefJobIds: JobId[] = [];
    try {
      await client.query("BEGIN");
      const { rows } = await client.query<{ id: string }>(
        "INSERT INTO app_storyboard_requests (project_id, title) VALUES ($1, $2) RETURNING id",
        [project.id, body.title],
      );
      requestId = Number(rows[0]?.id);
      for (const shot of body.shots) {
        const jobId = await enqueue(
          client,
          BRIEF_KIND,
          { request_id: requestId, shot_number: shot.shot_number, description: shot.description },
          { queue: BRIEF_QUEUE, idempotencyKey: `shot-brief:${requestId}:${shot.shot_number}`, notifyFinished: true },
        );
        await client.query(
          "INSERT INTO app_shots (request_id, shot_number, description, brief_job_id) VALUES ($1, $2, $3, $4)",
          [requestId, shot.shot_number, shot.description, jobId],
        );
        briefJobIds.push(jobId);
      }
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK");
      throw error;
    } finally {
      client.release();
    }

    const generated = await api.POST("/api/projects/{project_id}/storyboards/generate", {
      params: { path: { project_id: project.id } },
      body: {},
    });
    if (generated.error !== undefined) return Response.json(generated.error, { status: generated.response.status });
    const accepted: Accepted = {
      request_id: requestId,
      project_id: project.id,
      brief_job_ids: briefJobIds,
      storyboard_job_ids: generated.data.job_ids,
    };
    return Response.json(accepted, { status: 202 });
  };
}

/**
 * Follows a project's images through the API's events stream until it is done; the final
 * status. `onStatus` sees every status on the way. A stream that ends before `done` (after
 * `timeout`, STREAM_MAX_S; or `shutdown`, the API restarting) is opened again: the work goes
 * on meanwhile. Throws on `failure`, or when `reopens` new streams were not enough.
 */
export async function followGeneration(
  api: ApiClient,
  projectId: string,
  onStatus: (status: Schemas["Status"]) => void = () => undefined,
  { reopens = 3, pauseMs = 1_000 }: { reopens?: number; pauseMs?: number } = {},
): Promise<Schemas["Status"]> {
  let last = "none";
  for (let opened = 0; opened <= reopens; opened++) {
    if (opened > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    for await (const message of followEvents(api, projectId)) {
      last = message.event;
      if (isEvent(message, "status")) onStatus(message.data);
      if (isEvent(message, "done")) return message.data;
      if (isEvent(message, "failure")) throw new Error(`the events stream of ${projectId} failed: ${message.data.message}`);
    }
  }
  throw new Error(`the events stream of ${projectId} ended without done ${reopens + 1} times (last event: ${last})`);
}

async function main(): Promise<void> {
  const databaseUrl = required("DATABASE_URL");
  const api = createApiClient({ baseUrl: required("STORYBOARD_API_URL"), token: required("STORYBOARD_API_TOKEN") });
  const pool = new pg.Pool({ connectionString: databaseUrl });
  const listener = new pg.Client({ connectionString: databaseUrl });
  try {
    await pool.query(APP_TABLES);
    await listener.connect();
    const POST = generateRoute({ pool, api });
    const project: Schemas["ProjectIn"] = {
      title: "Night shift",
      style: "noir",
      aspect_ratio: "16:9",
      characters: [],
      shots: [
        { shot_number: 1, description: "Rain runs down the precinct window at three in the morning", duration_seconds: 3, characters: [] },
        { shot_number: 2, description: "A detective reads an old file under a desk lamp", duration_seconds: 4, characters: [] },
      ],
    };
    const request = new Request("http://app.local/api/storyboards/generate", { method: "POST", body: JSON.stringify(project) });
    const response = await POST(request);
    const accepted = (await response.json()) as Accepted;
    console.log(`POST answered ${response.status}: request ${accepted.request_id}, project ${accepted.project_id}`);
    const briefs = await waitFinished(listener, accepted.brief_job_ids, { timeoutMs: 60_000 });
    for (const brief of briefs.values()) console.log(`brief job ${brief.id} ${brief.state}: ${JSON.stringify(brief.result)}`);
    const status = await followGeneration(api, accepted.project_id, (s) => console.log(`images: ${s.percent}% (${s.status})`));
    console.log(`done: ${status.status}, ${status.succeeded}/${status.total} images`);
  } finally {
    await listener.end();
    await pool.end();
  }
}

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
