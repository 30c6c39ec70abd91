"""Messages on the log: encoding, decoding, and what is refused."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from events.messages import DecodeError, OrderAccepted, decode, decode_event, encode, event_id
from tests.unit.factories import confirmed_history, submit_order


def test_decode_every_message_encoded_round_trips_to_an_equal_value():
    messages = [submit_order(), *confirmed_history()]
    for message in messages:
        assert decode(encode(message)) == message


def test_decode_money_stays_decimal_with_its_exact_digits():
    accepted = confirmed_history()[0]
    assert isinstance(accepted, OrderAccepted)
    raw = json.loads(encode(accepted))
    assert raw["spec"]["amount"] == "1.5"  # a string on the wire, never a float
    assert str(decode(encode(accepted)).spec.amount) == "1.5"  # type: ignore[union-attr]


def test_decode_unknown_type_raises_decode_error():
    raw = json.loads(encode(submit_order()))
    raw["type"] = "CancelEverything"
    with pytest.raises(DecodeError):
        decode(json.dumps(raw))


def test_decode_unknown_field_raises_decode_error():
    raw = json.loads(encode(confirmed_history()[0]))
    raw["surprise"] = 1
    with pytest.raises(DecodeError):
        decode(json.dumps(raw))


def test_decode_event_given_a_command_raises_decode_error():
    with pytest.raises(DecodeError):
        decode_event(encode(submit_order()))


def test_decode_garbage_raises_decode_error():
    with pytest.raises(DecodeError):
        decode(b"\x00not json")


def test_message_is_frozen():
    accepted = confirmed_history()[0]
    with pytest.raises(ValidationError):
        accepted.seq = 7  # type: ignore[misc]


def test_event_id_same_order_and_seq_gives_same_id():
    order = uuid.uuid4()
    assert event_id(order, 3) == event_id(order, 3)
    assert event_id(order, 3) != event_id(order, 4)
    assert event_id(order, 3) != event_id(uuid.uuid4(), 3)


def test_occurred_at_is_normalised_to_utc():
    raw = json.loads(encode(submit_order()))
    raw["occurred_at"] = "2026-11-24T14:00:00+02:00"
    assert decode(json.dumps(raw)).occurred_at.isoformat() == "2026-11-24T12:00:00+00:00"
