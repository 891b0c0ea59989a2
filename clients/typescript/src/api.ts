// A typed client of the storyboard API: openapi-fetch over the types generated from the
// document the API serves (src/generated/api.ts, `npm run generate`). Every path, parameter,
// body and answer is checked by the compiler; a 4xx answer comes back as `error`, typed as
// the document's `Error` schema.
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./generated/api.ts";

export type { components, operations, paths } from "./generated/api.ts";

/** The document's schemas by name: `Schemas["Project"]`, `Schemas["Status"]`, ... */
export type Schemas = components["schemas"];
/** One event of the live stream (`stream_events`), with its data: `{event: "status", data}`. */
export type StreamEvent = Schemas["StreamEvent"];

export type ApiClient = Client<paths>;

export interface ApiClientOptions {
  /** Where the API answers, e.g. `http://127.0.0.1:8000`. */
  baseUrl: string;
  /** An API token (`make token USER=alice`); sent as `Authorization: Bearer <token>`. */
  token?: string | undefined;
  /** A fetch of your own (tests, a proxy); default: the global one. */
  fetch?: typeof globalThis.fetch | undefined;
}

/** A client of the storyboard API: `api.GET("/api/projects/{project_id}", {params: ...})`. */
export function createApiClient(options: ApiClientOptions): ApiClient {
  const headers: Record<string, string> = {};
  if (options.token !== undefined) headers["Authorization"] = `Bearer ${options.token}`;
  return createClient<paths>({
    baseUrl: options.baseUrl,
    headers,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
}
