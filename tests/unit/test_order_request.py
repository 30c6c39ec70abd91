"""Validation of the submission body: every bad input names its code and field."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from services.gateway.app import parse_order_request
from services.gateway.errors import ApiError
from services.gateway.schemas import request_hash

GOOD = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", "slippageBps": 50}


def body(**changes: object) -> bytes:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def error_of(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_order_request(raw)
    return caught.value


def test_parse_good_body_gives_decimal_amount_and_symbols():
    order = parse_order_request(body(tokenIn="sol", amount=1.1))
    assert order.token_in == "SOL"
    assert order.amount == Decimal("1.1")
    assert order.to_spec().slippage_bps == 50


def test_parse_token_by_mint_resolves_to_its_symbol():
    order = parse_order_request(body(tokenOut="EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"))
    assert order.token_out == "USDC"


@pytest.mark.parametrize(
    ("changes", "status", "code", "field"),
    [
        ({"tokenIn": "DOGE"}, 422, "UNKNOWN_TOKEN", "tokenIn"),
        ({"tokenOut": "SOL"}, 422, "SAME_TOKEN", "tokenOut"),
        ({"amount": "0"}, 422, "INVALID_AMOUNT", "amount"),
        ({"amount": "-3"}, 422, "INVALID_AMOUNT", "amount"),
        ({"amount": "abc"}, 422, "INVALID_AMOUNT", "amount"),
        ({"amount": "NaN"}, 422, "INVALID_AMOUNT", "amount"),
        ({"amount": True}, 422, "INVALID_AMOUNT", "amount"),
        ({"slippageBps": 0}, 422, "INVALID_SLIPPAGE", "slippageBps"),
        ({"slippageBps": 5001}, 422, "INVALID_SLIPPAGE", "slippageBps"),
        ({"slippageBps": "50"}, 422, "INVALID_SLIPPAGE", "slippageBps"),
        ({"type": "stop"}, 422, "UNKNOWN_ORDER_TYPE", "type"),
        ({"amount": ...}, 422, "MISSING_FIELD", "amount"),
        ({"colour": "red"}, 422, "UNKNOWN_FIELD", "colour"),
    ],
)
def test_parse_bad_field_names_code_and_field(changes, status, code, field):
    error = error_of(body(**changes))
    assert (error.status, error.code, error.field) == (status, code, field)
    assert error.message


def test_parse_malformed_json_is_400_invalid_json():
    error = error_of(b'{"type": "market",')
    assert (error.status, error.code) == (400, "INVALID_JSON")


def test_parse_json_that_is_not_an_object_is_400_invalid_body():
    error = error_of(b"[1, 2]")
    assert (error.status, error.code) == (400, "INVALID_BODY")


def test_request_hash_same_order_written_differently_is_equal():
    a = parse_order_request(body(amount="1.50")).to_spec()
    b = parse_order_request(body(amount=1.5, tokenIn="sol")).to_spec()
    c = parse_order_request(body(amount="1.6")).to_spec()
    assert request_hash(a) == request_hash(b)
    assert request_hash(a) != request_hash(c)
