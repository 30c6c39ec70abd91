"""The analytics projection's pure parts: folding events into facts, planning a batch, the table."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cli.analytics import format_table
from domain.lifecycle import IllegalTransition, OrderState, decide, envelope_after, evolve
from events.messages import (
    Event,
    OrderArmed,
    OrderCancelled,
    OrderConfirmed,
    OrderExpired,
    OrderFailed,
    OrderRouted,
    OrderSpec,
    OrderTriggered,
    SubmitOrder,
    SwapAttemptFailed,
    TransactionBuilt,
    TransactionSubmitted,
    VenueQuote,
    encode,
)
from projections.analytics.handler import (
    AnalyticsFacts,
    facts_to_row,
    fold_facts,
    pair_of,
    plan,
    row_to_facts,
)
from projections.batch import decode_records
from projections.contract import LogRecord

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class OrderBuilder:
    """Build one order's events in lifecycle order, each stamped ``at_ms`` after ``start``.

    Every event is folded with ``lifecycle.evolve`` as it is built, so a history
    the builder makes is one the engine could have written.
    """

    def __init__(
        self,
        token_in: str = "SOL",
        token_out: str = "USDC",
        amount: str = "1.5",
        start: datetime = T0,
        *,
        limit_price: str | None = None,
        expires_in_ms: int | None = None,
    ) -> None:
        """Build a market order, or a limit order when ``limit_price`` is given."""
        self.start = start
        spec = OrderSpec(
            order_type="market" if limit_price is None else "limit",
            token_in=token_in,
            token_out=token_out,
            amount=Decimal(amount),
            slippage_bps=50,
            limit_price=None if limit_price is None else Decimal(limit_price),
            expires_at=None
            if expires_in_ms is None
            else start + timedelta(milliseconds=expires_in_ms),
        )
        command = SubmitOrder(
            message_id=uuid.uuid4(),
            order_id=uuid.uuid4(),
            seq=0,
            occurred_at=start,
            correlation_id=uuid.uuid4(),
            spec=spec,
            request_hash="hash-" + amount,
        )
        self.events: list[Event] = list(decide(None, command, start))
        self.state: OrderState = evolve(None, self.events[0])

    @property
    def order_id(self) -> uuid.UUID:
        return self.state.order_id

    def _add(self, event_type: type[Event], at_ms: int, **fields: Any) -> OrderBuilder:
        at = self.start + timedelta(milliseconds=at_ms)
        event = event_type(**envelope_after(self.state, self.events[-1], at), **fields)
        self.state = evolve(self.state, event)
        self.events.append(event)
        return self

    def routed(self, at_ms: int, venue: str, improvement_bps: str | None) -> OrderBuilder:
        others = [v for v in ("meteora", "raydium") if v != venue]
        return self._add(
            OrderRouted,
            at_ms,
            quotes=(VenueQuote(venue=venue, amount_out=Decimal("100")),),
            venue=venue,
            expected_out=Decimal("100"),
            reason=f"{venue} gives the most",
            runner_up=None if improvement_bps is None else others[0],
            improvement_bps=None if improvement_bps is None else Decimal(improvement_bps),
        )

    def built(self, at_ms: int) -> OrderBuilder:
        attempt = self.state.attempt + 1
        return self._add(
            TransactionBuilt,
            at_ms,
            venue=self.state.venue,
            min_amount_out=Decimal("99.5"),
            client_ref=f"{self.order_id}:{attempt}",
            attempt=attempt,
            steps=(f"swap:{self.state.venue}",),
        )

    def submitted(self, at_ms: int) -> OrderBuilder:
        return self._add(
            TransactionSubmitted,
            at_ms,
            venue=self.state.venue,
            tx_hash=f"tx-{self.order_id}-{self.state.attempt}",
            attempt=self.state.attempt,
        )

    def attempt_failed(self, at_ms: int, code: str) -> OrderBuilder:
        return self._add(
            SwapAttemptFailed,
            at_ms,
            venue=self.state.venue,
            attempt=self.state.attempt,
            code=code,
            reason=code.lower(),
            retry_at=self.start + timedelta(milliseconds=at_ms + 1000),
        )

    def confirmed(self, at_ms: int, amount_out: str = "99.8") -> OrderBuilder:
        return self._add(
            OrderConfirmed,
            at_ms,
            venue=self.state.venue,
            tx_hash=self.state.tx_hash,
            amount_out=Decimal(amount_out),
            executed_price=Decimal(amount_out) / self.state.spec.amount,
        )

    def failed(self, at_ms: int, code: str) -> OrderBuilder:
        return self._add(
            OrderFailed, at_ms, code=code, reason=code.lower(), attempt=self.state.attempt or None
        )

    def armed(self, at_ms: int, reason: str = "waiting for the limit") -> OrderBuilder:
        return self._add(OrderArmed, at_ms, reason=reason)

    def triggered(self, at_ms: int, price: str = "150", venue: str = "raydium") -> OrderBuilder:
        return self._add(
            OrderTriggered, at_ms, reason="limit reached", price=Decimal(price), venue=venue
        )

    def cancelled(self, at_ms: int) -> OrderBuilder:
        return self._add(OrderCancelled, at_ms, reason="cancelled by the client")

    def expired(self, at_ms: int) -> OrderBuilder:
        assert self.state.spec.expires_at is not None, "build it with expires_in_ms"
        return self._add(OrderExpired, at_ms, expires_at=self.state.spec.expires_at)

    def through_submission(self, venue: str, improvement_bps: str | None) -> OrderBuilder:
        """Route, build and submit (at 200 ms)."""
        return self.routed(100, venue, improvement_bps).built(150).submitted(200)


def records_of(events: list[Event], first_offset: int = 0) -> list[LogRecord]:
    return [
        LogRecord("orders.events", 0, first_offset + i, str(e.order_id).encode(), encode(e), 0)
        for i, e in enumerate(events)
    ]


def fold_all(events: list[Event]) -> AnalyticsFacts:
    facts: AnalyticsFacts | None = None
    for event in events:
        facts = fold_facts(facts, event)
    assert facts is not None
    return facts


def ms(milliseconds: int) -> datetime:
    return T0 + timedelta(milliseconds=milliseconds)


# pair_of ----------------------------------------------------------------------------


def test_pair_of_either_direction_gives_the_same_sorted_pair() -> None:
    assert pair_of("USDC", "SOL") == pair_of("SOL", "USDC") == "SOL/USDC"
    assert pair_of("SOL", "BONK") == "BONK/SOL"


# fold -------------------------------------------------------------------------------


def test_fold_accepted_order_has_its_pair_and_amount_and_no_venue() -> None:
    order = OrderBuilder("USDC", "SOL", "250")

    facts = fold_facts(None, order.events[0])

    assert facts == AnalyticsFacts(
        order_id=order.order_id,
        seq=1,
        status="pending",
        pair="SOL/USDC",
        token_in="USDC",
        amount_in=Decimal("250"),
    )
    assert not facts.routed


def test_fold_confirmed_order_has_venue_improvement_and_both_times() -> None:
    order = OrderBuilder().through_submission("raydium", "17.86").confirmed(300, "224.1")

    facts = fold_all(order.events)

    assert (facts.status, facts.seq, facts.venue, facts.routed) == ("confirmed", 5, "raydium", True)
    assert facts.improvement_bps == Decimal("17.86")
    assert (facts.submitted_attempt, facts.submitted_at, facts.confirmed_at) == (
        1,
        ms(200),
        ms(300),
    )
    assert (facts.amount_out, facts.failure_code) == (Decimal("224.1"), None)


def test_fold_rerouted_order_takes_the_latest_routing_venue_and_improvement() -> None:
    order = (
        OrderBuilder()
        .through_submission("raydium", "3.00")
        .attempt_failed(2200, "SLIPPAGE_EXCEEDED")
        .routed(3200, "meteora", None)
    )

    facts = fold_all(order.events)

    # The second routing found no runner-up: its null replaces the first's 3.00.
    assert (facts.venue, facts.improvement_bps, facts.status) == ("meteora", None, "routing")


def test_fold_order_confirmed_on_a_retry_keeps_the_confirming_attempts_submission() -> None:
    order = (
        OrderBuilder()
        .through_submission("raydium", "12.50")
        .attempt_failed(2200, "SLIPPAGE_EXCEEDED")
        .routed(3200, "raydium", "20.00")
        .built(3250)
        .submitted(3300)
        .confirmed(3600)
    )

    facts = fold_all(order.events)

    # Latency 300 ms from the second submission, not 3400 ms from the first.
    assert (facts.submitted_attempt, facts.submitted_at, facts.confirmed_at) == (
        2,
        ms(3300),
        ms(3600),
    )
    assert facts.improvement_bps == Decimal("20.00")


def test_fold_same_attempt_submitted_again_keeps_the_first_submission_time() -> None:
    # The confirmation failed on the network; the venue then had the swap after all,
    # so the engine follows it (retrying -> submitted) under the same attempt.
    order = (
        OrderBuilder()
        .through_submission("meteora", "5.00")
        .attempt_failed(1200, "NETWORK_ERROR")
        .submitted(2300)
        .confirmed(2400)
    )

    facts = fold_all(order.events)

    assert (facts.submitted_attempt, facts.submitted_at, facts.confirmed_at) == (
        1,
        ms(200),
        ms(2400),
    )


def test_fold_retries_then_failure_records_only_the_final_code() -> None:
    order = (
        OrderBuilder()
        .through_submission("raydium", "3.00")
        .attempt_failed(2200, "NETWORK_ERROR")
        .routed(3200, "meteora", "7.25")
        .built(3250)
        .submitted(3300)
        .failed(5300, "SLIPPAGE_EXCEEDED")
    )
    before_the_end = fold_all(order.events[:-1])

    facts = fold_facts(before_the_end, order.events[-1])

    assert before_the_end.failure_code is None  # a retried attempt is not a failure
    assert (facts.status, facts.failure_code, facts.venue) == (
        "failed",
        "SLIPPAGE_EXCEEDED",
        "meteora",
    )
    assert facts.confirmed_at is None


def test_fold_no_route_failure_is_unrouted_with_its_code() -> None:
    order = OrderBuilder("BONK", "SOL", "1000000").failed(200, "NO_ROUTE")

    facts = fold_all(order.events)

    assert (facts.status, facts.routed, facts.failure_code, facts.pair) == (
        "failed",
        False,
        "NO_ROUTE",
        "BONK/SOL",
    )


def test_fold_limit_order_triggered_and_confirmed_counts_like_a_market_order() -> None:
    order = (
        OrderBuilder("USDC", "SOL", "300", limit_price="151")
        .armed(50)
        .triggered(80, "150.2")
        .through_submission("meteora", "4.00")
        .confirmed(450, "1.99")
    )

    facts = fold_all(order.events)

    assert (facts.status, facts.seq, facts.venue, facts.improvement_bps) == (
        "confirmed",
        7,
        "meteora",
        Decimal("4.00"),
    )
    assert (facts.submitted_at, facts.confirmed_at) == (ms(200), ms(450))
    assert (facts.pair, facts.token_in, facts.amount_in) == ("SOL/USDC", "USDC", Decimal("300"))


def test_fold_cancelled_armed_order_is_unrouted_and_neither_confirmed_nor_failed() -> None:
    order = OrderBuilder(limit_price="1000").armed(50).cancelled(5000)

    facts = fold_all(order.events)

    assert (facts.status, facts.seq, facts.routed) == ("cancelled", 3, False)
    assert (facts.confirmed_at, facts.failure_code, facts.submitted_at) == (None, None, None)


def test_fold_rearmed_then_expired_order_keeps_the_venue_it_was_routed_to() -> None:
    # Routed and submitted, slipped; the re-quote missed the limit, so it waited
    # again until it expired.
    order = (
        OrderBuilder("USDC", "SOL", "100", limit_price="120", expires_in_ms=9000)
        .armed(50)
        .triggered(80)
        .through_submission("raydium", None)
        .attempt_failed(2200, "SLIPPAGE_EXCEEDED")
        .armed(2300, "price moved away")
        .expired(9000)
    )

    facts = fold_all(order.events)

    assert (facts.status, facts.venue, facts.routed) == ("expired", "raydium", True)
    assert (facts.submitted_attempt, facts.submitted_at) == (1, ms(200))
    assert (facts.confirmed_at, facts.failure_code) == (None, None)


def test_fold_armed_order_that_fails_records_its_code() -> None:
    order = OrderBuilder(limit_price="150").armed(50).failed(100, "MARKET_UNAVAILABLE")

    facts = fold_all(order.events)

    assert (facts.status, facts.failure_code, facts.routed) == (
        "failed",
        "MARKET_UNAVAILABLE",
        False,
    )


def test_fold_sequence_gap_raises_the_error_evolve_raises() -> None:
    order = OrderBuilder().through_submission("raydium", None)
    accepted, submitted = order.events[0], order.events[3]

    with pytest.raises(IllegalTransition, match="pending -> submitted is not a legal transition"):
        fold_facts(fold_facts(None, accepted), submitted)
    with pytest.raises(IllegalTransition, match="None -> routing is not a legal transition"):
        fold_facts(None, order.events[1])


def test_fold_refuses_exactly_the_events_evolve_refuses() -> None:
    market = (
        OrderBuilder()
        .through_submission("raydium", "3.00")
        .attempt_failed(2200, "NETWORK_ERROR")
        .submitted(3300)
        .attempt_failed(4300, "SLIPPAGE_EXCEEDED")
        .routed(5300, "meteora", "1.00")
        .built(5350)
        .submitted(5400)
        .confirmed(5500)
    )
    # Armed, triggered, re-armed when the routed price missed the limit, triggered
    # again, slipped, re-armed from the retry, then filled.
    limit = (
        OrderBuilder(limit_price="150", expires_in_ms=60_000)
        .armed(50)
        .triggered(80)
        .armed(100, "price moved away")
        .triggered(150)
        .through_submission("raydium", None)
        .attempt_failed(2200, "SLIPPAGE_EXCEEDED")
        .armed(2300, "price moved away")
        .triggered(3000)
        .routed(3100, "meteora", "2.00")
        .built(3150)
        .submitted(3200)
        .confirmed(3500)
    )
    endings = [
        OrderBuilder().failed(100, "NO_ROUTE"),
        OrderBuilder(limit_price="150").armed(50).cancelled(100),
        OrderBuilder(limit_price="150", expires_in_ms=100).armed(50).expired(100),
        OrderBuilder(limit_price="150").armed(50).failed(100, "MARKET_UNAVAILABLE"),
    ]
    candidates = [e for o in (market, limit, *endings) for e in o.events]

    # After every prefix of each history, every kind of event, at its own seq and at
    # the next one: both folds agree on legality (the table and the sequence).
    for order in (market, limit):
        for length in range(len(order.events) + 1):
            prefix = order.events[:length]
            state: OrderState | None = None
            for earlier in prefix:
                state = evolve(state, earlier)
            facts = fold_all(prefix) if prefix else None
            for event, seq in itertools.product(candidates, ("own", "next")):
                update = {"order_id": order.order_id} | (
                    {"seq": length + 1} if seq == "next" else {}
                )
                candidate = event.model_copy(update=update)
                evolve_ok = _succeeds(evolve, state, candidate)
                fold_ok = _succeeds(fold_facts, facts, candidate)
                assert fold_ok == evolve_ok, (length, type(event).__name__, candidate.seq)


def _succeeds(step: Callable[[Any, Event], object], before: object, event: Event) -> bool:
    try:
        step(before, event)
    except IllegalTransition:
        return False
    return True


# plan -------------------------------------------------------------------------------


def test_plan_full_history_on_new_order_folds_to_the_last_event() -> None:
    events = OrderBuilder().through_submission("raydium", "9.00").confirmed(300).events

    batch = plan(decode_records(records_of(events)), stored={})

    assert batch.states == {events[0].order_id: fold_all(events)}
    assert (batch.applied, batch.skipped, batch.rejected) == (5, 0, [])


def test_plan_event_redelivered_within_batch_is_skipped() -> None:
    events = OrderBuilder().through_submission("raydium", "9.00").events
    doubled = [events[0], events[1], events[1], events[2], events[0]]

    batch = plan(decode_records(records_of(doubled)), stored={})

    assert batch.states == {events[0].order_id: fold_all(events[:3])}
    assert (batch.applied, batch.skipped) == (3, 2)


def test_plan_event_at_or_below_stored_seq_is_skipped() -> None:
    events = OrderBuilder().through_submission("raydium", "9.00").confirmed(300).events
    stored = fold_all(events)

    batch = plan(decode_records(records_of([events[1], events[4]])), {stored.order_id: stored})

    assert (batch.states, batch.applied, batch.skipped) == ({}, 0, 2)


def test_plan_garbage_and_illegal_events_are_rejected_and_the_rest_applied() -> None:
    events = OrderBuilder().through_submission("raydium", "9.00").events
    records = records_of(events)
    garbage = LogRecord("orders.events", 0, 99, None, b"{not json", 0)
    orphan = records_of(OrderBuilder().through_submission("meteora", None).events[1:2], 50)[0]

    batch = plan(decode_records([records[0], garbage, orphan, *records[1:]]), stored={})

    assert batch.states == {events[0].order_id: fold_all(events)}
    assert [r.record for r in batch.rejected] == [garbage, orphan]
    assert batch.rejected[0].error.startswith("DecodeError")
    assert batch.rejected[1].error == "IllegalTransition: None -> routing is not a legal transition"


def test_plan_batches_split_anywhere_fold_to_the_same_facts() -> None:
    orders = [
        OrderBuilder().through_submission("raydium", "1.00").confirmed(300),
        OrderBuilder("USDC", "JUP", "10").through_submission("meteora", None).failed(900, "X"),
    ]
    # Interleaved as two partitions' worth of records might arrive.
    events = [e for pair in itertools.zip_longest(*(o.events for o in orders)) for e in pair if e]
    whole = plan(decode_records(records_of(events)), stored={}).states

    for cut in range(1, len(events)):
        first = plan(decode_records(records_of(events[:cut])), stored={}).states
        second = plan(decode_records(records_of(events[cut:])), stored=first).states
        assert {**first, **second} == whole


# rows -------------------------------------------------------------------------------


def test_facts_to_row_then_row_to_facts_round_trips_every_field() -> None:
    facts = fold_all(OrderBuilder().through_submission("raydium", "17.86").confirmed(300).events)

    row = facts_to_row(facts)

    assert row_to_facts(row) == facts
    assert "routed" not in row  # a generated column: PostgreSQL derives it from venue
    assert replace(facts, venue=None).routed is False


# format_table ------------------------------------------------------------------------

FIGURES: dict[str, Any] = {
    "ordersRouted": 3,
    "confirmed": 3,
    "failed": 0,
    "fillRate": "1.0000",
    "volumeIn": {"SOL": "3.75", "USDC": "250"},
    "confirmLatencyMs": {"avg": "400.0", "p50": "300.0", "p99": "790.0"},
    "priceImprovementBps": {"avg": "15.00"},
    "failureReasons": {},
}
UNROUTED: dict[str, Any] = {
    "ordersRouted": 0,
    "confirmed": 0,
    "failed": 1,
    "fillRate": "0.0000",
    "volumeIn": {},
    "confirmLatencyMs": {"avg": None, "p50": None, "p99": None},
    "priceImprovementBps": {"avg": None},
    "failureReasons": {"NO_ROUTE": 1},
}


def test_format_table_one_row_per_venue_then_per_pair_with_nulls_as_dashes() -> None:
    report = {
        "venues": [{"venue": "raydium", **FIGURES}],
        "pairs": [{"pair": "BONK/SOL", **UNROUTED}, {"pair": "SOL/USDC", **FIGURES}],
    }

    table = format_table(report)

    assert table == "\n".join(
        [
            "               routed  confirmed  failed  fill rate  volume in         "
            "  avg ms  p50 ms  p99 ms  improvement bps  failures",
            "venue raydium       3          3       0     1.0000  3.75 SOL, 250 USDC"
            "   400.0   300.0   790.0            15.00  -",
            "pair BONK/SOL       0          0       1     0.0000  -                 "
            "       -       -       -                -  NO_ROUTE 1",
            "pair SOL/USDC       3          3       0     1.0000  3.75 SOL, 250 USDC"
            "   400.0   300.0   790.0            15.00  -",
        ]
    )


def test_format_table_empty_report_says_there_are_no_orders() -> None:
    assert format_table({"venues": [], "pairs": []}) == "no orders yet"
