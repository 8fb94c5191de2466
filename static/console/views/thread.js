// A conversation as a thread: every message in order, replies indented under their parent,
// with recipients, read state and metadata.

import { get, learnNames } from "../api.js";
import { content, h, json, loading, pager, problem, shortId, show, when } from "../dom.js";
import { agentLink, chips, links } from "./message.js";

function recipients(message) {
  if (!message.recipients.length) return h("p", { className: "muted" }, "No recipients.");
  return h("ul", { className: "recipients", ariaLabel: "Recipients" },
    message.recipients.map((r) => h("li", {}, agentLink(r.recipient_id), " ",
      r.is_read ? h("span", { className: "read" }, "read ", when(r.read_at))
        : h("span", { className: "badge unread" }, "unread"))));
}

function metadataItems(message) {
  if (!message.metadata_items.length) return null;
  return h("dl", { className: "metadata" }, message.metadata_items.map((item) => [
    h("dt", {}, item.key),
    h("dd", {}, item.value === null ? h("span", { className: "muted" }, "null") : item.value,
      item.agent_id ? [" — by ", agentLink(item.agent_id)] : null),
  ]));
}

function card(message) {
  return h(
    "article",
    { className: "message", dataset: { id: message.id } },
    h("header", {}, agentLink(message.sender_id), " ", when(message.sent_at), chips(message)),
    content(message.content),
    h("div", { className: "to" }, h("span", { className: "muted" }, "To: "), recipients(message)),
    metadataItems(message),
    links(message, { thread: false }),
  );
}

/** Messages oldest first, each reply under its parent; a reply whose parent is not in
 * this view (another conversation, or not this key's mail) starts a branch of its own. */
function tree(messages) {
  const present = new Set(messages.map((m) => m.id));
  const children = new Map();
  const roots = [];
  for (const message of messages) {
    const parent = message.parent_message_id;
    if (parent && present.has(parent) && parent !== message.id) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(message);
    } else roots.push(message);
  }
  const branch = (list) => h("ol", { className: "thread" }, list.map((message) =>
    h("li", {}, card(message), children.has(message.id) ? branch(children.get(message.id))
      : null)));
  return branch(roots);
}

/** A conversation's details; past one page (1,000 messages or the server's byte budget)
 * its messages continue on the next, by the Link the server sent. */
export async function thread(main, conversationId, query, signal) {
  const results = h("div", { ariaLive: "polite" }, loading("the conversation"));
  show(main, h("h1", { tabIndex: -1 }, "Conversation ", shortId(conversationId)), results);
  const base = `#/conversations/${encodeURIComponent(conversationId)}`;
  let details, next;
  try {
    ({ data: details, next } = await get(
      `/conversations/${encodeURIComponent(conversationId)}/details${query}`, { signal }));
  } catch (error) {
    show(results, problem(error));
    return;
  }
  learnNames(details.unique_agents);
  main.querySelector("h1").replaceChildren(details.title || "Untitled conversation", " ",
    shortId(details.id));
  const facts = h("dl", { className: "facts" },
    h("dt", {}, "Started"), h("dd", {}, when(details.created_at)),
    h("dt", {}, "Messages"), h("dd", {}, String(details.total_messages)),
    h("dt", {}, "Unread"), h("dd", {}, String(details.unread_count)),
    h("dt", {}, "State"), h("dd", {}, details.archived ? "archived" : "active"),
    h("dt", {}, "Agents"), h("dd", {}, details.unique_agents.length
      ? h("ul", { className: "inline" }, details.unique_agents.map((a) => h("li", {},
        agentLink(a.id))))
      : "none yet"));
  show(results,
    details.description ? h("p", { className: "description" }, details.description) : null,
    facts,
    Object.keys(details.metadata).length
      ? h("details", {}, h("summary", {}, "Conversation metadata"), json(details.metadata))
      : null,
    details.messages.length ? tree(details.messages)
      : h("p", { className: "empty" }, "No messages in this conversation yet. Send one with " +
        `"conversation_id": "${details.id}" in the body of POST /messages.`),
    pager(base, next && `${base}${next}`, !new URLSearchParams(query).has("cursor")));
}
