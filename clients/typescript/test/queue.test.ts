// The enqueue helper against the real database and a real Python worker (queue `app`).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import pg from "pg";
import { cancel, enqueue, jobStatus, retry, waitFinished } from "../src/index.ts";
import { databaseUrl } from "./env.ts";

const pool = new pg.Pool({ connectionString: databaseUrl(), max: 4 });
const listener = new pg.Client({ connectionString: databaseUrl() });

before(async () => {
  await listener.connect();
});
after(async () => {
  await listener.end();
  await pool.end();
});

async function inTransaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const result = await work(client);
    await client.query("COMMIT");
    return result;
  } catch (error) {
    await client.query("ROLLBACK");
    throw error;
  } finally {
    client.release();
  }
}

test("every option lands in its column", async () => {
  const runAt = new Date(Date.now() + 3_600_000);
  const id = await inTransaction((client) =>
    enqueue(client, "app.untouched", { nested: { list: [1, "two", null] } }, {
      queue: "ts-options",
      priority: -5,
      runAt,
      maxAttempts: 7,
      timeoutSeconds: 90,
      idempotencyKey: `options:${runAt.getTime()}`,
      concurrencyKey: "customer:9",
      concurrencyLimit: 2,
      rateLimitKey: "mail-api",
      fairnessKey: "customer:9",
      fairnessWeight: 2,
      cost: 1.5,
      budgetKeys: ["customer:9", "team:1"],
      notifyFinished: true,
    }),
  );
  const { rows } = await pool.query("SELECT * FROM pgqueue.jobs WHERE id = $1", [id]);
  const row = rows[0];
  assert.ok(row, `job ${id} exists`);
  assert.deepEqual(row.payload, { nested: { list: [1, "two", null] } });
  assert.equal(row.queue, "ts-options");
  assert.equal(row.kind, "app.untouched");
  assert.equal(row.state, "queued");
  assert.equal(row.priority, -5);
  assert.equal(row.run_at.getTime(), runAt.getTime());
  assert.equal(row.max_attempts, 7);
  assert.equal(Number(row.timeout_s), 90);
  assert.equal(row.concurrency_key, "customer:9");
  assert.equal(row.concurrency_limit, 2);
  assert.equal(row.rate_limit_key, "mail-api");
  assert.equal(row.fairness_key, "customer:9");
  assert.equal(row.fairness_weight, 2);
  assert.equal(Number(row.cost), 1.5);
  assert.deepEqual(row.budget_keys, ["customer:9", "team:1"]);
  assert.equal(row.notify_finished, true);
});

test("defaults are pgqueue's, and a delay counts from now", async () => {
  const id = await inTransaction((client) => enqueue(client, "app.untouched", undefined, { queue: "ts-defaults", delaySeconds: 600 }));
  const { rows } = await pool.query(
    "SELECT payload, priority, max_attempts, notify_finished, run_at - now() AS lead FROM pgqueue.jobs WHERE id = $1",
    [id],
  );
  assert.deepEqual(rows[0].payload, {});
  assert.equal(rows[0].priority, 0);
  assert.equal(rows[0].max_attempts, 3);
  assert.equal(rows[0].notify_finished, false);
  const lead = rows[0].lead as { minutes?: number; seconds?: number };
  assert.ok((lead.minutes ?? 0) * 60 + (lead.seconds ?? 0) > 590, `run_at is 10 minutes ahead: ${JSON.stringify(lead)}`);
});

test("a rollback takes the job with the caller's rows", async () => {
  const key = `rolled-back:${Date.now()}`;
  await assert.rejects(
    inTransaction(async (client) => {
      await enqueue(client, "app.untouched", {}, { queue: "ts-rollback", idempotencyKey: key });
      throw new Error("the app's own insert failed");
    }),
    /the app's own insert failed/,
  );
  const { rows } = await pool.query("SELECT count(*)::int AS n FROM pgqueue.jobs WHERE idempotency_key = $1", [key]);
  assert.equal(rows[0].n, 0);
});

test("a repeated idempotency key answers the first job's id", async () => {
  const key = `twice:${Date.now()}`;
  const options = { queue: "ts-idempotent", idempotencyKey: key, delaySeconds: 3600 };
  const first = await inTransaction((client) => enqueue(client, "app.untouched", { n: 1 }, options));
  const second = await enqueue(pool, "app.untouched", { n: 2 }, options);
  assert.equal(second, first);
});

test("Postgres's refusals come through: runAt with delaySeconds, a weight without a fairness key", async () => {
  const both = { runAt: new Date(), delaySeconds: 5 } as never;
  await assert.rejects(enqueue(pool, "app.untouched", {}, both), /give run_at or delay, not both/);
  await assert.rejects(enqueue(pool, "app.untouched", {}, { fairnessWeight: 2 }), /jobs_fairness_weight_with_key/);
  await assert.rejects(enqueue(pool, "app.untouched", {}, { unknown: 1 } as never), /unknown option unknown/);
});

test("cancel and retry say whether they changed the job", async () => {
  const id = await enqueue(pool, "app.untouched", {}, { queue: "ts-cancel", delaySeconds: 3600 });
  assert.equal(await cancel(pool, id), true);
  assert.equal(await cancel(pool, id), false);
  assert.equal((await jobStatus(pool, [id])).get(id)?.state, "cancelled");
  assert.equal(await retry(pool, id), true);
  assert.equal(await retry(pool, id), false);
  const status = (await jobStatus(pool, [id])).get(id);
  assert.equal(status?.state, "queued");
  assert.equal(status?.attempts, 0);
  assert.equal(await cancel(pool, id), true);
});

test("waitFinished hears a Python worker finish the jobs", async () => {
  const ids = await inTransaction(async (client) => [
    await enqueue(client, "app.shot_brief", { shot_number: 1, description: "one two three" }, { queue: "app", notifyFinished: true }),
    await enqueue(client, "app.shot_brief", { shot_number: 2, description: "a b c d e f g h i j" }, { queue: "app", notifyFinished: true }),
  ]);
  const done = await waitFinished(listener, ids, { timeoutMs: 30_000 });
  assert.deepEqual([...done.keys()].sort(), [...ids].sort());
  assert.deepEqual(done.get(ids[0]!)?.result, { shot_number: 1, brief: "one two three", words: 3 });
  assert.deepEqual(done.get(ids[1]!)?.result, { shot_number: 2, brief: "a b c d e f g h ...", words: 10 });
  for (const status of done.values()) assert.equal(status.state, "succeeded");
  // Jobs that ended before the call are read at once.
  const again = await waitFinished(listener, ids, { timeoutMs: 1_000 });
  assert.equal(again.get(ids[0]!)?.state, "succeeded");
});

test("waitFinished hears a cancellation, and gives up after its timeout", async () => {
  const id = await enqueue(pool, "app.shot_brief", { shot_number: 1, description: "later" }, { queue: "app", delaySeconds: 3600, notifyFinished: true });
  await assert.rejects(waitFinished(listener, [id], { timeoutMs: 200 }), /still running after 200 ms/);
  const waiting = waitFinished(listener, [id], { timeoutMs: 10_000 });
  // Cancelled from another connection: heard if the wait listens by then, read if not.
  assert.equal(await cancel(pool, id), true);
  assert.equal((await waiting).get(id)?.state, "cancelled");
});

test("waits share one listener", async () => {
  const ids = await Promise.all(
    [1, 2, 3].map((n) => enqueue(pool, "app.shot_brief", { shot_number: n, description: `shot ${n}` }, { queue: "app", delaySeconds: 3600, notifyFinished: true })),
  );
  const waits = ids.map((id) => waitFinished(listener, [id], { timeoutMs: 10_000 }));
  for (const id of ids) assert.equal(await cancel(pool, id), true);
  const states = (await Promise.all(waits)).map((done, i) => done.get(ids[i]!)?.state);
  assert.deepEqual(states, ["cancelled", "cancelled", "cancelled"]);
  const { rows } = await listener.query<{ channel: string }>("SELECT pg_listening_channels() AS channel");
  assert.deepEqual(rows, [], "the last wait UNLISTENed");
});
