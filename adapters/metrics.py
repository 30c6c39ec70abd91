"""Every Prometheus metric of the system, in one place (README "Metrics").

Each process registers all of them and moves those it owns; one that a process never
touches shows no samples there. Names follow Prometheus conventions: ``_total`` for
counters, ``_seconds`` for durations, base units only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from events.messages import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderConfirmed,
    OrderExpired,
    OrderFailed,
    OrderRouted,
    SwapAttemptFailed,
    TransactionSubmitted,
)

# No ``*_created`` series: a timestamp per label set that no dashboard here uses.
disable_created_metrics()

# Latencies of an order's steps and of venue calls: from a millisecond to a minute.
_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

ORDERS_SUBMITTED = Counter(
    "oee_orders_submitted_total", "Orders the gateway accepted (202), by type.", ["type"]
)
ORDERS_ENDED = Counter(
    "oee_orders_ended_total",
    "Orders the engine saw end, by type and final status.",
    ["type", "status"],
)
EVENTS_WRITTEN = Counter(
    "oee_events_written_total", "Messages a process wrote to the log, by type.", ["type"]
)
EVENTS_CONSUMED = Counter(
    "oee_events_consumed_total",
    "Messages a consumer handled, by consumer and type.",
    ["consumer", "type"],
)
ORDER_STEP_SECONDS = Histogram(
    "oee_order_step_seconds",
    "Time between an order's steps, from the events' own timestamps.",
    ["step"],
    buckets=_SECONDS,
)
VENUE_CALL_SECONDS = Histogram(
    "oee_venue_call_seconds",
    "Venue calls as the caller timed them, by venue and call.",
    ["venue", "call"],
    buckets=_SECONDS,
)
VENUE_CALL_ERRORS = Counter(
    "oee_venue_call_errors_total",
    "Venue calls that failed (transport error, timeout or an error answer).",
    ["venue", "call"],
)
SWAP_RETRIES = Counter(
    "oee_swap_retries_total", "Swap attempts that failed and will be retried.", ["code"]
)
DEAD_LETTERS = Counter(
    "oee_dead_letters_total", "Messages set aside as dead letters, by consumer.", ["consumer"]
)
CONSUMER_LAG = Gauge(
    "oee_consumer_lag",
    "Messages on the log a consumer has not handled yet (at the last scrape).",
    ["group", "topic", "partition"],
)
PROJECTOR_BATCH_SIZE = Histogram(
    "oee_projector_batch_size",
    "Events per projector transaction, by read model.",
    ["projection"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
PROJECTOR_COMMIT_SECONDS = Histogram(
    "oee_projector_commit_seconds",
    "Time to apply and commit one projector batch, by read model.",
    ["projection"],
    buckets=_SECONDS,
)
WEBSOCKETS_OPEN = Gauge("oee_websockets_open", "WebSockets open, by kind.", ["kind"])
WEBSOCKETS_CLOSED = Counter(
    "oee_websockets_closed_total", "WebSockets closed, by kind and close code.", ["kind", "code"]
)
ARMED_ORDERS = Gauge("oee_armed_orders", "Limit and sniper orders armed and watched.")
TRIGGERS_FIRED = Counter("oee_triggers_fired_total", "Armed orders fired, by type.", ["type"])
HTTP_REQUESTS = Counter(
    "oee_http_requests_total", "HTTP requests answered, by route and status.", ["route", "status"]
)
HTTP_SECONDS = Histogram(
    "oee_http_request_seconds", "HTTP request durations, by route.", ["route"], buckets=_SECONDS
)

_TERMINAL = (OrderConfirmed, OrderFailed, OrderCancelled, OrderExpired)


class StepClock:
    """Time an order's steps from its events as a consumer of every event sees them.

    Remembers, per order in flight, when it was accepted, routed and submitted, and
    forgets it when the order ends. An order whose start this process did not see
    (it restarted meanwhile) is timed only from the steps it saw.
    """

    def __init__(self) -> None:
        self._type: dict[uuid.UUID, str] = {}
        self._at: dict[uuid.UUID, dict[str, datetime]] = {}

    def observe(self, event: Event) -> None:
        """Record ``event``'s step and its latency from the step before it."""
        order = event.order_id
        seen = self._at.setdefault(order, {})
        at = event.occurred_at
        if isinstance(event, OrderAccepted):
            self._type[order] = event.spec.order_type
            seen["accepted"] = at
        elif isinstance(event, OrderRouted):
            self._step("accepted_to_routed", seen.get("accepted"), at)
            seen["routed"] = at
        elif isinstance(event, TransactionSubmitted):
            self._step("routed_to_submitted", seen.get("routed"), at)
            seen["submitted"] = at
        elif isinstance(event, SwapAttemptFailed):
            SWAP_RETRIES.labels(event.code).inc()
        elif isinstance(event, _TERMINAL):
            if isinstance(event, OrderConfirmed):
                self._step("submitted_to_confirmed", seen.get("submitted"), at)
            self._step("submit_to_terminal", seen.get("accepted"), at)
            ORDERS_ENDED.labels(self._type.pop(order, "unknown"), _status(event)).inc()
            self._at.pop(order, None)

    def forget(self) -> None:
        """Stop timing every order in flight (they may end elsewhere now)."""
        self._type.clear()
        self._at.clear()

    def in_flight(self) -> int:
        """Return how many orders it is timing."""
        return len(self._at)

    @staticmethod
    def _step(step: str, since: datetime | None, at: datetime) -> None:
        if since is not None:
            ORDER_STEP_SECONDS.labels(step).observe(max(0.0, (at - since).total_seconds()))


def _status(event: Event) -> str:
    return {
        OrderConfirmed: "confirmed",
        OrderFailed: "failed",
        OrderCancelled: "cancelled",
        OrderExpired: "expired",
    }[type(event)]


def count_written(types: Iterable[str]) -> None:
    """Count messages written to the log by their type."""
    for kind in types:
        EVENTS_WRITTEN.labels(kind).inc()
