"""The engine's step clock times an order from its events' own timestamps."""

from __future__ import annotations

from prometheus_client import REGISTRY

from adapters.metrics import StepClock
from tests.unit.factories import confirmed_history


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_step_clock_times_each_step_and_counts_the_ending() -> None:
    history = confirmed_history()  # one event a second: accepted at +1 s ... confirmed at +5 s
    before = {
        step: sample("oee_order_step_seconds_sum", step=step)
        for step in (
            "accepted_to_routed",
            "routed_to_submitted",
            "submitted_to_confirmed",
            "submit_to_terminal",
        )
    }
    ended = sample("oee_orders_ended_total", type="market", status="confirmed")
    clock = StepClock()

    for event in history:
        clock.observe(event)

    took = {step: sample("oee_order_step_seconds_sum", step=step) - s for step, s in before.items()}
    assert took == {
        "accepted_to_routed": 1.0,
        "routed_to_submitted": 2.0,  # routed, built, submitted
        "submitted_to_confirmed": 1.0,
        "submit_to_terminal": 4.0,
    }
    assert sample("oee_orders_ended_total", type="market", status="confirmed") == ended + 1
    assert clock.in_flight() == 0  # an ended order is forgotten


def test_step_clock_skips_steps_whose_start_it_did_not_see() -> None:
    history = confirmed_history()
    before = sample("oee_order_step_seconds_count", step="accepted_to_routed")
    clock = StepClock()

    for event in history[2:]:  # restarted after the order was routed
        clock.observe(event)

    assert sample("oee_order_step_seconds_count", step="accepted_to_routed") == before
    assert clock.in_flight() == 0
