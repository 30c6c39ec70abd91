// One order followed live: a card whose timeline grows with each event of the
// order's WebSocket, which replays the history, goes on live and closes with 1000
// after the terminal event.

import { amount, clock, h, shortId, summary, wsUrl } from "./dom.js";

const TERMINAL = new Set(["confirmed", "failed"]);
const WS_NORMAL = 1000;
const WS_UNKNOWN_ORDER = 4404;
const MAX_RECONNECTS = 5;

export class OrderTimeline {
  /** order: what is already known of it (a past-orders row), shown until its history arrives. */
  constructor(orderId, { order = null, onDone = () => {}, onRemove = () => {} } = {}) {
    this.orderId = orderId;
    this.onDone = onDone;
    this.seen = new Map(); // seq -> <li>, so a replayed or repeated event is shown once
    this.startedAt = null;
    this.socket = null;
    this.reconnects = 0;
    this.finished = false;
    this.terminal = false;

    this.title = h("span", { class: "pair" }, order ? pairText(order) : "order");
    this.badge = h("span", { class: "badge", dataset: { status: order?.status ?? "pending" } }, order?.status ?? "…");
    this.note = h("p", { class: "note muted" });
    this.list = h("ol", { class: "timeline" });
    this.element = h(
      "article",
      { class: "order-card", dataset: { orderId, state: "following" } },
      h("header", {},
        this.title,
        h("code", { class: "order-id", title: orderId }, shortId(orderId)),
        this.badge,
        h("button", { type: "button", class: "close", title: "Stop following", "aria-label": "Stop following",
          onclick: () => { this.stop(); this.element.remove(); onRemove(this); } }, "×")),
      this.list,
      this.note,
    );
  }

  /** Open the order's WebSocket: it replays the history, goes on live and closes after the end. */
  follow() {
    const query = new URLSearchParams({ orderId: this.orderId });
    // After a drop, ask only for what was missed; a repeat would be skipped anyway.
    if (this.seen.size) query.set("lastSeq", String(Math.max(...this.seen.keys())));
    const socket = new WebSocket(wsUrl(`/api/orders/execute?${query}`));
    this.socket = socket;
    socket.addEventListener("message", (message) => {
      try {
        this.add(JSON.parse(message.data));
      } catch (error) {
        console.error("bad order event", error, message.data);
      }
    });
    socket.addEventListener("close", (close) => this.closed(close.code));
  }

  stop() {
    this.finished = true;
    this.socket?.close();
  }

  closed(code) {
    if (this.finished) return;
    if (code === WS_UNKNOWN_ORDER) {
      this.finish("unknown", "No such order.");
    } else if (code === WS_NORMAL && this.terminal) {
      this.finish("done", "");
    } else if (this.reconnects < MAX_RECONNECTS) {
      this.reconnects += 1;
      this.note.textContent = `Connection lost; reconnecting (${this.reconnects})…`;
      setTimeout(() => this.finished || this.follow(), 500 * 2 ** this.reconnects);
    } else {
      this.finish("lost", "Connection lost.");
    }
  }

  finish(state, note) {
    this.finished = true;
    this.element.dataset.state = state;
    this.note.textContent = note;
    this.onDone(this);
  }

  /** Show one event in sequence order; an event already shown is ignored. */
  add(event) {
    if (this.seen.has(event.seq)) return;
    if (event.seq === 1) this.startedAt = Date.parse(event.timestamp);
    if (event.status === "pending" && event.details?.spec) this.title.textContent = pairText(event.details.spec);
    this.note.textContent = "";
    const item = entry(event, this.startedAt);
    const later = [...this.seen.keys()].filter((seq) => seq > event.seq).sort((a, b) => a - b)[0];
    this.list.insertBefore(item, later === undefined ? null : this.seen.get(later));
    this.seen.set(event.seq, item);
    const last = Math.max(...this.seen.keys());
    const current = this.seen.get(last).dataset.status;
    this.badge.dataset.status = current;
    this.badge.textContent = current;
    this.terminal = TERMINAL.has(current);
  }
}

function pairText(order) {
  return `${amount(order.amount)} ${order.tokenIn} → ${order.tokenOut}`;
}

function entry(event, startedAt) {
  const at = Date.parse(event.timestamp);
  const elapsed = startedAt !== null && !Number.isNaN(at) ? `+${((at - startedAt) / 1000).toFixed(2)}s` : "";
  return h(
    "li",
    { class: "entry", dataset: { status: event.status, seq: event.seq } },
    h("div", { class: "line" },
      h("span", { class: "status" }, event.status),
      // A failure's reason is in its details below; the line names the code only.
      h("span", { class: "what" }, event.status === "failed" ? event.details?.code : summary(event)),
      h("time", { datetime: event.timestamp, title: clock(event.timestamp) }, elapsed)),
    details(event),
  );
}

function details(event) {
  const d = event.details || {};
  switch (event.status) {
    case "routing":
      return h("div", { class: "details" },
        quotesTable(d.quotes || [], d.venue),
        h("p", { class: "reason" }, "Chosen: ",
          h("strong", { class: "chosen-venue", dataset: { venue: d.venue } }, d.venue),
          d.improvementBps !== null && d.improvementBps !== undefined && d.runnerUp
            ? `, ${d.improvementBps} bps better than ${d.runnerUp}` : "",
          h("br"), d.reason));
    case "confirmed":
      return facts([["amount out", amount(d.amountOut)], ["executed price", amount(d.executedPrice)],
        ["venue", d.venue], ["tx", d.txHash]]);
    case "failed":
      return facts([["code", d.code], ["reason", d.reason]]);
    case "retrying":
      return facts([["retry at", clock(d.retryAt)]]);
    default:
      return null;
  }
}

function quotesTable(quotes, chosen) {
  return h("table", { class: "quotes" },
    h("thead", {}, h("tr", {},
      h("th", {}, "venue"), h("th", { class: "num" }, "out"), h("th", { class: "num" }, "fee"),
      h("th", { class: "num" }, "price"), h("th", { class: "num" }, "ms"), h("th", {}, "error"))),
    h("tbody", {}, quotes.map((q) => h("tr",
      { class: q.venue === chosen ? "chosen" : null, dataset: { venue: q.venue }, "aria-current": q.venue === chosen ? "true" : null },
      h("td", {}, q.venue, q.venue === chosen ? h("span", { class: "tick", title: "chosen" }, " ✓") : null),
      h("td", { class: "num" }, amount(q.amountOut)),
      h("td", { class: "num" }, amount(q.fee)),
      h("td", { class: "num" }, amount(q.price)),
      h("td", { class: "num" }, q.latencyMs ?? ""),
      h("td", { class: "error" }, q.error ?? "")))));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([key, value]) => [h("dt", {}, key), h("dd", {}, value ?? "–")]));
}
