"""Planning an orders-projection batch: pure folding, no broker, no database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.lifecycle import OrderState, decide, envelope_after, evolve
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
    TransactionBuilt,
    TransactionSubmitted,
    VenueQuote,
    decode_event,
    encode,
)
from projections.batch import decode_records
from projections.contract import LogRecord, Rejection, dead_letter
from projections.orders.handler import (
    JSON_COLUMNS,
    ORDER_COLUMNS,
    event_row,
    plan,
    row_to_state,
    state_to_row,
)

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
SPEC = OrderSpec(
    token_in="SOL", token_out="USDC", amount=Decimal("1.50"), slippage_bps=50, client_order_id="c1"
)
QUOTES = (
    VenueQuote(
        venue="raydium",
        amount_out=Decimal("224.1"),
        fee=Decimal("0.0045"),
        price=Decimal("150"),
        latency_ms=12,
    ),
    VenueQuote(venue="meteora", error="timeout", latency_ms=5000),
)


LIMIT_SPEC = OrderSpec(
    order_type="limit",
    token_in="SOL",
    token_out="USDC",
    amount=Decimal("2"),
    slippage_bps=50,
    limit_price=Decimal("150.5"),
    expires_at=datetime(2025, 1, 2, 12, 0, tzinfo=UTC),
)
Step = tuple[type[Event], dict[str, object]]


def history_of(
    spec: OrderSpec, steps: list[Step], order_id: uuid.UUID | None = None, start: datetime = T0
) -> list[Event]:
    """Return an order's events: accepted, then one event per step, a minute apart.

    Each event is folded with ``evolve`` as it is made, so the history is a legal one.
    """
    order_id = order_id or uuid.uuid4()
    command = SubmitOrder(
        message_id=uuid.uuid4(),
        order_id=order_id,
        seq=0,
        occurred_at=start,
        correlation_id=uuid.uuid4(),
        spec=spec,
        request_hash="ab" * 32,
    )
    events: list[Event] = list(decide(None, command, start))
    state = evolve(None, events[0])
    for minutes, (event_type, fields) in enumerate(steps, start=1):
        envelope = envelope_after(state, events[-1], start + timedelta(minutes=minutes))
        event = event_type(**envelope, **fields)
        events.append(event)
        state = evolve(state, event)
    return events


def execution_steps(order_id: uuid.UUID, attempt: int = 1) -> list[Step]:
    """Return the steps of routing to raydium, building, submitting and confirming."""
    return [
        (
            OrderRouted,
            {
                "quotes": QUOTES,
                "venue": "raydium",
                "expected_out": Decimal("224.1"),
                "reason": "best",
                "runner_up": None,  # meteora timed out
                "improvement_bps": None,
            },
        ),
        (
            TransactionBuilt,
            {
                "venue": "raydium",
                "min_amount_out": Decimal("222.9795"),
                "client_ref": f"{order_id}:{attempt}",
                "attempt": attempt,
                "steps": ("wrap", "swap"),
            },
        ),
        (TransactionSubmitted, {"venue": "raydium", "tx_hash": "0xabc", "attempt": attempt}),
        (
            OrderConfirmed,
            {
                "venue": "raydium",
                "tx_hash": "0xabc",
                "amount_out": Decimal("224.0"),
                "executed_price": Decimal("149.333333"),
            },
        ),
    ]


def order_history(order_id: uuid.UUID | None = None, start: datetime = T0) -> list[Event]:
    """Return the events of one order that is routed, built, submitted and confirmed."""
    order_id = order_id or uuid.uuid4()
    return history_of(SPEC, execution_steps(order_id), order_id, start)


def limit_order_history(order_id: uuid.UUID | None = None) -> list[Event]:
    """Return a limit order's events: armed, triggered, re-armed when the price moved
    away before routing, triggered again, then executed and confirmed."""
    order_id = order_id or uuid.uuid4()
    waiting = "waiting for SOL/USDC to reach 150.5 or more for 2 SOL"
    triggered = {"reason": "SOL/USDC at 151.2", "price": Decimal("151.2"), "venue": "raydium"}
    steps: list[Step] = [
        (OrderArmed, {"reason": waiting}),
        (OrderTriggered, triggered),
        (OrderArmed, {"reason": "price moved away: raydium gives 150.1, limit 150.5"}),
        (OrderTriggered, triggered),
        *execution_steps(order_id),
    ]
    return history_of(LIMIT_SPEC, steps, order_id)


def cancelled_limit_order_history() -> list[Event]:
    """Return a limit order's events: armed, then cancelled by its client."""
    steps: list[Step] = [
        (OrderArmed, {"reason": "waiting for SOL/USDC to reach 150.5 or more for 2 SOL"}),
        (OrderCancelled, {"reason": "cancelled by the client"}),
    ]
    return history_of(LIMIT_SPEC, steps)


def records_of(events: list[Event], first_offset: int = 0) -> list[LogRecord]:
    return [
        LogRecord(
            "orders.events",
            0,
            first_offset + i,
            str(e.order_id).encode(),
            encode(e),
            1_700_000_000_000,
        )
        for i, e in enumerate(events)
    ]


def fold(events: list[Event]) -> OrderState:
    state: OrderState | None = None
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state


# plan -------------------------------------------------------------------------------


def test_plan_full_history_on_new_order_applies_every_event() -> None:
    events = order_history()

    batch = plan(decode_records(records_of(events)), states={}, known_ids=[])

    assert [e for _, e in batch.events] == events
    assert batch.states == {events[0].order_id: fold(events)}
    assert batch.states[events[0].order_id].status == "confirmed"
    assert (batch.skipped, batch.rejected) == (0, [])


def test_plan_limit_order_armed_triggered_rearmed_and_confirmed_applies_every_event() -> None:
    events = limit_order_history()

    batch = plan(decode_records(records_of(events)), states={}, known_ids=[])

    state = batch.states[events[0].order_id]
    assert [e for _, e in batch.events] == events
    assert [e.status for _, e in batch.events] == [
        "pending",
        "armed",
        "triggered",
        "armed",
        "triggered",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]
    assert state == fold(events)
    assert (state.status, state.seq, state.venue) == ("confirmed", 9, "raydium")
    assert (state.spec.order_type, state.spec.limit_price) == ("limit", Decimal("150.5"))
    assert (batch.skipped, batch.rejected) == (0, [])


def test_plan_limit_order_stored_while_armed_resumes_from_its_row() -> None:
    events = limit_order_history()
    stored = row_to_state(state_to_row(fold(events[:2])))

    batch = plan(decode_records(records_of(events)), states={stored.order_id: stored}, known_ids=[])

    assert stored.status == "armed"
    assert batch.skipped == 2
    assert batch.states[stored.order_id] == fold(events)


def test_plan_cancelled_limit_order_is_terminal_and_refuses_a_late_trigger() -> None:
    events = cancelled_limit_order_history()
    armed = fold(events[:2])
    late = OrderTriggered(
        **envelope_after(fold(events), events[-1], T0 + timedelta(minutes=5)),
        reason="SOL/USDC at 151",
        price=Decimal("151"),
    )

    batch = plan(decode_records(records_of([*events, late])), states={}, known_ids=[])

    state = batch.states[events[0].order_id]
    assert (state.status, state.seq, state.terminal) == ("cancelled", 3, True)
    assert [e for _, e in batch.events] == events
    assert [r.error for r in batch.rejected] == [
        "IllegalTransition: cancelled -> triggered is not a legal transition"
    ]
    # Cancelling changes the status only: the order was never routed.
    assert state.model_copy(
        update={"status": "armed", "seq": 2, "last_event_id": events[1].message_id}
    ) == armed.model_copy(update={"updated_at": state.updated_at})


def test_plan_expired_sniper_order_keeps_its_max_price_and_expiry() -> None:
    spec = OrderSpec(
        order_type="sniper",
        token_in="SOL",
        token_out="PEPE",
        amount=Decimal("0.5"),
        slippage_bps=300,
        max_price=Decimal("0.001"),
        expires_at=T0 + timedelta(minutes=2),
    )
    steps: list[Step] = [
        (OrderArmed, {"reason": "waiting for a PEPE pool to launch at 0.001 SOL or less"}),
        (OrderExpired, {"expires_at": T0 + timedelta(minutes=2)}),
    ]
    events = history_of(spec, steps)

    batch = plan(decode_records(records_of(events)), states={}, known_ids=[])

    row = state_to_row(batch.states[events[0].order_id])
    assert (row["status"], row["order_type"], row["token_out"]) == ("expired", "sniper", "PEPE")
    assert (row["max_price"], row["limit_price"]) == (Decimal("0.001"), None)
    assert row["expires_at"] == T0 + timedelta(minutes=2)


def test_plan_event_redelivered_within_batch_is_skipped() -> None:
    events = order_history()
    doubled = [events[0], events[1], events[1], events[2]]

    batch = plan(decode_records(records_of(doubled)), states={}, known_ids=[])

    assert [e for _, e in batch.events] == events[:3]
    assert batch.skipped == 1


def test_plan_event_already_stored_by_message_id_is_skipped() -> None:
    events = order_history()

    batch = plan(
        decode_records(records_of(events[:1])), states={}, known_ids=[events[0].message_id]
    )

    assert (batch.events, batch.states, batch.skipped) == ([], {}, 1)


def test_plan_event_at_or_below_stored_seq_is_skipped() -> None:
    events = order_history()
    stored = fold(events[:3])

    batch = plan(decode_records(records_of(events)), states={stored.order_id: stored}, known_ids=[])

    assert [e.seq for _, e in batch.events] == [4, 5]
    assert batch.skipped == 3
    assert batch.states[stored.order_id] == fold(events)


def test_plan_sequence_gap_is_rejected_as_illegal_transition() -> None:
    events = order_history()
    # pending -> failed is a legal status change, but seq 3 skips seq 2.
    gap = OrderFailed(**envelope_after(fold(events[:2]), events[1], T0), code="x", reason="y")

    batch = plan(decode_records(records_of([events[0], gap])), states={}, known_ids=[])

    assert [e for _, e in batch.events] == events[:1]
    assert len(batch.rejected) == 1
    assert batch.rejected[0].record.offset == 1
    assert batch.rejected[0].error == "IllegalTransition: expected seq 2, got 3"


def test_plan_first_event_not_accepted_is_rejected() -> None:
    events = order_history()

    batch = plan(decode_records(records_of(events[1:2])), states={}, known_ids=[])

    assert batch.rejected[0].error == "IllegalTransition: None -> routing is not a legal transition"


def test_plan_garbage_between_events_is_rejected_and_the_rest_applied() -> None:
    events = order_history()
    records = records_of(events[:2])
    garbage = LogRecord("orders.events", 0, 7, None, b"\xff not json", 1_700_000_000_000)

    batch = plan(decode_records([records[0], garbage, records[1]]), states={}, known_ids=[])

    assert [e for _, e in batch.events] == events[:2]
    assert [r.record for r in batch.rejected] == [garbage]
    assert batch.rejected[0].error.startswith("DecodeError")


def test_decode_records_nul_character_is_rejected_before_the_database() -> None:
    event = order_history()[0]
    poisoned = encode(event).replace(b'"c1"', b'"c\\u00001"')

    [(_, item)] = decode_records([LogRecord("t", 0, 0, None, poisoned, 0)])

    assert item == "DecodeError: NUL characters cannot be stored"


def test_decode_records_command_on_the_events_topic_is_rejected() -> None:
    command = SubmitOrder(
        message_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        seq=0,
        occurred_at=T0,
        correlation_id=uuid.uuid4(),
        spec=SPEC,
        request_hash="00",
    )

    [(_, item)] = decode_records([LogRecord("t", 0, 0, None, encode(command), 0)])

    assert isinstance(item, str)
    assert item.startswith("DecodeError")


# rows ---------------------------------------------------------------------------------


def test_state_to_row_then_row_to_state_round_trips_every_field() -> None:
    state = fold(order_history())

    assert row_to_state(state_to_row(state)) == state


def test_state_to_row_then_row_to_state_round_trips_a_limit_order() -> None:
    state = fold(limit_order_history())

    row = state_to_row(state)

    assert row_to_state(row) == state
    assert (row["order_type"], row["limit_price"], row["max_price"]) == (
        "limit",
        Decimal("150.5"),
        None,
    )
    assert row["expires_at"] == datetime(2025, 1, 2, 12, 0, tzinfo=UTC)


def test_state_to_row_market_order_has_no_limit_max_price_or_expiry() -> None:
    row = state_to_row(fold(order_history()))

    assert (row["limit_price"], row["max_price"], row["expires_at"]) == (None, None, None)


def test_order_columns_are_exactly_the_row_keys() -> None:
    for state in (fold(order_history()), fold(limit_order_history())):
        assert tuple(state_to_row(state)) == ORDER_COLUMNS


def test_state_to_row_money_stays_decimal_and_quotes_json_ready() -> None:
    row = state_to_row(fold(order_history()))

    assert row["amount"] == Decimal("1.50")
    assert isinstance(row["amount"], Decimal)
    assert row["quotes"][0] == {
        "venue": "raydium",
        "amount_out": "224.1",
        "fee": "0.0045",
        "price": "150",
        "latency_ms": 12,
        "error": None,
    }


def test_event_row_payload_decodes_back_to_the_event() -> None:
    event = order_history()[1]
    record = records_of([event], first_offset=41)[0]

    row = event_row(record, event)

    assert isinstance(row["payload"], dict)
    assert decode_event(json.dumps(row["payload"])) == event
    assert (row["type"], row["status"], row["offset"]) == ("OrderRouted", "routing", 41)


def test_dead_letter_time_is_the_record_timestamp_not_now() -> None:
    record = LogRecord("orders.events", 3, 9, b"k", b"\xffgarbage", 1_700_000_000_123)

    letter = dead_letter(Rejection(record, "DecodeError: nope"))

    assert letter.occurred_at == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert (letter.partition, letter.offset, letter.key) == (3, 9, "k")
    assert letter.value == "\\xffgarbage"


def test_order_columns_are_the_state_fields_with_the_spec_flattened() -> None:
    state_fields = set(OrderState.model_fields) - {"spec"}

    assert set(ORDER_COLUMNS) == state_fields | set(OrderSpec.model_fields)
    assert len(ORDER_COLUMNS) == len(state_fields) + len(OrderSpec.model_fields)
    assert JSON_COLUMNS == ("quotes",)
