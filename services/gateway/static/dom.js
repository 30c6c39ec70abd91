// Small DOM and formatting helpers shared by the page's modules.
// Every text from the server goes in through textContent, never as HTML.

/** Create an element: h("td", {class: "num", dataset: {venue: "x"}}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Create an SVG element with attributes and children. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Show a decimal string with at most `places` decimals, cut and not rounded (money stays a string). */
export function amount(value, places = 6) {
  if (value === null || value === undefined || value === "") return "–";
  const text = String(value);
  const [whole, fraction = ""] = text.split(".");
  const cut = fraction.slice(0, places).replace(/0+$/, "");
  return cut ? `${whole}.${cut}` : whole;
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

export function clock(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour12: false });
}

export function dateTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return `${date.toLocaleDateString()} ${date.toLocaleTimeString([], { hour12: false })}`;
}

/** Return the WebSocket URL of a path on this page's host. */
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** One line summarising an order event, for the timeline and the feed. */
export function summary(event) {
  const d = event.details || {};
  switch (event.status) {
    case "pending": {
      const spec = d.spec || {};
      return spec.tokenIn ? `${amount(spec.amount)} ${spec.tokenIn} → ${spec.tokenOut}` : "accepted";
    }
    case "routing":
      return `venue ${d.venue}: expects ${amount(d.expectedOut)}`;
    case "building":
      return `min out ${amount(d.minAmountOut)}, attempt ${d.attempt}`;
    case "submitted":
      return `tx ${shortId(d.txHash)}… on ${d.venue}`;
    case "retrying":
      return `${d.code}: ${d.reason} (attempt ${d.attempt})`;
    case "confirmed":
      return `out ${amount(d.amountOut)} at ${amount(d.executedPrice)}`;
    case "failed":
      return `${d.code}: ${d.reason}`;
    default:
      return event.type || "";
  }
}
