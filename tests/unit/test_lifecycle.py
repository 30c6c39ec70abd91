"""The order lifecycle: the transition table, evolve and decide."""

from __future__ import annotations

import pytest

from domain.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    decide,
    envelope_after,
    evolve,
    is_stale,
)
from events.messages import OrderAccepted, OrderFailed
from tests.unit.factories import T0, confirmed_history, submit_order


def fold(events):
    state = None
    for event in events:
        state = evolve(state, event)
    return state


def test_evolve_full_history_ends_confirmed_with_the_execution_details():
    events = confirmed_history()
    state = fold(events)
    assert state.status == "confirmed"
    assert state.seq == 5
    assert state.venue == "raydium"
    assert str(state.amount_out) == "224.1"
    assert state.tx_hash == "5xTx"
    assert state.terminal
    assert state.created_at == events[0].occurred_at
    assert state.updated_at == events[-1].occurred_at


def test_evolve_each_status_passes_through_the_documented_order():
    statuses = [fold(confirmed_history()[: n + 1]).status for n in range(5)]
    assert statuses == ["pending", "routing", "building", "submitted", "confirmed"]


def test_evolve_skipping_a_status_raises_illegal_transition():
    accepted, _routed, built, *_ = confirmed_history()
    state = evolve(None, accepted)
    with pytest.raises(IllegalTransition):
        evolve(state, built.model_copy(update={"seq": 2}))


def test_evolve_sequence_gap_raises_illegal_transition():
    accepted, routed, *_ = confirmed_history()
    with pytest.raises(IllegalTransition, match="expected seq 2"):
        evolve(evolve(None, accepted), routed.model_copy(update={"seq": 3}))


def test_evolve_event_after_terminal_raises_illegal_transition():
    events = confirmed_history()
    state = fold(events)
    late = OrderFailed(**envelope_after(state, events[-1], T0), code="X", reason="late")
    with pytest.raises(IllegalTransition):
        evolve(state, late)


def test_evolve_first_event_must_be_accepted():
    with pytest.raises(IllegalTransition):
        evolve(None, confirmed_history()[1])


def test_is_stale_redelivered_event_is_stale_and_next_is_not():
    events = confirmed_history()
    state = fold(events[:3])
    assert is_stale(state, events[1])
    assert is_stale(state, events[2])
    assert not is_stale(state, events[3])
    assert not is_stale(None, events[0])


def test_failed_is_reachable_from_every_non_terminal_status():
    for status, targets in TRANSITIONS.items():
        if status is not None and targets:
            assert "failed" in targets, status


def test_decide_new_submission_accepts_with_seq_one_and_causation():
    command = submit_order()
    (accepted,) = decide(None, command, T0)
    assert isinstance(accepted, OrderAccepted)
    assert accepted.seq == 1
    assert accepted.order_id == command.order_id
    assert accepted.causation_id == command.message_id
    assert accepted.correlation_id == command.correlation_id
    assert accepted.spec == command.spec


def test_decide_repeated_submission_yields_nothing():
    command = submit_order()
    state = evolve(None, decide(None, command, T0)[0])
    assert decide(state, command, T0) == []


def test_decide_twice_gives_the_same_event_id():
    command = submit_order()
    assert decide(None, command, T0)[0].message_id == decide(None, command, T0)[0].message_id
