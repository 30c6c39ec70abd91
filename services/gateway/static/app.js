// The web page: submit orders, follow them live, browse past orders, watch the venues
// and the market of the form's pair.
// Plain ES modules on top of the gateway's JSON and WebSocket API; no build step.

import { barChart, lineChart } from "./charts.js";
import { amount, clock, dateTime, h, marketOf, orderPrice, shortId, summary, TERMINAL } from "./dom.js";
import { api, apiKey, forgetKey, openSocket, saveKey, wellFormed } from "./auth.js";
import { OrderTimeline } from "./timeline.js";

// The order types the form offers, and the extra fields each one sends.
const ORDER_TYPES = {
  market: { label: "Market", fields: [] },
  limit: { label: "Limit", fields: ["limitPrice", "expiresAt"] },
  sniper: { label: "Sniper", fields: ["maxPrice", "expiresAt"] },
};
const COMMON_FIELDS = ["type", "tokenIn", "tokenOut", "amount", "slippageBps"];
// Left out of the body when empty, so that the API names a required one as missing.
const OPTIONAL_FIELDS = new Set(["limitPrice", "maxPrice", "expiresAt"]);
const PAGE_SIZE = 50;
const MAX_CARDS = 8;
const ANALYTICS_EVERY_MS = 5000;
const HEALTH_EVERY_MS = 10000;
const FEED_RETRY_MS = 5000;
const FEED_MAX_LINES = 100;
// The market is read by polling: prices often (they move every second), the rest less.
const PRICES_EVERY_MS = 1000;
const LADDER_EVERY_MS = 2000;
const MARKET_EVERY_MS = 3000;
const QUOTE_DELAY_MS = 300;

const $ = (selector) => document.querySelector(selector);

// New order ------------------------------------------------------------------------

const form = $("#order-form");
const typeSelect = $("#f-type");

function setUpTypes() {
  for (const [value, type] of Object.entries(ORDER_TYPES)) {
    typeSelect.append(h("option", { value }, type.label));
  }
  typeSelect.addEventListener("change", showTypeFields);
  for (const name of ["tokenIn", "tokenOut", "amount"]) {
    form.elements.namedItem(name).addEventListener("input", () => {
      showPriceUnit();
      formChanged();
    });
  }
  showTypeFields();
}

/** Show the extra fields of the chosen type only; hidden fields are disabled so they are never sent. */
function showTypeFields() {
  const type = typeSelect.value;
  for (const field of form.querySelectorAll("[data-for-types]")) {
    const shown = field.dataset.forTypes.split(" ").includes(type);
    field.hidden = !shown;
    for (const input of field.querySelectorAll("input")) input.disabled = !shown;
  }
  const label = form.querySelector('label[for="f-tokenOut"]');
  label.textContent = type === "sniper" ? label.dataset.labelSniper : label.dataset.labelDefault;
  form.elements.namedItem("tokenOut").placeholder = type === "sniper" ? "e.g. PEPE" : "";
  showPriceUnit();
}

/** Say in which unit prices are given (quote per base) and when a limit order fills. */
function showPriceUnit() {
  const tokenIn = form.elements.namedItem("tokenIn").value.trim().toUpperCase();
  const tokenOut = form.elements.namedItem("tokenOut").value.trim().toUpperCase();
  const known = tokenIn && tokenOut && tokenIn !== tokenOut;
  const market = known ? marketFor(tokenIn, tokenOut) : null;
  for (const unit of form.querySelectorAll("[data-price-unit]")) {
    unit.textContent = market ? `(${market.quote} per ${market.base})` : "";
  }
  const hint = form.querySelector("[data-limit-hint]");
  hint.textContent = !market
    ? ""
    : market.base === tokenIn
      ? `Sells ${market.base} once ${market.base}/${market.quote} is at or above the limit.`
      : `Buys ${market.base} once ${market.base}/${market.quote} is at or below the limit.`;
}

/** Return the symbols of the tokens the page offers: what the venues list, launched ones included. */
function listedTokens() {
  return [...document.querySelectorAll("#tokens option")].map((option) => option.value);
}

/**
 * Return the market {base, quote} of two symbols: as a venue's pool of the pair names it,
 * else by the quote ranking (a token that launched is never the quote).
 */
function marketFor(tokenIn, tokenOut) {
  const pool = marketData.pools.find(
    (p) => (p.base === tokenIn && p.quote === tokenOut) || (p.base === tokenOut && p.quote === tokenIn),
  );
  if (pool) return { base: pool.base, quote: pool.quote };
  const launched = new Set(marketData.launches.map((launch) => launch.token));
  return marketOf(tokenIn, tokenOut, marketData.tokens.filter((token) => !launched.has(token)));
}

function requestBody() {
  const data = new FormData(form);
  const type = String(data.get("type"));
  const body = {};
  for (const name of [...COMMON_FIELDS, ...(ORDER_TYPES[type]?.fields ?? [])]) {
    const raw = String(data.get(name) ?? "").trim();
    if (name === "slippageBps") {
      // An integer goes as a number; anything else as typed, for the API to explain.
      body[name] = /^\d+$/.test(raw) ? Number(raw) : raw;
    } else if (OPTIONAL_FIELDS.has(name) && !raw) {
      continue;
    } else if (name === "expiresAt") {
      const at = new Date(raw);
      // An unreadable date goes as typed, for the API to explain.
      body[name] = Number.isNaN(at.getTime()) ? raw : at.toISOString();
    } else {
      body[name] = raw; // amounts and prices stay decimal strings
    }
  }
  return body;
}

function clearErrors() {
  for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  $("#form-error").textContent = "";
}

/** Show an API error next to the field it names, or under the form. */
function showError(error) {
  const slot = error.field ? form.querySelector(`[data-error-for="${CSS.escape(error.field)}"]`) : null;
  if (slot && !slot.closest("[hidden]")) {
    slot.textContent = error.message;
    const input = form.elements.namedItem(error.field);
    input?.setAttribute("aria-invalid", "true");
    input?.focus();
  } else {
    $("#form-error").textContent = error.message;
  }
}

async function submitOrder(event) {
  event.preventDefault();
  clearErrors();
  const button = $("#submit");
  button.disabled = true;
  try {
    const response = await api("/api/orders/execute", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(requestBody()),
    });
    const answer = await response.json().catch(() => null);
    if (response.ok && answer?.orderId) {
      follow(answer.orderId);
    } else {
      showError(answer?.error ?? { message: `The gateway answered ${response.status}.` });
    }
  } catch (error) {
    showError({ message: `Could not reach the gateway: ${error.message}` });
  } finally {
    button.disabled = false;
  }
}

// Live orders ------------------------------------------------------------------------

const cards = $("#order-cards");
const followed = new Map(); // order id -> OrderTimeline

/** Show an order's timeline on top, opening its WebSocket unless it is already shown. */
function follow(orderId, order = null) {
  const known = followed.get(orderId);
  if (known) {
    cards.prepend(known.element);
    known.element.scrollIntoView({ block: "nearest" });
    return;
  }
  const timeline = new OrderTimeline(orderId, {
    order,
    onDone: () => schedulePastRefresh(),
    onRemove: () => {
      followed.delete(orderId);
      showEmpty();
    },
  });
  followed.set(orderId, timeline);
  cards.prepend(timeline.element);
  timeline.follow();
  timeline.element.scrollIntoView({ block: "nearest" });
  // Keep the newest cards: drop the oldest finished ones beyond the cap (a Map keeps
  // insertion order, so the oldest come first).
  for (const old of [...followed.values()]) {
    if (followed.size <= MAX_CARDS) break;
    if (old.finished) {
      old.element.remove();
      followed.delete(old.orderId);
    }
  }
  showEmpty();
}

function showEmpty() {
  $("#followed-empty").hidden = followed.size > 0;
}

// Past orders ------------------------------------------------------------------------

const pastBody = $("#past-orders tbody");
let pastNext = null;
let pastPages = 0;
let pastTimer = null;

async function loadPast({ older = false } = {}) {
  const status = $("#past-status");
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (older && pastNext) query.set("before", pastNext);
  let page;
  try {
    const response = await api(`/api/orders?${query}`);
    if (!response.ok) throw new Error(`the gateway answered ${response.status}`);
    page = await response.json();
  } catch (error) {
    status.textContent = `Past orders unavailable: ${error.message}`;
    return;
  }
  if (!older) {
    pastBody.replaceChildren();
    pastPages = 0;
  }
  pastPages += 1;
  pastBody.append(...page.orders.map(pastRow));
  pastNext = page.next;
  $("#past-more").hidden = !pastNext;
  status.textContent = pastBody.children.length ? "" : "No orders yet.";
}

function pastRow(order) {
  const open = () => follow(order.orderId, order);
  return h(
    "tr",
    {
      class: "clickable",
      tabindex: 0,
      title: "Show this order's timeline",
      dataset: { orderId: order.orderId, status: order.status },
      onclick: open,
      onkeydown: (event) => (event.key === "Enter" || event.key === " ") && (event.preventDefault(), open()),
    },
    h("td", {}, h("time", { datetime: order.createdAt }, dateTime(order.createdAt))),
    h("td", {}, h("code", { title: order.orderId }, shortId(order.orderId))),
    h("td", { dataset: { type: order.type ?? "market" } }, order.type ?? "market"),
    h("td", {}, `${order.tokenIn} → ${order.tokenOut}`),
    h("td", { class: "num" }, amount(order.amount)),
    h("td", { class: "num", dataset: { limit: orderPrice(order) ?? "" } }, orderPrice(order) ? amount(orderPrice(order), 9) : "–"),
    h("td", {}, h("span", { class: "badge", dataset: { status: order.status } }, order.status)),
    h("td", {}, order.venue ?? "–"),
    h("td", { class: "num" }, amount(order.amountOut)),
    h("td", { class: "num" }, amount(order.executedPrice)),
  );
}

/** Reload the first page soon after orders finish, unless the reader paged further back. */
function schedulePastRefresh() {
  if (pastPages > 1) return;
  clearTimeout(pastTimer);
  // The read model trails the live stream by the projector's lag.
  pastTimer = setTimeout(() => loadPast(), 1000);
}

// Analytics --------------------------------------------------------------------------

const count = (v) => String(Math.round(v));
const ms = (v) => `${Math.round(v)} ms`;

async function loadAnalytics() {
  const status = $("#analytics-status");
  let data;
  try {
    const response = await api("/api/analytics", { headers: { accept: "application/json" } });
    if (response.status === 404) {
      status.textContent = "analytics not available yet";
      return;
    }
    if (response.status === 403) {
      status.textContent = "analytics cover every account: they need an admin key";
      return;
    }
    if (!response.ok) throw new Error(`the gateway answered ${response.status}`);
    data = await response.json();
  } catch (error) {
    status.textContent = `analytics unavailable: ${error.message}`;
    return;
  }
  status.textContent = `updated ${clock(new Date().toISOString())}`;
  renderAnalytics(data ?? {});
}

// The API sends every figure but counts as an exact decimal string; charts need numbers.
const toNumber = (v) => (v === null || v === undefined || v === "" ? null : Number(v));

function numeric(group) {
  const latency = group.confirmLatencyMs ?? {};
  return {
    ...group,
    fillRate: toNumber(group.fillRate),
    confirmLatencyMs: { avg: toNumber(latency.avg), p50: toNumber(latency.p50), p99: toNumber(latency.p99) },
    priceImprovementBps: { avg: toNumber(group.priceImprovementBps?.avg) },
  };
}

function renderAnalytics(data) {
  const venues = (Array.isArray(data.venues) ? data.venues : []).map(numeric);
  const pairs = (Array.isArray(data.pairs) ? data.pairs : []).map(numeric);
  const charts = $("#charts");
  if (!venues.length) {
    charts.replaceChildren(h("p", { class: "muted" }, "No orders routed yet."));
    $("#pairs").replaceChildren();
    return;
  }
  const rates = venues.map((v) => v.fillRate).filter((r) => typeof r === "number");
  // A fill rate may come as a fraction (0..1) or as a percentage; show both as percent.
  const fraction = rates.every((r) => r <= 1);
  const failures = {};
  for (const venue of venues) {
    for (const [code, n] of Object.entries(venue.failureReasons ?? {})) failures[code] = (failures[code] ?? 0) + n;
  }
  charts.replaceChildren(
    barChart({
      title: "Orders routed",
      series: [{ name: "orders", cls: "s-orders" }],
      rows: venues.map((v) => ({ label: v.venue, values: [v.ordersRouted] })),
      format: count,
    }),
    barChart({
      title: "Fill rate",
      series: [{ name: "fill rate", cls: "s-fill" }],
      rows: venues.map((v) => ({ label: v.venue, values: [v.fillRate] })),
      format: (r) => `${(fraction ? r * 100 : r).toFixed(1)}%`,
      max: fraction ? 1 : 100,
    }),
    barChart({
      title: "Confirmation latency",
      series: [{ name: "p50", cls: "s-p50" }, { name: "p99", cls: "s-p99" }],
      rows: venues.map((v) => ({ label: v.venue, values: [v.confirmLatencyMs?.p50, v.confirmLatencyMs?.p99] })),
      format: ms,
    }),
    barChart({
      title: "Failure reasons",
      series: [{ name: "orders", cls: "s-fail" }],
      rows: Object.entries(failures).sort((a, b) => b[1] - a[1]).map(([code, n]) => ({ label: code, values: [n] })),
      format: count,
    }),
  );
  $("#pairs").replaceChildren(pairs.length ? pairsTable(pairs, fraction) : "");
}

function pairsTable(pairs, fraction) {
  const percent = (r) => (typeof r === "number" ? `${(fraction ? r * 100 : r).toFixed(1)}%` : "–");
  const number = (v, unit = "") => (typeof v === "number" ? `${Math.round(v * 100) / 100}${unit}` : "–");
  return h("div", { class: "table-wrap" }, h("table", { class: "pairs" },
    h("thead", {}, h("tr", {},
      ["Pair", "Routed", "Confirmed", "Failed", "Cancelled", "Expired", "Fill rate", "Volume in", "p50", "Improvement"]
        .map((t) => h("th", {}, t)))),
    h("tbody", {}, pairs.map((p) => h("tr", { dataset: { pair: p.pair } },
      h("td", {}, p.pair),
      h("td", { class: "num" }, p.ordersRouted ?? "–"),
      h("td", { class: "num" }, p.confirmed ?? "–"),
      h("td", { class: "num" }, p.failed ?? "–"),
      h("td", { class: "num" }, p.cancelled ?? "–"),
      h("td", { class: "num" }, p.expired ?? "–"),
      h("td", { class: "num" }, percent(p.fillRate)),
      h("td", {}, Object.entries(p.volumeIn ?? {}).map(([token, v]) => `${amount(v, 2)} ${token}`).join(", ") || "–"),
      h("td", { class: "num" }, number(p.confirmLatencyMs?.p50, " ms")),
      h("td", { class: "num" }, number(p.priceImprovementBps?.avg, " bps")))))));
}

// Live feed --------------------------------------------------------------------------

const feedList = $("#feed-list");

function setFeed(state, text) {
  const status = $("#feed-status");
  status.dataset.feed = state;
  status.textContent = text;
}

// Every firehose message carries the cursor just after it: reconnecting from the last
// one receives exactly what was missed.
const WS_BAD_REQUEST = 4400;
const WS_POSITION_GONE = 4410;
let feedCursor = null;

function connectFeed() {
  let opened = false;
  let socket;
  try {
    const query = feedCursor ? `?${new URLSearchParams({ from: feedCursor })}` : "";
    socket = openSocket(`/api/stream${query}`);
  } catch {
    setFeed("unavailable", "feed unavailable");
    return;
  }
  socket.addEventListener("open", () => {
    opened = true;
    setFeed("live", "live");
  });
  socket.addEventListener("message", (message) => {
    try {
      addFeedLine(JSON.parse(message.data));
    } catch (error) {
      console.error("bad feed message", error, message.data);
    }
  });
  socket.addEventListener("close", (close) => {
    if (close.code === WS_BAD_REQUEST || close.code === WS_POSITION_GONE) feedCursor = null;
    // A socket refused before it opened means the stream is not served (yet).
    setFeed(opened ? "reconnecting" : "unavailable", opened ? "reconnecting…" : "feed unavailable");
    setTimeout(connectFeed, FEED_RETRY_MS);
  });
}

function addFeedLine(event) {
  if (event.cursor) feedCursor = event.cursor;
  const line = h(
    "li",
    {
      class: "clickable",
      tabindex: 0,
      dataset: { orderId: event.orderId, status: event.status },
      onclick: () => follow(event.orderId),
      onkeydown: (e) => e.key === "Enter" && follow(event.orderId),
    },
    h("time", { datetime: event.timestamp }, clock(event.timestamp)),
    h("code", {}, shortId(event.orderId)),
    h("span", { class: "badge", dataset: { status: event.status } }, event.status),
    h("span", { class: "what" }, summary(event)),
  );
  feedList.prepend(line);
  while (feedList.children.length > FEED_MAX_LINES) feedList.lastElementChild.remove();
  if (TERMINAL.has(event.status) || event.status === "armed") schedulePastRefresh();
}

// Market -----------------------------------------------------------------------------

// What GET /api/market said last: the venues, the tokens their pools list, the pools, the launches.
const marketData = { venues: [], tokens: [], pools: [], launches: [] };
const addedTokens = new Set(); // launched from this page, until the market lists them
let quoteTimer = null;
let quoteAsked = 0; // answers to older questions are dropped

/** The pair the form trades, {base, quote}, or null while it names no two tokens. */
function formPair() {
  const tokenIn = form.elements.namedItem("tokenIn").value.trim().toUpperCase();
  const tokenOut = form.elements.namedItem("tokenOut").value.trim().toUpperCase();
  return tokenIn && tokenOut && tokenIn !== tokenOut ? marketFor(tokenIn, tokenOut) : null;
}

function formChanged() {
  clearTimeout(quoteTimer);
  quoteTimer = setTimeout(loadQuote, QUOTE_DELAY_MS);
  showPair();
}

function showPair() {
  const pair = formPair();
  const name = pair ? `${pair.base}/${pair.quote}` : "";
  if ($("#market").dataset.pair === name) return;
  $("#market").dataset.pair = name;
  $("#market-pair").textContent = name;
  loadPrices();
  loadLadder();
}

async function loadMarket() {
  let data;
  try {
    const response = await api("/api/market");
    if (!response.ok) throw new Error(`the gateway answered ${response.status}`);
    data = await response.json();
  } catch (error) {
    $("#market-status").textContent = `market unavailable: ${error.message}`;
    return;
  }
  Object.assign(marketData, {
    venues: data.venues ?? [],
    tokens: data.tokens ?? [],
    pools: data.pools ?? [],
    launches: data.launches ?? [],
  });
  for (const token of marketData.tokens) addedTokens.delete(token);
  $("#tokens").replaceChildren(
    ...[...marketData.tokens, ...addedTokens].map((token) => h("option", { value: token })),
  );
  const venue = $("#l-venue");
  const chosen = venue.value;
  if ([...venue.options].map((o) => o.value).join() !== marketData.venues.join()) {
    venue.replaceChildren(...marketData.venues.map((name) => h("option", { value: name }, name)));
    if (marketData.venues.includes(chosen)) venue.value = chosen;
  }
  const list = $("#launches");
  list.replaceChildren(
    ...marketData.launches.map((launch) =>
      h("li", { dataset: { token: launch.token, venue: launch.venue } },
        h("time", { datetime: launch.launchedAt }, clock(launch.launchedAt)), " ",
        h("strong", {}, launch.token), ` on ${launch.venue} at ${amount(launch.price, 9)} ${launch.quote}`)),
  );
  $("#launches-status").textContent = marketData.launches.length ? "" : "No token launched yet.";
  showPriceUnit();
  showPair();
}

async function loadPrices() {
  const pair = formPair();
  const chart = $("#price-chart");
  if (!pair) {
    chart.replaceChildren(h("p", { class: "muted" }, "Name two tokens in the form to see their market."));
    return;
  }
  let data;
  try {
    const response = await api(`/api/market/prices?${new URLSearchParams(pair)}`);
    if (!response.ok) throw new Error(`the gateway answered ${response.status}`);
    data = await response.json();
  } catch (error) {
    $("#market-status").textContent = `prices unavailable: ${error.message}`;
    return;
  }
  if ($("#market").dataset.pair !== `${pair.base}/${pair.quote}`) return; // the form moved on
  $("#market-status").textContent = `updated ${clock(new Date().toISOString())}`;
  const unit = data.quote ? `${data.quote} per ${data.base}` : "";
  chart.replaceChildren(
    data.series.length
      ? lineChart({
          title: `${data.base}/${data.quote} (${unit})`,
          series: data.series.map((one, i) => ({ name: one.venue, cls: `s${i % 3}`, points: one.points })),
          format: price,
        })
      : h("p", { class: "muted" }, `No venue lists ${pair.base}/${pair.quote}.`),
  );
}

async function loadLadder() {
  const pair = formPair();
  const body = $("#ladder tbody");
  const status = $("#ladder-status");
  if (!pair) {
    body.replaceChildren();
    status.textContent = "";
    return;
  }
  let data;
  try {
    const response = await api(`/api/market/ladder?${new URLSearchParams(pair)}`);
    if (!response.ok) throw new Error(`the gateway answered ${response.status}`);
    data = await response.json();
  } catch (error) {
    status.textContent = `limit orders unavailable: ${error.message}`;
    return;
  }
  if ($("#market").dataset.pair !== `${data.base}/${data.quote}`) return;
  // Sells above, buys below, highest price first, as a trader reads a ladder.
  body.replaceChildren(
    ...data.levels.map((level) =>
      h("tr", { dataset: { side: level.side, price: level.price } },
        h("td", { class: "num" }, amount(level.price, 9)),
        h("td", {}, level.side),
        h("td", { class: "num" }, String(level.orders)),
        h("td", { class: "num" }, `${amount(level.amount)} ${level.token}`))),
  );
  status.textContent = data.levels.length ? "" : `No armed limit order on ${data.base}/${data.quote}.`;
}

/** A price for a chart axis: eight significant digits, never an exponent. */
function price(value) {
  return value.toLocaleString("en-US", { maximumSignificantDigits: 8, useGrouping: false });
}

/** Show what the venues would give now for the form's amount, and where it would go. */
async function loadQuote() {
  const preview = $("#quote-preview");
  const tokenIn = form.elements.namedItem("tokenIn").value.trim();
  const tokenOut = form.elements.namedItem("tokenOut").value.trim();
  const asked = form.elements.namedItem("amount").value.trim();
  const question = ++quoteAsked;
  const show = (state, ...content) => {
    preview.dataset.state = state;
    preview.dataset.amount = state === "idle" ? "" : asked;
    if (state !== "ok") {
      delete preview.dataset.venue;
      delete preview.dataset.expectedOut;
    }
    preview.replaceChildren(...content);
  };
  if (!tokenIn || !tokenOut || !asked) {
    show("idle");
    return;
  }
  let response;
  let answer;
  try {
    response = await api(`/api/quotes?${new URLSearchParams({ tokenIn, tokenOut, amount: asked })}`);
    answer = await response.json().catch(() => null);
  } catch (error) {
    if (question === quoteAsked) show("error", `No quote: ${error.message}`);
    return;
  }
  if (question !== quoteAsked) return;
  if (!response.ok) {
    show("error", answer?.error?.message ?? `No quote: the gateway answered ${response.status}.`);
    return;
  }
  const route = answer.route;
  if (!route) {
    show("error", "No venue quotes this pair now.");
    return;
  }
  const others = answer.quotes
    .filter((q) => q.venue !== route.venue && q.amountOut)
    .map((q) => `${q.venue} ${amount(q.amountOut)}`);
  preview.dataset.venue = route.venue;
  preview.dataset.expectedOut = route.expectedOut;
  show("ok",
    `≈ ${amount(route.expectedOut)} ${answer.tokenOut} on `, h("span", { class: "venue" }, route.venue),
    others.length ? ` (${others.join(", ")})` : "");
}

// Launch a token ---------------------------------------------------------------------

const launchForm = $("#launch-form");

function setLaunch(state, text) {
  const result = $("#launch-result");
  result.dataset.launch = state;
  result.textContent = text;
}

async function launchToken(event) {
  event.preventDefault();
  const data = new FormData(launchForm);
  const body = { symbol: String(data.get("symbol") ?? "").trim(), venue: String(data.get("venue") ?? "raydium") };
  const liquidity = String(data.get("liquidityUsd") ?? "").trim();
  if (liquidity) body.liquidityUsd = liquidity; // a decimal string, as every amount
  const button = $("#launch-submit");
  button.disabled = true;
  setLaunch("pending", "launching…");
  try {
    const response = await api("/api/simulate/launch", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => null);
    if (response.ok && answer) {
      const pool = answer.pool ?? answer;
      addToken(pool.base ?? body.symbol.toUpperCase());
      setLaunch("ok", launchText(pool, body));
    } else {
      const error = answer?.error;
      setLaunch("error", error?.message ?? `The gateway answered ${response.status}.`);
    }
  } catch (error) {
    setLaunch("error", `Could not reach the gateway: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function launchText(pool, asked) {
  const pair = pool.base && pool.quote ? `${pool.base}/${pool.quote}` : asked.symbol.toUpperCase();
  const parts = [`Launched ${pair} on ${pool.venue ?? asked.venue}`];
  if (pool.price) parts.push(`at ${amount(pool.price, 9)} ${pool.quote ?? ""}`.trim());
  if (pool.liquidityUsd) parts.push(`with $${amount(pool.liquidityUsd, 2)} liquidity`);
  return parts.join(" ") + (pool.baseMint ? ` (mint ${shortId(pool.baseMint)}…)` : "") + ".";
}

/** Offer a launched token in the token lists at once (a sniper may want it), before the
market lists it. */
function addToken(symbol) {
  if (!symbol || listedTokens().includes(symbol)) return;
  addedTokens.add(symbol);
  $("#tokens").append(h("option", { value: symbol }));
}

// Health -----------------------------------------------------------------------------

async function checkHealth() {
  const badge = $("#health");
  try {
    const response = await fetch("/health");
    const body = await response.json();
    badge.dataset.health = body.status;
    badge.textContent = Object.entries(body.checks ?? {})
      .map(([name, ok]) => `${name} ${ok ? "✓" : "✗"}`)
      .join("  ");
  } catch {
    badge.dataset.health = "down";
    badge.textContent = "gateway unreachable";
  }
}

// The API key ------------------------------------------------------------------------

/** Ask for a key; keep it once the gateway knows it, then start the page with it. */
function askForKey() {
  const keyForm = $("#key-form");
  $("#main").hidden = true;
  keyForm.hidden = false;
  keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = keyForm.elements.namedItem("apiKey").value.trim();
    const error = $("#key-error");
    if (!wellFormed(key)) {
      error.textContent = "That is not an API key.";
      return;
    }
    try {
      const response = await fetch("/api/orders?limit=1", { headers: { authorization: `Bearer ${key}` } });
      if (response.status === 401) {
        error.textContent = "The gateway does not know this key.";
        return;
      }
    } catch (failure) {
      error.textContent = `Could not reach the gateway: ${failure.message}`;
      return;
    }
    saveKey(key);
    keyForm.hidden = true;
    $("#main").hidden = false;
    start();
  });
}

// Start ------------------------------------------------------------------------------

function start() {
  const forget = $("#key-forget");
  forget.hidden = false;
  forget.addEventListener("click", () => {
    forgetKey();
    location.reload();
  });
  form.addEventListener("submit", submitOrder);
  launchForm.addEventListener("submit", launchToken);
  $("#past-refresh").addEventListener("click", () => loadPast());
  $("#past-more").addEventListener("click", () => loadPast({ older: true }));
  loadPast();
  loadAnalytics();
  setInterval(loadAnalytics, ANALYTICS_EVERY_MS);
  loadMarket();
  setInterval(loadMarket, MARKET_EVERY_MS);
  setInterval(loadPrices, PRICES_EVERY_MS);
  setInterval(loadLadder, LADDER_EVERY_MS);
  formChanged();
  connectFeed();
}

setUpTypes();
checkHealth();
setInterval(checkHealth, HEALTH_EVERY_MS);
if (apiKey()) start();
else askForKey();
