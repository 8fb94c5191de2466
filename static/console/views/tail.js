// The live tail of an agent's inbox: its unread messages, then each new one as it arrives,
// through GET /agents/{agent_id}/messages/stream. It goes on across server restarts.

import { h, show } from "../dom.js";
import { follow } from "../sse.js";
import { agentHeader } from "./mailbox.js";
import { mailboxCard } from "./message.js";

const KEEP = 500; // messages shown at most; the oldest go first

export async function tail(main, agentId, signal) {
  const status = h("p", { className: "status", role: "status" }, "Connecting…");
  const list = h("ol", { className: "messages tail", reversed: true });
  const empty = h("p", { className: "empty" }, "No unread messages yet: new ones appear here " +
    "as they arrive, newest on top.");
  show(main, ...(await agentHeader(agentId, "tail")), status, empty, list);
  let count = 0;
  const states = {
    connecting: (resuming) => resuming ? "Reconnecting, resuming after the last message shown…"
      : "Connecting…",
    live: () => "Live: waiting for messages.",
    waiting: (ms) => `Disconnected; trying again in ${Math.round(ms / 100) / 10} s.`,
    stopped: (why) => `Stopped: ${why}`,
  };
  await follow(`/agents/${encodeURIComponent(agentId)}/messages/stream`, {
    signal,
    onStatus(state, detail) {
      status.textContent = states[state](detail);
      status.dataset.state = state;
    },
    onEvent(event) {
      if (event.type !== "message") return;
      let item;
      try {
        item = JSON.parse(event.data);
      } catch {
        return;
      }
      empty.hidden = true;
      count += 1;
      status.textContent = `Live: ${count} message${count === 1 ? "" : "s"} so far.`;
      list.prepend(h("li", { className: "new" }, mailboxCard(item)));
      while (list.children.length > KEEP) list.lastElementChild.remove();
    },
  });
}
