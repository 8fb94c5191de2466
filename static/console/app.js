// The console's entry: sign-in, the header, and a router from the page's #hash to a view.

import { role, signIn, signOut, signedIn } from "./api.js";
import { h, problem, show } from "./dom.js";
import { conversations } from "./views/conversations.js";
import { directory } from "./views/directory.js";
import { mailbox } from "./views/mailbox.js";
import { search } from "./views/search.js";
import { tail } from "./views/tail.js";
import { thread } from "./views/thread.js";

const main = document.getElementById("main");
const account = document.getElementById("account");
const nav = document.getElementById("nav");
const UUID = "([0-9a-fA-F-]{36})";
const ROUTES = [
  [new RegExp(`^/agents/${UUID}/mail/(\\w+)$`), (m, q, s) => mailbox(main, m[1], m[2], q, s)],
  [new RegExp(`^/agents/${UUID}/tail$`), (m, q, s) => tail(main, m[1], s)],
  [new RegExp(`^/agents/${UUID}/search$`), (m, q, s) => search(main, m[1], q, s)],
  [new RegExp(`^/agents/${UUID}$`), (m) => { location.replace(`#/agents/${m[1]}/mail/all`); }],
  [new RegExp(`^/conversations/${UUID}$`), (m, q, s) => thread(main, m[1], q, s)],
  [/^\/conversations$/, (m, q, s) => conversations(main, q, s)],
  [/^\/agents$/, (m, q, s) => directory(main, q, s)],
];

const WHO = {
  admin: "Signed in with the admin token: every agent's mail.",
  agent: "Signed in with an agent key: that agent's mail and conversations only.",
  open: "This service runs with MAILROOM_AUTH=off: anyone can read everything.",
};

function signInForm(message) {
  nav.hidden = true;
  account.replaceChildren();
  const key = h("input", { id: "key", type: "password", autocomplete: "off", required: true });
  key.setAttribute("spellcheck", "false");
  key.setAttribute("autocapitalize", "off");
  const error = h("p", { className: "problem", role: "alert", hidden: !message }, message || "");
  const button = h("button", { type: "submit" }, "Sign in");
  // No action, no method and no name on the input: the key never becomes part of a URL,
  // even if the form were submitted before this module runs (CSP form-action 'none' too).
  const form = h("form", { className: "sign-in", autocomplete: "off" },
    h("h1", { tabIndex: -1 }, "Sign in"),
    h("p", {}, "Paste the admin token (MAILROOM_ADMIN_TOKEN) to see every agent, or an " +
      "agent's API key to see what that agent sees."),
    h("label", { htmlFor: "key" }, "Admin token or agent key"), key, button, error,
    h("p", { className: "muted" }, "The key stays in this browser tab only (sessionStorage) " +
      "and is sent only to this server, in the Authorization header. Closing the tab forgets it."));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const typed = key.value.trim();
    if (!typed) {
      show(error, "Paste a key first.");
      error.hidden = false;
      return;
    }
    button.disabled = true;
    button.textContent = "Checking…";
    error.hidden = true;
    try {
      await signIn(typed);
      key.value = "";
      if (!location.hash || location.hash === "#/sign-in") location.hash = "#/agents";
      else route();
    } catch (failure) {
      error.textContent = failure.status === 401
        ? "This key was refused: it is neither the admin token nor a current agent key. " +
          "Check that you pasted all of it; an agent key stops working once a new one is issued."
        : failure.message;
      error.hidden = false;
      key.focus();
    } finally {
      button.disabled = false;
      button.textContent = "Sign in";
    }
  });
  show(main, form);
  key.focus();
}

function header() {
  nav.hidden = false;
  const out = h("button", { type: "button", className: "link" }, "Sign out");
  out.addEventListener("click", () => {
    signOut();
    current?.abort();
    history.replaceState(null, "", location.pathname); // no hashchange: the message stays
    signInForm("Signed out. This tab has forgotten the key.");
  });
  account.replaceChildren(h("span", { className: "who" }, WHO[role()]), out);
  for (const link of nav.querySelectorAll("a")) {
    const here = location.hash.startsWith(link.getAttribute("href"));
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

let current = null;

async function route() {
  current?.abort();
  if (!signedIn()) {
    signInForm();
    return;
  }
  header();
  const controller = (current = new AbortController());
  const hash = location.hash.slice(1) || "/agents";
  const [path, query = ""] = hash.split(/\?(.*)/s);
  const search = query ? `?${query}` : "";
  const found = ROUTES.map(([pattern, view]) => [pattern.exec(path), view])
    .find(([match]) => match);
  main.setAttribute("aria-busy", "true");
  try {
    if (!found) show(main, h("h1", { tabIndex: -1 }, "Not found"),
      h("p", {}, "The console has no such page. "), h("a", { href: "#/agents" }, "See the agents"));
    else {
      const view = found[1](found[0], search, controller.signal);
      main.focus({ preventScroll: true }); // keyboard users start at the new content
      await view;
    }
  } catch (error) {
    if (error.name !== "AbortError") show(main, problem(error));
    if (error.status === 401) signInForm(error.message);
  } finally {
    if (current === controller) main.removeAttribute("aria-busy");
  }
}

// The skip link moves focus without touching the hash, which is the router's.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", route);
route();
