// Search in an agent's mail, shown only when the server documents the search endpoint
// (GET /agents/{agent_id}/messages/search?q=) in its /openapi.json.

import { get, serves } from "../api.js";
import { h, loading, pager, problem, show } from "../dom.js";
import { SEARCH, agentHeader } from "./mailbox.js";
import { mailboxCard } from "./message.js";

export async function search(main, agentId, query, signal) {
  const header = await agentHeader(agentId, "search");
  if (!(await serves(SEARCH))) {
    show(main, ...header, h("p", { className: "empty" }, "This server has no search yet: its " +
      `/openapi.json does not list GET ${SEARCH}. Upgrade mailroom to search messages.`));
    return;
  }
  const params = new URLSearchParams(query);
  const q = params.get("q") || "";
  const base = `#/agents/${encodeURIComponent(agentId)}/search`;
  const input = h("input", { id: "search-q", type: "search", value: q, autocomplete: "off" });
  const form = h("form", { className: "filter", role: "search" },
    h("label", { htmlFor: "search-q" }, "Words to find"), input,
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const words = input.value.trim();
    location.hash = words ? `${base}?q=${encodeURIComponent(words)}` : base;
  });
  const results = h("div", { ariaLive: "polite" });
  show(main, ...header, form, results);
  if (!q) {
    show(results, h("p", { className: "empty" }, "Type words to find in this agent's messages."));
    return;
  }
  show(results, loading("results"));
  let page;
  try {
    page = await get(`/agents/${encodeURIComponent(agentId)}/messages/search?${params}`,
      { signal });
  } catch (error) {
    show(results, problem(error));
    return;
  }
  if (!page.data.length) {
    show(results, h("p", { className: "empty" }, `No message matches “${q}”.`));
    return;
  }
  show(results,
    h("ol", { className: "messages" }, page.data.map((item) =>
      h("li", {}, mailboxCard(item), snippet(item.snippet)))),
    pager(`${base}?q=${encodeURIComponent(q)}`, page.next && `${base}${page.next}`,
      !params.has("cursor")));
}

// The matched words of a snippet, between U+E000 and U+E001 (docs/search.md): the server
// strips those two characters from the text first, so each one is a marker. Shown as
// text in <mark> elements, never as HTML.
const START = "\uE000";
const END = "\uE001";

function snippet(text) {
  if (!text) return h("p", { className: "snippet" });
  const [before, ...rest] = text.split(START);
  const parts = [before];
  for (const piece of rest) {
    const [matched, after = ""] = piece.split(END);
    parts.push(h("mark", {}, matched), after);
  }
  return h("p", { className: "snippet" }, ...parts);
}
