// Server-Sent Events over fetch: EventSource cannot send an Authorization header.
//
// The stream is read with a ReadableStream and parsed as the HTML standard's
// event-stream format says. When it ends or the connection breaks (a server
// restart, a deploy), it is opened again with `Last-Event-ID: <the last id
// seen>`, so the server goes on after the last message shown: none twice, none lost.

import { ApiError, authorization, unreachable } from "./api.js";

const MAX_DELAY = 5000; // milliseconds between two attempts, at most
const FATAL = new Set([401, 403, 404, 422]);

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/**
 * Follow the stream at `path` until `signal` aborts or the server refuses.
 * onEvent({type, data, id}); onStatus(state, detail) with state one of
 * "connecting", "live", "waiting" (to reconnect, detail = milliseconds), "stopped" (detail = why).
 */
export async function follow(path, { onEvent, onStatus, signal }) {
  let lastId = null;
  let retry = 1000;
  let failures = 0;
  while (!signal.aborted) {
    onStatus("connecting", lastId);
    const headers = authorization();
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    try {
      let response;
      try {
        response = await fetch(path, { headers, signal, cache: "no-store", credentials: "omit" });
      } catch (error) {
        throw unreachable(error);
      }
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new ApiError(response.status, typeof body.detail === "string" ? body.detail
          : `HTTP ${response.status}`);
      }
      onStatus("live");
      failures = 0;
      for await (const event of events(response.body, signal)) {
        if (event.retry !== undefined) { retry = event.retry; continue; }
        lastId = event.id ?? lastId;
        if (event.type === "revoked") {
          onStatus("stopped", "This key was replaced: sign in with the new one.");
          return;
        }
        onEvent(event);
        if (event.type === "shutdown") break; // the server stops: reconnect, resuming
      }
    } catch (error) {
      if (signal.aborted || error.name === "AbortError") return;
      if (error instanceof ApiError && FATAL.has(error.status)) {
        onStatus("stopped", `${error.message} (${error.status})`);
        return;
      }
      failures += 1;
    }
    if (signal.aborted) return;
    const delay = Math.min(MAX_DELAY, retry * 2 ** Math.max(0, failures - 1));
    onStatus("waiting", delay);
    await sleep(delay, signal);
  }
}

/** The events of an event stream, as they arrive; `retry:` is yielded as {retry}. */
async function* events(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  let buffer = "";
  let data = [];
  let type = "";
  let id;
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const raw of lines) {
        const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
        if (line === "") {
          if (data.length) yield { type: type || "message", data: data.join("\n"), id };
          data = [];
          type = "";
          id = undefined;
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the heartbeat
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") type = value;
        else if (field === "id" && !value.includes("\0")) id = value;
        else if (field === "retry" && /^\d+$/.test(value)) yield { retry: Number(value) };
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // a consumer that stops early closes the connection
  }
}
