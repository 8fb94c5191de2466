// The JSON API of this same server, called with the key typed at sign-in.
//
// The key lives in this tab's sessionStorage only: never in a URL, a cookie or
// the page's history, and it is sent only as `Authorization: Bearer <key>`.

const KEY = "mailroom.console.key";
const ROLE = "mailroom.console.role";

export function signedIn() {
  return sessionStorage.getItem(KEY) !== null;
}

/** "admin", "agent" or "open" (MAILROOM_AUTH=off). */
export function role() {
  return sessionStorage.getItem(ROLE) || "admin";
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(ROLE);
}

export function authorization() {
  return { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const ADVICE = {
  401: "The service refused this key: it is neither the admin token nor a current agent key " +
    "(an agent's key stops working as soon as a new one is issued). Sign out and paste it again.",
  403: "This key may not see that: an agent key opens only its own agent's mail and the " +
    "conversations it takes part in. Sign in with the admin token to see everything.",
  429: "Too many requests for this key; wait a few seconds and reload.",
  503: "The service cannot reach its database right now; reload in a few seconds.",
};

/** The sentence to show for a failed response. */
async function explain(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail
      : Array.isArray(body.detail) ? body.detail.map((e) => e.msg).join("; ") : "";
  } catch {
    // Not JSON: the status says enough.
  }
  const advice = ADVICE[response.status] || "";
  const said = detail ? `${detail} (${response.status}). ` : `HTTP ${response.status}. `;
  return new ApiError(response.status, (said + advice).trim());
}

export function unreachable(error) {
  if (error.name === "AbortError") return error;
  return new ApiError(0, `Cannot reach mailroom at ${location.origin}: is the service ` +
    `running? (${error.message})`);
}

/** GET a path of this server: its JSON and the query of the Link rel="next" page, if any. */
export async function get(path, { signal, key } = {}) {
  const headers = key === undefined ? authorization()
    : key === null ? {} : { Authorization: `Bearer ${key}` };
  let response;
  try {
    response = await fetch(path, { headers, signal, cache: "no-store", credentials: "omit" });
  } catch (error) {
    throw unreachable(error);
  }
  if (!response.ok) throw await explain(response);
  return { data: await response.json(), next: nextQuery(response.headers.get("Link")) };
}

/** The query string ("?a=1&cursor=…") of an RFC 8288 `<url>; rel="next"` header. */
export function nextQuery(link) {
  const found = link && /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
  return found ? new URL(found[1], location.origin).search : null;
}

/**
 * Sign in: check the key with GET /agents and learn what it is. The admin's
 * directory items carry unread_count; an agent key sees at least itself, without it.
 */
export async function signIn(key) {
  const { data } = await get("/agents?limit=1", { key });
  let kind = data.length === 0 || "unread_count" in data[0] ? "admin" : "agent";
  if (kind === "admin") {
    try {
      await get("/agents?limit=1", { key: null });
      kind = "open"; // answered without any key: MAILROOM_AUTH=off
    } catch {
      // 401 without a key: authentication is on and this is the admin token.
    }
  }
  sessionStorage.setItem(KEY, key);
  sessionStorage.setItem(ROLE, kind);
  return kind;
}

let features = null;

/** Whether the server's /openapi.json documents GET `path` (e.g. the search endpoint). */
export async function serves(path) {
  if (features === null) {
    features = get("/openapi.json", { key: null })
      .then(({ data }) => new Set(Object.keys(data.paths || {}).filter((p) => data.paths[p].get)))
      .catch(() => new Set());
  }
  return (await features).has(path);
}

const names = new Map();

/** Remember agents' names seen in any answer. */
export function learnNames(agents) {
  for (const agent of agents) names.set(agent.id, Promise.resolve(agent.agent_name));
}

/** An agent's name (null when this key may not see it), fetched once per agent. */
export function agentName(id) {
  if (!names.has(id)) {
    names.set(id, get(`/agents/${encodeURIComponent(id)}`).then(({ data }) => data.agent_name,
      () => null));
  }
  return names.get(id);
}
