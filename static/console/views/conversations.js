// Conversations, newest first (an agent key sees those it takes part in).

import { get } from "../api.js";
import { h, loading, pager, problem, shortId, show, table, when } from "../dom.js";

export async function conversations(main, query, signal) {
  const results = h("div", { ariaLive: "polite" }, loading("conversations"));
  show(main, h("h1", { tabIndex: -1 }, "Conversations"), results);
  let page;
  try {
    page = await get(`/conversations${query}`, { signal });
  } catch (error) {
    show(results, problem(error));
    return;
  }
  if (!page.data.length) {
    show(results, h("p", { className: "empty" }, "No conversations yet. An agent starts one " +
      "with POST /conversations, then sends messages with its conversation_id."));
    return;
  }
  const rows = page.data.map((c) => [
    h("a", { href: `#/conversations/${encodeURIComponent(c.id)}` },
      c.title || "Untitled conversation"),
    shortId(c.id),
    when(c.created_at),
    c.archived ? "archived" : "active",
  ]);
  show(results, table("Conversations", ["Title", "Id", "Started", "State"], rows),
    pager("#/conversations", page.next && `#/conversations${page.next}`,
      !new URLSearchParams(query).has("cursor")));
}
