// pgqueue's SQL interface from node-postgres: `enqueue`, `cancel` and `retry` run inside the
// caller's transaction (pass the client that ran BEGIN), and `waitFinished` hears jobs end
// on the channel `pgqueue_finished` instead of polling. The SQL is the one of
// `pgqueue.enqueue(...)` (schema version 11): nothing here decides what a job is.
import type { Client, Notification, QueryResult, QueryResultRow } from "pg";

/** What runs a query: a `pg.Client`, a `PoolClient` (in a transaction), or a `pg.Pool`. */
export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
}

/** A job's id (`pgqueue.jobs.id`, a bigint; ids stay far below 2^53). */
export type JobId = number;

interface CommonOptions {
  /** The queue (default `default`); its workers are woken when the transaction commits. */
  queue?: string | undefined;
  /** Smaller runs first (default 0). */
  priority?: number | undefined;
  /** Attempts before the job is `failed` (default 3). */
  maxAttempts?: number | undefined;
  /** One attempt's time limit, in seconds. */
  timeoutSeconds?: number | undefined;
  /** A second enqueue with the same key returns the first job's id and enqueues nothing. */
  idempotencyKey?: string | undefined;
  /** At most `concurrencyLimit` jobs with this key run at once, across all workers. */
  concurrencyKey?: string | undefined;
  concurrencyLimit?: number | undefined;
  /** Starts are held to the rate set for this key (`Queue.set_rate_limit` in Python). */
  rateLimitKey?: string | undefined;
  /** Keys with waiting jobs take turns for the workers' slots, in proportion to their weight. */
  fairnessKey?: string | undefined;
  fairnessWeight?: number | undefined;
  /** What one attempt costs, reserved against each of `budgetKeys` while it runs. */
  cost?: number | undefined;
  budgetKeys?: string[] | undefined;
  /** When the job ends, notify `pgqueue_finished` (what `waitFinished` listens for). */
  notifyFinished?: boolean | undefined;
}

/** `Queue.enqueue`'s options; `runAt` or `delaySeconds`, not both. */
export type EnqueueOptions = CommonOptions &
  ({ runAt?: Date | undefined; delaySeconds?: never } | { delaySeconds?: number | undefined; runAt?: never });

// Option name -> the argument of pgqueue.enqueue and the SQL that passes its parameter.
const ARGUMENTS: Record<keyof CommonOptions | "runAt" | "delaySeconds", [string, string]> = {
  queue: ["queue", "$::text"],
  priority: ["priority", "$::integer"],
  runAt: ["run_at", "$::timestamptz"],
  delaySeconds: ["delay", "make_interval(secs => $::float8)"],
  maxAttempts: ["max_attempts", "$::integer"],
  timeoutSeconds: ["timeout", "make_interval(secs => $::float8)"],
  idempotencyKey: ["idempotency_key", "$::text"],
  concurrencyKey: ["concurrency_key", "$::text"],
  concurrencyLimit: ["concurrency_limit", "$::integer"],
  rateLimitKey: ["rate_limit_key", "$::text"],
  fairnessKey: ["fairness_key", "$::text"],
  fairnessWeight: ["fairness_weight", "$::real"],
  cost: ["cost", "$::numeric"],
  budgetKeys: ["budget_keys", "$::text[]"],
  notifyFinished: ["notify_finished", "$::boolean"],
};

/**
 * Enqueues one job with `pgqueue.enqueue` on `db`, inside whatever transaction `db` is in:
 * the job commits or rolls back with the caller's rows. Its id; for a repeated idempotency
 * key, the existing job's id. Errors are Postgres's (a check the job breaks, an unknown
 * argument), as `pg` raises them.
 */
export async function enqueue(
  db: Queryable,
  kind: string,
  payload: unknown = {},
  options: EnqueueOptions = {},
): Promise<JobId> {
  const values: unknown[] = [kind, JSON.stringify(payload)];
  const args = ["kind => $1::text", "payload => $2::jsonb"];
  for (const [option, value] of Object.entries(options)) {
    const argument = ARGUMENTS[option as keyof typeof ARGUMENTS];
    if (argument === undefined) throw new TypeError(`enqueue: unknown option ${option}`);
    if (value === undefined) continue;
    values.push(value);
    args.push(`${argument[0]} => ${argument[1].replace("$", `$${values.length}`)}`);
  }
  const { rows } = await db.query<{ id: string }>(`SELECT pgqueue.enqueue(${args.join(", ")}) AS id`, values);
  return toJobId(rows[0]?.id);
}

/** Cancels a job: queued, at once; running, its worker stops it within a heartbeat. True when it changed the job. */
export async function cancel(db: Queryable, id: JobId): Promise<boolean> {
  const { rows } = await db.query<{ changed: boolean }>("SELECT pgqueue.cancel($1::bigint) AS changed", [id]);
  return rows[0]?.changed === true;
}

/** A failed or cancelled job back to queued with a fresh attempt budget. True when it changed the job. */
export async function retry(db: Queryable, id: JobId): Promise<boolean> {
  const { rows } = await db.query<{ changed: boolean }>("SELECT pgqueue.retry($1::bigint) AS changed", [id]);
  return rows[0]?.changed === true;
}

export type JobState = "queued" | "running" | "succeeded" | "failed" | "cancelled";
const ENDED: ReadonlySet<string> = new Set(["succeeded", "failed", "cancelled"]);

/** A job as `pgqueue.job_status` shows it. */
export interface JobStatus {
  id: JobId;
  queue: string;
  kind: string;
  state: JobState;
  attempts: number;
  maxAttempts: number;
  progress: unknown;
  result: unknown;
  lastError: string | null;
}

interface StatusRow {
  id: string;
  queue: string;
  kind: string;
  state: JobState;
  attempts: number;
  max_attempts: number;
  progress: unknown;
  result: unknown;
  last_error: string | null;
}

const SELECT_STATUS = `SELECT id, queue, kind, state, attempts, max_attempts, progress, result, last_error
FROM pgqueue.job_status WHERE id = ANY($1::bigint[])`;

/** The jobs' rows of `pgqueue.job_status`, by id (a missing job is absent). */
export async function jobStatus(db: Queryable, ids: JobId[]): Promise<Map<JobId, JobStatus>> {
  const { rows } = await db.query<StatusRow>(SELECT_STATUS, [ids]);
  return new Map(
    rows.map((row) => {
      const id = toJobId(row.id);
      const status: JobStatus = {
        id,
        queue: row.queue,
        kind: row.kind,
        state: row.state,
        attempts: row.attempts,
        maxAttempts: row.max_attempts,
        progress: row.progress,
        result: row.result,
        lastError: row.last_error,
      };
      return [id, status];
    }),
  );
}

export interface WaitOptions {
  /** Give up after this many milliseconds (default: wait as long as it takes). */
  timeoutMs?: number | undefined;
  /** Give up when aborted. */
  signal?: AbortSignal | undefined;
}

/** The payload of a notification on `pgqueue_finished`. */
export interface FinishedNotice {
  id: JobId;
  queue: string;
  kind: string;
  state: "succeeded" | "failed" | "cancelled";
}

export const FINISHED_CHANNEL = "pgqueue_finished";

// The waits in progress on each listener: the first LISTENs, the last UNLISTENs.
const listening = new WeakMap<Client, number>();

/**
 * Waits until every job of `ids` has ended (succeeded, failed or cancelled) and answers their
 * `job_status` rows, by id. It LISTENs on `pgqueue_finished`, so the jobs must have been
 * enqueued with `notifyFinished: true` (a job that ended before the call is seen at once).
 *
 * `listener` is a connection of its own, not a pool and not in a transaction: a session
 * connection (a direct URL, not a transaction-mode pooler), LISTENing while waits on it are in
 * progress (any number at once). Rejects after `timeoutMs`, or when `signal` aborts.
 */
export async function waitFinished(
  listener: Client,
  ids: JobId[],
  options: WaitOptions = {},
): Promise<Map<JobId, JobStatus>> {
  const waiting = new Set(ids);
  let wake: () => void = () => undefined;
  const onNotification = (message: Notification): void => {
    if (message.channel !== FINISHED_CHANNEL || message.payload === undefined) return;
    const notice = JSON.parse(message.payload) as FinishedNotice;
    if (waiting.delete(notice.id)) wake();
  };
  // Listen first, then read: a job that ends in between is heard, one that ended before is read
  // (a client runs its queries in order, so a wait that joins a LISTEN already sent reads after it).
  listener.on("notification", onNotification);
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const waits = listening.get(listener) ?? 0;
  listening.set(listener, waits + 1);
  try {
    if (waits === 0) await listener.query(`LISTEN ${FINISHED_CHANNEL}`);
    for (const status of (await jobStatus(listener, [...waiting])).values()) {
      if (ENDED.has(status.state)) waiting.delete(status.id);
    }
    if (waiting.size > 0) {
      await new Promise<void>((resolve, reject) => {
        wake = () => {
          if (waiting.size === 0) resolve();
        };
        if (options.timeoutMs !== undefined) {
          const timeoutMs = options.timeoutMs;
          timer = setTimeout(
            () => reject(new Error(`waitFinished: jobs ${[...waiting].join(", ")} still running after ${timeoutMs} ms`)),
            timeoutMs,
          );
        }
        if (options.signal !== undefined) {
          const signal = options.signal;
          onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new Error("waitFinished: aborted"));
          if (signal.aborted) onAbort();
          signal.addEventListener("abort", onAbort, { once: true });
        }
      });
    }
    return await jobStatus(listener, ids);
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) options.signal?.removeEventListener("abort", onAbort);
    listener.off("notification", onNotification);
    const left = (listening.get(listener) ?? 1) - 1;
    if (left > 0) listening.set(listener, left);
    else {
      listening.delete(listener);
      await listener.query(`UNLISTEN ${FINISHED_CHANNEL}`);
    }
  }
}

function toJobId(text: string | undefined): JobId {
  const id = Number(text);
  if (text === undefined || !Number.isSafeInteger(id)) throw new Error(`not a job id: ${text}`);
  return id;
}
