// pgqueue for TypeScript: a typed client of the storyboard API, its live events, and
// pgqueue's SQL interface over node-postgres.
export { createApiClient } from "./api.ts";
export type { ApiClient, ApiClientOptions, components, operations, paths, Schemas, StreamEvent } from "./api.ts";
export { followEvents, isEvent, parseEventStream } from "./events.ts";
export type { FollowOptions, ParsedEvent } from "./events.ts";
export { cancel, enqueue, FINISHED_CHANNEL, jobStatus, retry, waitFinished } from "./queue.ts";
export type { EnqueueOptions, FinishedNotice, JobId, JobState, JobStatus, Queryable, WaitOptions } from "./queue.ts";
