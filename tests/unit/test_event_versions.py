"""Old events on the log still decode: version-1 fixtures, stored as the log held them."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from domain import routing
from domain.lifecycle import OrderState, evolve
from events.messages import (
    DecodeError,
    OrderAccepted,
    OrderRouted,
    SubmitOrder,
    VenueQuote,
    decode,
    decode_event,
    decode_stored_event,
    encode,
)

V1 = Path(__file__).parents[1] / "fixtures" / "events" / "v1"
QUOTES = (
    VenueQuote(venue="meteora", amount_out=Decimal("224.518986")),
    VenueQuote(venue="raydium", amount_out=Decimal("224.409346")),
)


def fixture(name: str) -> bytes:
    return (V1 / name).read_bytes()


def history(prefix: str) -> list[bytes]:
    names = sorted(p.name for p in V1.glob("*.json") if p.name[:2].isdigit() == (prefix == ""))
    return [fixture(n) for n in names if n.startswith(prefix)]


def test_decode_every_v1_fixture_decodes():
    names = sorted(p.name for p in V1.glob("*.json"))
    assert len(names) == 12
    for name in names:
        message = decode(fixture(name))
        assert message.type == name.split("-")[-1].removesuffix(".json")


def test_decode_v1_routed_upcasts_to_v2_with_the_improvement_over_the_runner_up():
    routed = decode_event(fixture("02-OrderRouted.json"))
    assert isinstance(routed, OrderRouted)
    assert routed.schema_version == 2
    assert routed.runner_up == "raydium"
    # Meteora 224.518986 vs Raydium 224.409346: (0.10964 / 224.409346) * 10^4 bps.
    assert routed.improvement_bps == Decimal("4.89")


def test_decode_v1_routed_with_one_usable_quote_has_no_improvement():
    routed = decode_event(fixture("06-OrderRouted.json"))
    assert isinstance(routed, OrderRouted)
    assert (routed.runner_up, routed.improvement_bps) == (None, None)


def test_decode_v1_history_folds_to_the_same_order_as_it_did():
    events = [decode_event(raw) for raw in history("")[1:]]
    state: OrderState | None = None
    for event in events:
        state = evolve(state, event)
    assert state is not None
    assert (state.status, state.seq, state.attempt) == ("confirmed", 9, 2)
    assert state.amount_out == Decimal("224.501")


# Fields an order spec gained after version 1, optional so that old specs still decode.
SPEC_ADDITIONS = {"limit_price": None, "max_price": None, "expires_at": None}


def test_decode_v1_unchanged_types_keep_their_exact_fields():
    raw = fixture("09-OrderConfirmed.json")
    assert json.loads(encode(decode_event(raw))) == json.loads(raw)


def test_decode_v1_submission_upcasts_to_v2_placed_by_no_account():
    command = decode(fixture("00-SubmitOrder.json"))
    assert isinstance(command, SubmitOrder)
    original = json.loads(fixture("00-SubmitOrder.json"))
    original["spec"] |= SPEC_ADDITIONS
    original |= {"schema_version": 2, "account": None}
    assert json.loads(encode(command)) == original
    assert command.spec.order_type == "market"
    assert not command.spec.waits


def test_decode_v1_acceptance_upcasts_to_v2_and_folds_to_an_order_of_no_account():
    accepted = decode_event(fixture("01-OrderAccepted.json"))
    assert isinstance(accepted, OrderAccepted)
    assert (accepted.schema_version, accepted.account) == (2, None)
    assert evolve(None, accepted).account is None


def test_decode_stored_v1_routed_from_a_jsonb_column_upcasts_too():
    stored = json.loads(fixture("02-OrderRouted.json"))
    routed = decode_stored_event(stored)
    assert isinstance(routed, OrderRouted)
    assert routed.improvement_bps == Decimal("4.89")
    assert stored["schema_version"] == 1  # the caller's object is left alone


def test_decode_routed_from_a_newer_schema_raises_decode_error():
    future = json.loads(encode(decode_event(fixture("02-OrderRouted.json"))))
    future["schema_version"] = 3
    with pytest.raises(DecodeError):
        decode_event(json.dumps(future))


def test_decode_v1_routed_missing_a_v1_field_raises_decode_error():
    broken = json.loads(fixture("02-OrderRouted.json"))
    del broken["venue"]
    with pytest.raises(DecodeError):
        decode(json.dumps(broken))


# What every version-1 OrderRouted fixture decodes to today: history never changes.
V1_ROUTED_IMPROVEMENTS = {
    "02-OrderRouted.json": ("raydium", Decimal("4.89")),
    "06-OrderRouted.json": (None, None),
}


def routed_improvements() -> dict[str, tuple[str | None, Decimal | None]]:
    decoded = {name: decode_event(fixture(name)) for name in V1_ROUTED_IMPROVEMENTS}
    return {
        name: (routed.runner_up, routed.improvement_bps)
        for name, routed in decoded.items()
        if isinstance(routed, OrderRouted)
    }


def test_decode_v1_routed_fixtures_give_the_pinned_runner_up_and_improvement():
    assert routed_improvements() == V1_ROUTED_IMPROVEMENTS


def test_decode_v1_routed_does_not_change_when_the_live_improvement_does(monkeypatch):
    def absurd(quotes, venue):
        return "nowhere", Decimal("-999999")

    monkeypatch.setattr(routing, "price_improvement", absurd)
    assert routing.choose_route(QUOTES).improvement_bps == Decimal("-999999")  # it is live

    assert routed_improvements() == V1_ROUTED_IMPROVEMENTS
