// graphile-worker's side of the comparison (see common.mjs for the commands).
//
// SETTING: `default` is graphile-worker's own defaults (concurrentJobs 1, maxPoolSize 10, no
// local queue, one completion statement per job). Otherwise the options of its performance
// page: `c` concurrentJobs, `pool` maxPoolSize (default c + 1), `local` localQueue.size
// (default 500), `batch` completeJobBatchDelay and failJobBatchDelay in ms (default 0);
// `preset` alone is that page's configuration (c=24, pool=25, local=500, batch=0).
//
// graphile-worker deletes a job once it completes and keeps no record of it, so a drain's
// figures are the runner's: from the first handler's start until the jobs table is seen empty
// (every completion committed), polled every DRAIN_POLL_MS once every handler has run.

import { load, main, now, sleep, stamper, stopped, PROBE } from "./common.mjs";

const { run, runMigrations, makeWorkerUtils, Logger } = await load("graphile-worker");
const { default: pg } = await load("pg");
const DRAIN_POLL_MS = 2;
const QUIET = process.env.BENCH_PEER_DEBUG ? undefined : new Logger(() => () => {});
const PRESET = { c: 24, pool: 25, local: 500, batch: 0 };
// -- remaining: jobs not yet completed (graphile-worker deletes completed jobs)
const REMAINING = "SELECT count(*)::int AS n FROM graphile_worker._private_jobs";

function workerPreset(dsn, options) {
  if (Object.keys(options).length === 0) return { connectionString: dsn };
  const o = options.preset !== undefined ? PRESET : options;
  const batch = o.batch ?? 0;
  return {
    connectionString: dsn,
    concurrentJobs: o.c,
    maxPoolSize: o.pool ?? o.c + 1,
    localQueue: { size: o.local ?? 500 },
    completeJobBatchDelay: batch,
    failJobBatchDelay: batch,
  };
}

async function install(dsn) {
  await runMigrations({ connectionString: dsn, logger: QUIET });
}

async function enqueue(dsn, jobs, batch) {
  const utils = await makeWorkerUtils({ connectionString: dsn, logger: QUIET });
  try {
    const started = performance.now();
    for (let start = 0; start < jobs; start += batch) {
      const count = Math.min(batch, jobs - start);
      await utils.addJobs(Array.from({ length: count }, () => ({ identifier: "noop", payload: {} })));
    }
    return jobs / ((performance.now() - started) / 1000);
  } finally {
    await utils.release();
  }
}

async function worker(dsn, options, { drain, stamps, maxSeconds }) {
  const stamp = stamper(stamps);
  let first = null;
  let handled = 0;
  const taskList = {
    noop: async () => {
      first ??= now();
      handled++;
      if (stamps) stamp(PROBE);
    },
    latency: async (payload) => stamp(payload.seq),
  };
  const runner = await run({
    logger: QUIET,
    noHandleSignals: true,
    taskList,
    preset: { worker: workerPreset(dsn, options) },
  });
  if (!drain) {
    await stopped();
    await runner.stop();
    return null;
  }
  const client = new pg.Client({ connectionString: dsn });
  await client.connect();
  const deadline = maxSeconds === null ? Infinity : Date.now() + maxSeconds * 1000;
  let last = null;
  try {
    for (;;) {
      if (Date.now() > deadline) break;
      if (first !== null && (await client.query(REMAINING)).rows[0].n === 0) {
        last = now();
        break;
      }
      await sleep(first === null ? 20 : DRAIN_POLL_MS);
    }
  } finally {
    await client.end();
  }
  const seconds = (last ?? now()) - (first ?? now());
  await runner.stop();
  return { jobs: handled, seconds };
}

async function client(dsn) {
  const utils = await makeWorkerUtils({ connectionString: dsn, logger: QUIET });
  return {
    enqueue: (seq) =>
      seq === PROBE ? utils.addJob("noop", {}) : utils.addJob("latency", { seq }),
    close: () => utils.release(),
  };
}

await main({ install, enqueue, worker, client });
