// pg-boss's side of the comparison (see common.mjs for the commands).
//
// SETTING: `default` is pg-boss's own defaults (one job per fetch, one fetching worker, a poll
// every 2 s, no LISTEN/NOTIFY). Otherwise its documented levers for throughput and latency in
// v12: `b` batchSize (jobs per fetch, completed together), `c` localConcurrency (fetching
// workers in the process), `burstWhenBatchFull` (fetch again at once while fetches come back
// full) and `useListenNotify` with queues created `notify: true` (a new job wakes a worker).
//
// pg-boss keeps finished jobs with `started_on` and `completed_on`: a drain's figures come from
// those records, as ours come from `pgqueue.jobs`.

import { load, main, sleep, stamper, stopped, PROBE } from "./common.mjs";

const { PgBoss } = await load("pg-boss");
const { default: pg } = await load("pg");
const NOOP = "noop";
const LATENCY = "latency";
const DRAIN_POLL_MS = 20;
// -- unfinished: jobs of the drained queue not yet completed
const UNFINISHED = `SELECT count(*)::int AS n FROM pgboss.job
  WHERE name = $1 AND state IN ('created', 'retry', 'active')`;
// -- figures: jobs completed, first start to last completion, from pg-boss's own records
const FIGURES = `SELECT count(*)::int AS jobs,
    extract(epoch FROM max(completed_on) - min(started_on))::float8 AS seconds
  FROM pgboss.job WHERE name = $1 AND state = 'completed'`;

function boss(dsn, listen, client = false) {
  // Maintenance and cron are a worker's business: off for the enqueueing clients.
  const extra = client ? { supervise: false, schedule: false } : {};
  return new PgBoss({ connectionString: dsn, useListenNotify: listen, ...extra });
}

async function install(dsn) {
  const instance = boss(dsn, false);
  instance.on("error", (error) => console.error(error));
  await instance.start();
  // notify: an insert NOTIFYs; a worker acts on it only with useListenNotify (not the default).
  await instance.createQueue(NOOP, { notify: true });
  await instance.createQueue(LATENCY, { notify: true });
  await instance.stop({ graceful: false });
}

async function enqueue(dsn, jobs, batch) {
  const instance = boss(dsn, false, true);
  await instance.start();
  try {
    const started = performance.now();
    for (let start = 0; start < jobs; start += batch) {
      const count = Math.min(batch, jobs - start);
      await instance.insert(NOOP, Array.from({ length: count }, () => ({ data: {} })));
    }
    return jobs / ((performance.now() - started) / 1000);
  } finally {
    await instance.stop({ graceful: false });
  }
}

function workOptions(options) {
  if (Object.keys(options).length === 0) return { listen: false, work: {} };
  return {
    listen: true,
    work: { batchSize: options.b ?? 1, localConcurrency: options.c ?? 1, burstWhenBatchFull: true },
  };
}

async function worker(dsn, options, { drain, stamps, maxSeconds }) {
  const stamp = stamper(stamps);
  const { listen, work } = workOptions(options);
  const instance = boss(dsn, listen);
  instance.on("error", (error) => console.error(error));
  await instance.start();
  await instance.work(NOOP, work, async (jobs) => {
    if (stamps) for (const _ of jobs) stamp(PROBE);
  });
  await instance.work(LATENCY, work, async (jobs) => {
    for (const job of jobs) stamp(job.data.seq);
  });
  if (!drain) {
    await stopped();
    await instance.stop({ graceful: false });
    return null;
  }
  const client = new pg.Client({ connectionString: dsn });
  await client.connect();
  try {
    const deadline = maxSeconds === null ? Infinity : Date.now() + maxSeconds * 1000;
    while (Date.now() < deadline && (await client.query(UNFINISHED, [NOOP])).rows[0].n > 0) {
      await sleep(DRAIN_POLL_MS);
    }
    await instance.stop({ graceful: false, timeout: 1000 });
    const row = (await client.query(FIGURES, [NOOP])).rows[0];
    return { jobs: row.jobs, seconds: row.seconds ?? 0 };
  } finally {
    await client.end();
  }
}

async function client(dsn) {
  const instance = boss(dsn, false, true);
  await instance.start();
  return {
    enqueue: (seq) => (seq === PROBE ? instance.send(NOOP, {}) : instance.send(LATENCY, { seq })),
    close: () => instance.stop({ graceful: false }),
  };
}

await main({ install, enqueue, worker, client });
