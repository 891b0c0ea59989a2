// BullMQ's side of the comparison (see common.mjs for the commands), on either of its backends:
// a `redis://` DSN is the Redis the bench started (AOF on, everysec), a `postgresql://` DSN is
// BullMQ's PostgreSQL backend (`createPostgresBackend`, schema `bullmq`, migrated by `install`).
//
// SETTING: `default` is a Worker with BullMQ's defaults (concurrency 1); `c=N` sets its
// `concurrency`, the one throughput knob its docs give for async processors (jobs stay in
// `completed` as by default, so both settings do the same work per job).
//
// A drain's figures: from the first job's start to the `completed` event of the last (emitted
// once the backend has recorded the job as finished), taken by the runner.

import { load, main, now, sleep, stamper, stopped, PROBE } from "./common.mjs";

const bullmq = await load("bullmq");
const { default: Redis } = await load("ioredis");
const QUEUE = "bench";
const NOOP = "noop";
const LATENCY = "latency";
const DRAIN_POLL_MS = 5;

function backend(dsn) {
  if (dsn.startsWith("redis://")) {
    const url = new URL(dsn);
    // maxRetriesPerRequest null: what BullMQ requires of a Worker's Redis connection.
    const connection = { host: url.hostname, port: Number(url.port), maxRetriesPerRequest: null };
    return { Queue: bullmq.Queue, Worker: bullmq.Worker, connection };
  }
  const { Queue, Worker } = bullmq.withBackend(bullmq.createPostgresBackend);
  return { Queue, Worker, connection: { connectionString: dsn } };
}

async function install(dsn) {
  if (dsn.startsWith("redis://")) {
    const redis = new Redis(dsn);
    await redis.flushall(); // the bench's own Redis: every run starts empty
    await redis.quit();
    return;
  }
  const { Queue, connection } = backend(dsn);
  const queue = new Queue(QUEUE, { connection: { ...connection, migrate: true } });
  await queue.waitUntilReady();
  await queue.close();
}

async function enqueue(dsn, jobs, batch) {
  const { Queue, connection } = backend(dsn);
  const queue = new Queue(QUEUE, { connection });
  await queue.waitUntilReady();
  try {
    const started = performance.now();
    for (let start = 0; start < jobs; start += batch) {
      const count = Math.min(batch, jobs - start);
      await queue.addBulk(Array.from({ length: count }, () => ({ name: NOOP, data: {} })));
    }
    return jobs / ((performance.now() - started) / 1000);
  } finally {
    await queue.close();
  }
}

async function worker(dsn, options, { drain, stamps, maxSeconds }) {
  const stamp = stamper(stamps);
  const { Worker, connection } = backend(dsn);
  let first = null;
  let last = null;
  let completed = 0;
  const processor = async (job) => {
    if (job.name === LATENCY) return stamp(job.data.seq);
    first ??= now();
    if (stamps) stamp(PROBE);
  };
  const work = new Worker(QUEUE, processor, { connection, concurrency: options.c ?? 1 });
  work.on("error", (error) => console.error(error));
  work.on("completed", (job) => {
    if (job.name !== NOOP) return;
    completed++;
    last = now();
  });
  if (!drain) {
    await stopped();
    await work.close(true);
    return null;
  }
  const { Queue } = backend(dsn);
  const queue = new Queue(QUEUE, { connection });
  const deadline = maxSeconds === null ? Infinity : Date.now() + maxSeconds * 1000;
  for (;;) {
    await sleep(DRAIN_POLL_MS);
    if (Date.now() > deadline) break;
    if (first === null) continue;
    const counts = await queue.getJobCounts("wait", "active", "delayed", "prioritized");
    if (Object.values(counts).every((n) => n === 0)) break;
  }
  await work.close(); // graceful: nothing runs any more, and pending events are delivered
  await queue.close();
  return { jobs: completed, seconds: (last ?? now()) - (first ?? now()) };
}

async function client(dsn) {
  const { Queue, connection } = backend(dsn);
  const queue = new Queue(QUEUE, { connection });
  await queue.waitUntilReady();
  return {
    enqueue: (seq) => (seq === PROBE ? queue.add(NOOP, {}) : queue.add(LATENCY, { seq })),
    close: () => queue.close(),
  };
}

// crash DSN JOBS CALLERS PID: `add` JOBS jobs one per call, CALLERS calls in flight, then
// SIGKILL the Redis server (PID) the moment the last add is acknowledged: the crash test's
// half on BullMQ. Prints {"acknowledged": n} (the bench counts what survives the restart).
async function crash(dsn, jobs, callers, pid) {
  const { Queue, connection } = backend(dsn);
  const queue = new Queue(QUEUE, { connection });
  await queue.waitUntilReady();
  let next = 0;
  let acknowledged = 0;
  const caller = async () => {
    while (next < Number(jobs)) {
      next++;
      await queue.add(NOOP, {});
      acknowledged++;
    }
  };
  await Promise.all(Array.from({ length: Number(callers) }, caller));
  process.kill(Number(pid), "SIGKILL");
  console.log(JSON.stringify({ acknowledged }));
}

await main({ install, enqueue, worker, client, commands: { crash } });
