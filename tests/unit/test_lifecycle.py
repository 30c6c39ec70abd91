"""The order lifecycle: the transition table, evolve and decide."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import get_args

import pytest

from domain.lifecycle import (
    EXECUTING,
    STEPS,
    TERMINAL_STATUSES,
    TRANSITIONS,
    IllegalTransition,
    decide,
    envelope_after,
    evolve,
    fold_event,
    fold_prefix,
    is_stale,
    next_step,
    refusal,
)
from events import messages
from events.messages import Event, OrderAccepted, OrderFailed, Status
from tests.unit.factories import T0, OrderHistory, confirmed_history, submit_order
from tests.unit.test_waiting_orders import limit_sell


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


# The table and what derives from it -------------------------------------------------


def test_transitions_and_steps_name_every_status_and_only_known_ones():
    statuses = set(get_args(Status))
    assert set(TRANSITIONS) - {None} == statuses
    assert set(STEPS) == statuses
    assert set().union(*TRANSITIONS.values()) <= statuses


def test_terminal_statuses_are_those_with_no_way_out():
    assert {"confirmed", "failed", "cancelled", "expired"} == TERMINAL_STATUSES
    # The name the gateway still imports from the message schemas says the same.
    assert messages.TERMINAL_STATUSES == TERMINAL_STATUSES


def test_executing_statuses_run_from_a_trigger_until_the_order_ends_or_waits_again():
    assert {"triggered", "routing", "building", "submitted", "retrying"} == EXECUTING


def test_steps_are_none_only_where_the_engine_waits_for_a_command_or_the_order_is_done():
    waiting = {status for status, step in STEPS.items() if step is None}
    assert waiting == TERMINAL_STATUSES | {"armed"}


def test_next_step_arms_a_waiting_order_and_routes_a_market_order():
    market = evolve(None, confirmed_history()[0])
    limit = OrderHistory(spec=limit_sell(Decimal(150)))
    limit.accepted()
    assert next_step(market) == "route"
    assert limit.state is not None
    assert next_step(limit.state) == "arm"
    limit.armed()
    assert next_step(limit.state) is None
    limit.triggered()
    assert next_step(limit.state) == "route"


def test_next_step_follows_the_order_through_its_execution():
    events = confirmed_history()
    steps = [next_step(fold(events[: n + 1])) for n in range(len(events))]
    assert steps == ["route", "build", "submit", "confirm", None]


# One checked fold --------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """The smallest state a fold may keep: status, seq, and how many events it saw."""

    status: Status
    seq: int
    events: int


def count(state: Count | None, event: Event) -> Count:
    return fold_event(
        state,
        event,
        lambda accepted: Count(accepted.status, accepted.seq, 1),
        lambda known, later: replace(
            known, status=later.status, seq=later.seq, events=known.events + 1
        ),
    )


def test_fold_event_folds_a_state_of_the_callers_own_with_the_lifecycles_checks():
    events = confirmed_history()
    state = None
    for event in events:
        state = count(state, event)
    assert state == Count("confirmed", 5, 5)
    with pytest.raises(IllegalTransition, match="confirmed -> failed is not a legal transition"):
        count(
            state,
            OrderFailed(**envelope_after(fold(events), events[-1], T0), code="X", reason="late"),
        )


def test_refusal_names_both_an_illegal_change_and_a_gap_and_reports_the_change_first():
    accepted, routed, _built, submitted, _confirmed = confirmed_history()
    state = evolve(None, accepted)

    refused = refusal(state, submitted)

    assert refused is not None
    assert refused.illegal == "pending -> submitted is not a legal transition"
    assert refused.gap == "expected seq 2, got 4"
    assert refused.reason == refused.illegal
    assert refusal(state, routed) is None


def test_fold_prefix_stops_at_the_first_gap():
    events = confirmed_history()

    assert fold_prefix(events) == fold(events)
    assert fold_prefix([*events[:2], *events[3:]]) == fold(events[:2])
    assert fold_prefix(events[1:]) is None
    assert fold_prefix([]) is None
