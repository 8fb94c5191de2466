// Building the page: every piece of data becomes text (textContent), never HTML.

/** An element: h("a", {href: "#/x", className: "y"}, "text", otherNode). */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("aria") || name === "role" || name === "for") {
      node.setAttribute(name.replace(/^aria([A-Z])/, (_, c) => "aria-" + c.toLowerCase()), value);
    } else node[name] = value;
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace what `node` shows. */
export function show(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

// Microseconds are cut to milliseconds: Date parses three fractional digits.
function parseInstant(text) {
  return new Date(text.replace(/(\.\d{3})\d+/, "$1"));
}

const LOCAL = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** A timestamp in the viewer's local time; the exact UTC instant on hover. */
export function when(text) {
  if (!text) return h("span", { className: "muted" }, "never");
  const utc = text.replace("T", " ").replace(/(Z|\+00:00)$/, " UTC");
  return h("time", { dateTime: text, title: utc }, LOCAL.format(parseInstant(text)));
}

/** A short, copyable form of a UUID: its first 8 digits, the whole id on hover. */
export function shortId(id) {
  return h("code", { className: "id", title: id }, String(id).slice(0, 8));
}

const FOLD_CHARACTERS = 600;
const FOLD_LINES = 8;

/** Message content as text; a long one folded behind a button that unfolds it. */
export function content(text) {
  const body = h("div", { className: "content" }, text);
  const lines = text.split("\n").length;
  if (text.length <= FOLD_CHARACTERS && lines <= FOLD_LINES) return body;
  body.classList.add("folded");
  const label = () =>
    body.classList.contains("folded")
      ? `Show all ${text.length.toLocaleString()} characters`
      : "Fold";
  const toggle = h("button", { type: "button", className: "link", ariaExpanded: "false" }, label());
  toggle.addEventListener("click", () => {
    const folded = body.classList.toggle("folded");
    toggle.setAttribute("aria-expanded", String(!folded));
    toggle.textContent = label();
  });
  return h("div", {}, body, toggle);
}

/** A JSON value as indented text. */
export function json(value) {
  return h("pre", { className: "json" }, JSON.stringify(value, null, 2));
}

/** The loading state of a view. */
export function loading(what) {
  return h("p", { className: "loading", role: "status" }, `Loading ${what}…`);
}

/** An error of the API or the network, said so that the operator knows what to do. */
export function problem(error) {
  return h("div", { className: "problem", role: "alert" }, error.message || String(error));
}

/** A table whose cells carry their column's name (shown as labels on narrow screens). */
export function table(caption, columns, rows) {
  return h(
    "table",
    {},
    h("caption", { className: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, columns.map((name) => h("th", { scope: "col" }, name)))),
    h(
      "tbody",
      {},
      rows.map((cells) =>
        h(
          "tr",
          {},
          cells.map((cell, index) => h("td", { dataset: { label: columns[index] } }, cell)),
        ),
      ),
    ),
  );
}

/** Links to the first and the next page; `next` is the hash of the next page or null. */
export function pager(first, next, atStart) {
  const links = [];
  if (!atStart) links.push(h("a", { href: first }, "← First page"));
  if (next) links.push(h("a", { href: next, rel: "next" }, "Next page →"));
  if (!links.length) return null;
  return h("nav", { className: "pager", ariaLabel: "Pages" }, links);
}
