// The agent directory: GET /agents, by name, with each agent's unread count and last
// activity for the admin.

import { get, learnNames, role } from "../api.js";
import { h, loading, pager, problem, shortId, show, table, when } from "../dom.js";

function registerLine() {
  return `curl -X POST ${location.origin}/agents \\\n` +
    "  -H \"Authorization: Bearer $MAILROOM_ADMIN_TOKEN\" \\\n" +
    "  -H 'Content-Type: application/json' \\\n" +
    "  -d '{\"agent_name\": \"planner\"}'";
}

export async function directory(main, query, signal) {
  const params = new URLSearchParams(query);
  const name = params.get("name") || "";
  const filter = h("input", { id: "name-filter", type: "search", value: name,
    autocomplete: "off" });
  const form = h("form", { className: "filter", role: "search" },
    h("label", { htmlFor: "name-filter" }, "Name starts with"), filter,
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = filter.value.trim();
    location.hash = value ? `#/agents?name=${encodeURIComponent(value)}` : "#/agents";
  });
  const results = h("div", { ariaLive: "polite" }, loading("agents"));
  show(main, h("h1", { tabIndex: -1 }, "Agents"), form, results);

  let page;
  try {
    page = await get(`/agents${query}`, { signal });
  } catch (error) {
    show(results, problem(error));
    return;
  }
  const agents = page.data;
  learnNames(agents);
  if (!agents.length) {
    show(results, name
      ? h("p", { className: "empty" }, `No agent's name starts with “${name}”.`)
      : h("div", { className: "empty" },
        h("p", {}, "No agents are registered yet. Register one with:"),
        h("pre", { className: "command" }, registerLine()),
        h("p", {}, "The answer carries the agent's API key, shown once; then reload.")));
    return;
  }
  const activity = role() !== "agent";
  const columns = ["Name", "Id", "Registered", ...(activity ? ["Unread", "Last active"] : []),
    "Open"];
  const rows = agents.map((agent) => {
    const path = `#/agents/${encodeURIComponent(agent.id)}`;
    return [
      h("a", { href: `${path}/mail/all` }, agent.agent_name),
      shortId(agent.id),
      when(agent.created_at),
      ...(activity
        ? [agent.unread_count ? h("span", { className: "badge unread" }, agent.unread_count)
          : "0", when(agent.last_active_at)]
        : []),
      h("span", { className: "actions" }, h("a", { href: `${path}/mail/unread` }, "Unread"),
        h("a", { href: `${path}/tail` }, "Live tail")),
    ];
  });
  const first = name ? `#/agents?name=${encodeURIComponent(name)}` : "#/agents";
  show(results, table("Registered agents", columns, rows),
    pager(first, page.next && `#/agents${page.next}`, !params.has("cursor")));
}
