// Small DOM and formatting helpers shared by the page's modules.
// Every text from the server goes in through textContent, never as HTML.

/** The statuses an order ends in: its WebSocket closes after them. */
export const TERMINAL = new Set(["confirmed", "failed", "cancelled", "expired"]);

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

// The tokens prices are quoted in, best first (as domain/pricing.py).
const QUOTE_PRIORITY = ["USDC", "USDT", "SOL"];

/**
 * Return the market of two symbols, {base, quote}: prices are in quote per one base.
 * listed: the listed symbols in their order; a token not among them is never the quote.
 */
export function marketOf(a, b, listed = []) {
  const rank = (symbol) => {
    const quote = QUOTE_PRIORITY.indexOf(symbol);
    if (quote >= 0) return quote;
    const index = listed.indexOf(symbol);
    return QUOTE_PRIORITY.length + (index >= 0 ? index : listed.length);
  };
  const [quote, base] = [a, b].sort((x, y) => rank(x) - rank(y) || (x < y ? -1 : x > y ? 1 : 0));
  return { base, quote };
}

/** Return an order's limit price (limit) or max price (sniper), or null. */
export function orderPrice(order) {
  return order?.limitPrice ?? order?.maxPrice ?? null;
}

/** Describe an order: "1.5 SOL → USDC", with its type and price when it is not a market order. */
export function orderText(order) {
  const type = order.type ?? order.orderType ?? "market";
  const pair = `${amount(order.amount)} ${order.tokenIn} → ${order.tokenOut}`;
  if (type === "limit") return `${pair}, limit ${amount(order.limitPrice, 9)}`;
  if (type === "sniper") return `${pair}, sniper${order.maxPrice ? ` max ${amount(order.maxPrice, 9)}` : ""}`;
  return pair;
}

/** One line summarising an order event, for the timeline and the feed. */
export function summary(event) {
  const d = event.details || {};
  switch (event.status) {
    case "pending": {
      const spec = d.spec || {};
      return spec.tokenIn ? orderText(spec) : "accepted";
    }
    case "armed":
      return d.reason ?? "waiting";
    case "triggered": {
      const where = [d.price ? `at ${amount(d.price, 9)}` : "", d.venue ? `on ${d.venue}` : ""].filter(Boolean);
      return where.join(" ") || d.reason || "triggered";
    }
    case "cancelled":
      return d.reason ?? "cancelled";
    case "expired":
      return d.expiresAt ? `expired at ${dateTime(d.expiresAt)}` : "expired";
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
