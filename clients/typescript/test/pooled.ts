// enqueue through PgBouncer in transaction mode (what Supabase's port 6543 is): run by
// tests/pooler/test_typescript_enqueue.py, with POOLED_DATABASE_URL through the pooler and
// DATABASE_URL direct (for LISTEN, which needs a session). Not part of `npm test`, which has
// no pooler.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import pg from "pg";
import { cancel, enqueue, jobStatus, retry, waitFinished } from "../src/index.ts";
import { databaseUrl, required } from "./env.ts";

const pooled = new pg.Pool({ connectionString: required("POOLED_DATABASE_URL"), max: 4 });
const listener = new pg.Client({ connectionString: databaseUrl() });

before(async () => {
  await listener.connect();
});
after(async () => {
  await listener.end();
  await pooled.end();
});

test("a pooled transaction enqueues, and its commit wakes the worker", async () => {
  const client = await pooled.connect();
  let ids: number[];
  try {
    await client.query("BEGIN");
    ids = [
      await enqueue(client, "app.shot_brief", { shot_number: 1, description: "through the pooler" }, {
        queue: "app",
        idempotencyKey: "pooled:1",
        notifyFinished: true,
      }),
      await enqueue(client, "app.shot_brief", { shot_number: 2, description: "second" }, { queue: "app", notifyFinished: true }),
    ];
    assert.equal(await enqueue(client, "app.shot_brief", {}, { queue: "app", idempotencyKey: "pooled:1" }), ids[0]);
    await client.query("COMMIT");
  } finally {
    client.release();
  }
  // The worker polls every 30 s: done within 10 s means the commit's NOTIFY woke it.
  const done = await waitFinished(listener, ids, { timeoutMs: 10_000 });
  assert.deepEqual([...done.values()].map((job) => job.state), ["succeeded", "succeeded"]);
  assert.equal((done.get(ids[0]!)?.result as { brief: string }).brief, "through the pooler");
});

test("a rolled-back pooled transaction leaves no job; cancel and retry go through the pooler", async () => {
  const client = await pooled.connect();
  try {
    await client.query("BEGIN");
    await enqueue(client, "app.shot_brief", {}, { queue: "app", idempotencyKey: "pooled:rolled-back" });
    await client.query("ROLLBACK");
  } finally {
    client.release();
  }
  const { rows } = await pooled.query("SELECT count(*)::int AS n FROM pgqueue.jobs WHERE idempotency_key = $1", [
    "pooled:rolled-back",
  ]);
  assert.equal(rows[0].n, 0);

  const id = await enqueue(pooled, "app.shot_brief", {}, { queue: "app", delaySeconds: 3600 });
  assert.equal(await cancel(pooled, id), true);
  assert.equal(await retry(pooled, id), true);
  assert.equal((await jobStatus(pooled, [id])).get(id)?.state, "queued");
});
