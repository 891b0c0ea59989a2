// Following a project's generation through its live stream,
// `GET /api/projects/{project_id}/storyboards/events` (Server-Sent Events).
//
// Each event is an `event:` line and a `data:` line of JSON; comment lines (`: heartbeat`)
// keep the connection open. The stream ends by itself after its last event (`done`, or
// `timeout` after STREAM_MAX_S): this reader then returns, and does not reconnect. Events it
// does not know are yielded as they come, so a new event name breaks nothing.
import type { ApiClient, StreamEvent } from "./api.ts";

export interface FollowOptions {
  /** Stops reading (and closes the connection) when aborted. */
  signal?: AbortSignal | undefined;
}

/** One parsed event: `event` is the name from the `event:` line, `data` its parsed JSON. */
export type ParsedEvent = StreamEvent | { event: string; data: unknown };

/**
 * Whether `message` is the event `name`, narrowing its data to that event's schema:
 * `if (isEvent(message, "done")) message.data.status` (a `Status`).
 */
export function isEvent<N extends StreamEvent["event"]>(
  message: ParsedEvent,
  name: N,
): message is Extract<StreamEvent, { event: N }> {
  return message.event === name;
}

/**
 * The events of one project's stream, in order, until the server ends it (or `signal`
 * aborts). Throws with the API's error (e.g. `not_found`) when the stream does not open.
 */
export async function* followEvents(
  api: ApiClient,
  projectId: string,
  options: FollowOptions = {},
): AsyncGenerator<ParsedEvent> {
  const { data, error, response } = await api.GET("/api/projects/{project_id}/storyboards/events", {
    params: { path: { project_id: projectId } },
    parseAs: "stream",
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  if (error !== undefined || data == null) {
    throw new Error(`the events stream did not open: ${response.status} ${JSON.stringify(error)}`);
  }
  yield* parseEventStream(data);
}

/** The events of a `text/event-stream` body (its `event:` and `data:` fields; comments skipped). */
export async function* parseEventStream(body: ReadableStream<Uint8Array>): AsyncGenerator<ParsedEvent> {
  const decoder = new TextDecoder();
  let buffered = "";
  let name = "message";
  let data: string[] = [];
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffered += done ? decoder.decode() : decoder.decode(value, { stream: true });
      const lines = buffered.split(/\r\n|\r|\n/);
      buffered = done ? "" : (lines.pop() ?? "");
      for (const line of lines) {
        if (line === "") {
          // A blank line ends an event (one without data lines is not dispatched).
          if (data.length > 0) yield { event: name, data: JSON.parse(data.join("\n")) } as ParsedEvent;
          name = "message";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          let value = colon === -1 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") name = value;
          else if (field === "data") data.push(value);
        }
      }
      if (done) return;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}
