// One message as a card, shared by the mailbox, search, the live tail and the thread.

import { agentName } from "../api.js";
import { content, h, json, shortId, when } from "../dom.js";

/** A link to an agent's mailbox, showing its name once known (its short id until then). */
export function agentLink(id) {
  if (!id) return h("span", { className: "muted" }, "nobody (no sender)");
  const link = h("a", { href: `#/agents/${encodeURIComponent(id)}/mail/all`, title: id },
    shortId(id));
  agentName(id).then((name) => {
    if (name !== null) link.replaceChildren(name, " ", shortId(id));
  });
  return link;
}

function chips(message) {
  const found = [];
  if (message.message_type) found.push(h("span", { className: "chip" }, message.message_type));
  if (message.importance !== null && message.importance !== undefined) {
    found.push(h("span", { className: "chip" }, `importance ${message.importance}`));
  }
  if (message.status) found.push(h("span", { className: "chip" }, message.status));
  return found;
}

/** What a mailbox item says about its reader: unread, or read at a time. */
function readState(item) {
  if (item.direction !== "received") return null;
  return item.is_read
    ? h("span", { className: "read" }, "read ", when(item.read_at))
    : h("span", { className: "badge unread" }, "unread");
}

/** The footer: its thread, the message it answers, its metadata. */
export function links(message, { thread = true } = {}) {
  const parts = [];
  if (thread && message.conversation_id) {
    parts.push(h("a", { href: `#/conversations/${encodeURIComponent(message.conversation_id)}` },
      "Open the thread"));
  }
  if (message.parent_message_id) {
    parts.push(h("span", { className: "muted" }, "reply to ", shortId(message.parent_message_id)));
  }
  if (message.msg_metadata) {
    parts.push(h("details", {}, h("summary", {}, "msg_metadata"), json(message.msg_metadata)));
  }
  return parts.length ? h("footer", {}, parts) : null;
}

/** A mailbox (or search, or stream) item. */
export function mailboxCard(item) {
  const who = item.direction === "sent"
    ? h("span", { className: "badge sent" }, "sent")
    : h("span", {}, h("span", { className: "badge received" }, "received"), " from ",
      agentLink(item.sender_id));
  return h(
    "article",
    { className: "message", dataset: { id: item.id } },
    h("header", {}, who, " ", when(item.sent_at), " ", readState(item), chips(item)),
    content(item.content),
    links(item),
  );
}

export { chips };
