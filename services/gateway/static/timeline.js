// One order followed live: a card whose timeline grows with each event of the
// order's WebSocket, which replays the history, goes on live and closes with 1000
// after the terminal event. While the order is armed the card offers to cancel it.

import { api, openSocket } from "./auth.js";
import { amount, clock, dateTime, h, orderText, shortId, summary, TERMINAL } from "./dom.js";

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

    this.title = h("span", { class: "pair" }, order ? orderText(order) : "order");
    this.badge = h("span", { class: "badge", dataset: { status: order?.status ?? "pending" } }, order?.status ?? "…");
    this.cancelButton = h("button", { type: "button", class: "secondary cancel", dataset: { action: "cancel" },
      title: "Cancel this order while it waits", hidden: true, onclick: () => this.cancel() }, "Cancel");
    this.cancelResult = h("p", { class: "cancel-result", role: "status", hidden: true });
    this.note = h("p", { class: "note muted" });
    this.list = h("ol", { class: "timeline" });
    this.element = h(
      "article",
      { class: "order-card", dataset: { orderId, state: "following", orderType: order?.type ?? "" } },
      h("header", {},
        this.title,
        h("code", { class: "order-id", title: orderId }, shortId(orderId)),
        this.badge,
        this.cancelButton,
        h("button", { type: "button", class: "close", title: "Stop following", "aria-label": "Stop following",
          onclick: () => { this.stop(); this.element.remove(); onRemove(this); } }, "×")),
      this.cancelResult,
      this.list,
      this.note,
    );
    this.showStatus(order?.status ?? null);
  }

  /** Ask the gateway to cancel the order; the cancelled event then arrives on the socket. */
  async cancel() {
    this.cancelButton.disabled = true;
    let response;
    let answer = null;
    try {
      response = await api(`/api/orders/${encodeURIComponent(this.orderId)}/cancel`, { method: "POST" });
      answer = await response.json().catch(() => null);
    } catch (error) {
      this.cancelled("error", `Could not reach the gateway: ${error.message}`);
      return;
    }
    const error = answer?.error;
    if (response.status === 200) {
      this.cancelled("cancelled", "Cancelled.");
    } else if (response.status === 202) {
      this.cancelled("requested", "Cancel requested; waiting for the engine…");
    } else if (response.status === 409 && error) {
      // Too late: it was triggered, or it ended, meanwhile (error.status says which).
      const status = error.status ?? "";
      this.cancelled("refused", `Not cancelled${status ? ` (${status})` : ""}: ${error.message}`, status);
    } else {
      this.cancelled("error", error?.message ?? `The gateway answered ${response.status}.`);
    }
  }

  cancelled(outcome, text, status = "") {
    this.cancelResult.hidden = false;
    this.cancelResult.dataset.cancel = outcome;
    if (status) this.cancelResult.dataset.status = status;
    this.cancelResult.textContent = text;
    this.cancelButton.disabled = false;
    this.showStatus(this.status);
  }

  /** Show the order's current status: the badge, and the Cancel button while it is armed. */
  showStatus(status) {
    this.status = status;
    if (status) {
      this.badge.dataset.status = status;
      this.badge.textContent = status;
    }
    this.cancelButton.hidden = status !== "armed";
  }

  /** Open the order's WebSocket: it replays the history, goes on live and closes after the end. */
  follow() {
    const query = new URLSearchParams({ orderId: this.orderId });
    // After a drop, ask only for what was missed; a repeat would be skipped anyway.
    if (this.seen.size) query.set("lastSeq", String(Math.max(...this.seen.keys())));
    const socket = openSocket(`/api/orders/execute?${query}`);
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
    if (event.status === "pending" && event.details?.spec) {
      this.title.textContent = orderText(event.details.spec);
      this.element.dataset.orderType = event.details.spec.orderType ?? "market";
    }
    this.note.textContent = "";
    const item = entry(event, this.startedAt);
    const later = [...this.seen.keys()].filter((seq) => seq > event.seq).sort((a, b) => a - b)[0];
    this.list.insertBefore(item, later === undefined ? null : this.seen.get(later));
    this.seen.set(event.seq, item);
    const last = Math.max(...this.seen.keys());
    const current = this.seen.get(last).dataset.status;
    this.showStatus(current);
    this.terminal = TERMINAL.has(current);
  }
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
    case "triggered":
      return facts([["price", amount(d.price, 9)], ["venue", d.venue], ["reason", d.reason]]);
    case "expired":
      return facts([["expires at", dateTime(d.expiresAt)]]);
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
