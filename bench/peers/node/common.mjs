// What the Node peers' runners share: the command line, the paced latency client, the clock.
//
// The same commands as the Python runners (bench/peers/runner_common.py):
//
//   install DSN
//   enqueue DSN JOBS BATCH                -> {"jobs_s": ...}
//   worker DSN SETTING [--drain] [--stamps FILE] [--max-seconds S]
//                                         -> with --drain, last line {"jobs": n, "seconds": s}
//   latency DSN JOBS INTERVAL_MS STAMPS   -> {"<seq>": wall clock just before the enqueue}
//   (a runner may add commands of its own: `commands` below)
//
// SETTING is `default` (the peer's own defaults) or `key=value,...` (see each runner). The
// packages come from bench/.peers/node (installed there by tools/bench-deps.sh), not from a
// node_modules beside this file, so they are loaded through `load`.

import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const MODULES = join(HERE, "..", "..", ".peers", "node", "node_modules");
const READY_TIMEOUT_MS = 20_000;
export const PROBE = -1; // the seq of a probe job

/** Import an installed package by name from bench/.peers/node. */
export async function load(name) {
  const require = createRequire(join(MODULES, "noop.js"));
  return import(pathToFileURL(require.resolve(name)).href);
}

/** The wall clock in seconds, sub-millisecond (comparable with Python's time.time()). */
export function now() {
  return (performance.timeOrigin + performance.now()) / 1000;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `default` -> {}; `c=24,local=500` -> {c: 24, local: 500} (numbers where they parse). */
export function parseSetting(text) {
  const options = {};
  if (text === "default") return options;
  for (const part of text.split(",")) {
    const [key, value] = part.split("=");
    if (value === undefined) options[key] = true; // a bare name: a named configuration
    else options[key] = Number.isNaN(Number(value)) ? value : Number(value);
  }
  return options;
}

/** Appends `<seq> <start time>` lines to the stamps file (when there is one). */
export function stamper(path) {
  return (seq) => {
    if (path) appendFileSync(path, `${seq} ${now()}\n`);
  };
}

function countProbes(path) {
  if (!existsSync(path)) return 0;
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line.startsWith(`${PROBE} `)).length;
}

async function latency(peer, dsn, jobs, intervalMs, stamps) {
  const client = await peer.client(dsn);
  try {
    // The second probe can only be picked up by a worker that idles and listens.
    for (const expected of [1, 2]) {
      await client.enqueue(PROBE);
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while (countProbes(stamps) < expected) {
        if (Date.now() > deadline) throw new Error("the worker did not pick up the probe job");
        await sleep(20);
      }
    }
    const sent = {};
    let nextAt = performance.now();
    for (let seq = 0; seq < jobs; seq++) {
      await sleep(Math.max(0, nextAt - performance.now())); // pacing
      nextAt += intervalMs;
      sent[seq] = now();
      await client.enqueue(seq);
    }
    console.log(JSON.stringify(sent));
  } finally {
    await client.close();
  }
}

/**
 * Runs one command of a peer: {install(dsn), enqueue(dsn, jobs, batch) -> jobs/s,
 * worker(dsn, options, {drain, stamps, maxSeconds}) -> {jobs, seconds} when draining,
 * client(dsn) -> {enqueue(seq), close()}}.
 */
export async function main(peer) {
  const [command, dsn, ...rest] = process.argv.slice(2);
  if (command === "install") {
    await peer.install(dsn);
  } else if (command === "enqueue") {
    const jobsS = await peer.enqueue(dsn, Number(rest[0]), Number(rest[1]));
    console.log(JSON.stringify({ jobs_s: jobsS }));
  } else if (command === "worker") {
    const flags = { drain: rest.includes("--drain"), stamps: null, maxSeconds: null };
    const at = (flag) => (rest.includes(flag) ? rest[rest.indexOf(flag) + 1] : null);
    flags.stamps = at("--stamps");
    flags.maxSeconds = at("--max-seconds") === null ? null : Number(at("--max-seconds"));
    const figures = await peer.worker(dsn, parseSetting(rest[0]), flags);
    if (flags.drain) console.log(JSON.stringify(figures));
  } else if (command === "latency") {
    await latency(peer, dsn, Number(rest[0]), Number(rest[1]), rest[2]);
  } else if (peer.commands?.[command]) {
    await peer.commands[command](dsn, ...rest);
  } else {
    throw new Error(`unknown command ${command}`);
  }
  process.exit(0); // pools and timers of the peers must not keep the process alive
}

/** Resolves on SIGTERM/SIGINT (a non-draining worker runs until the bench stops it). */
export function stopped() {
  return new Promise((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
}
