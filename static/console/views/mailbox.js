// An agent's mailbox: everything, sent, received or unread, newest first, a page at a time
// by the Link header.

import { agentName, get, serves } from "../api.js";
import { h, loading, pager, problem, shortId, show } from "../dom.js";
import { mailboxCard } from "./message.js";

export const SEARCH = "/agents/{agent_id}/messages/search";
const BOXES = [
  ["all", "All"],
  ["received", "Received"],
  ["sent", "Sent"],
  ["unread", "Unread"],
];

/** The heading and tabs of every view of one agent. */
export async function agentHeader(agentId, current) {
  const base = `#/agents/${encodeURIComponent(agentId)}`;
  const title = h("h1", { tabIndex: -1 }, "Agent ", shortId(agentId));
  agentName(agentId).then((name) => {
    if (name !== null) title.replaceChildren(name, " ", shortId(agentId));
  });
  const tabs = BOXES.map(([box, label]) => [`${base}/mail/${box}`, label, box]);
  tabs.push([`${base}/tail`, "Live tail", "tail"]);
  if (await serves(SEARCH)) tabs.push([`${base}/search`, "Search", "search"]);
  const nav = h("nav", { className: "tabs", ariaLabel: "Views of this agent" },
    tabs.map(([href, label, key]) =>
      h("a", { href, ariaCurrent: key === current ? "page" : undefined }, label)));
  return [title, nav];
}

function sendLine(agentId) {
  return `curl -X POST ${location.origin}/messages \\\n` +
    "  -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n" +
    `  -d '{"sender_id": "<sender id>", "recipient_ids": ["${agentId}"], "content": "hello"}'`;
}

export async function mailbox(main, agentId, box, query, signal) {
  if (!BOXES.some(([known]) => known === box)) box = "all";
  const results = h("div", { ariaLive: "polite" }, loading("messages"));
  show(main, ...(await agentHeader(agentId, box)), results);
  const params = new URLSearchParams(query);
  if (box !== "unread") params.set("direction", box);
  const path = `/agents/${encodeURIComponent(agentId)}/messages` +
    (box === "unread" ? "/unread" : "");
  let page;
  try {
    page = await get(`${path}?${params}`, { signal });
  } catch (error) {
    show(results, problem(error));
    return;
  }
  const base = `#/agents/${encodeURIComponent(agentId)}/mail/${box}`;
  if (!page.data.length) {
    const what = { all: "No messages sent or received yet.", sent: "Nothing sent yet.",
      received: "Nothing received yet.", unread: "No unread messages." }[box];
    show(results, h("div", { className: "empty" }, h("p", {}, what,
      box === "sent" ? "" : " A message reaches this agent when someone sends it:"),
      box === "sent" ? null : h("pre", { className: "command" }, sendLine(agentId))));
    return;
  }
  const next = page.next && `${base}?${new URLSearchParams(
    [...new URLSearchParams(page.next)].filter(([name]) => name !== "direction"))}`;
  show(results,
    h("ol", { className: "messages" }, page.data.map((item) => h("li", {}, mailboxCard(item)))),
    pager(base, next, !params.has("cursor")));
}
