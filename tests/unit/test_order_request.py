"""Validation of the submission body: every bad input names its code and field."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from services.gateway.errors import ApiError
from services.gateway.intake import parse_order_request
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
    order = parse_order_request(body(tokenIn="sol", amount="1.1"))
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
        ({"type": "limit"}, 422, "MISSING_FIELD", "limitPrice"),
        ({"type": "limit", "limitPrice": "0"}, 422, "INVALID_PRICE", "limitPrice"),
        ({"type": "limit", "limitPrice": "cheap"}, 422, "INVALID_PRICE", "limitPrice"),
        ({"limitPrice": "150"}, 422, "INVALID_FIELD", "limitPrice"),
        ({"type": "limit", "limitPrice": "1", "maxPrice": "2"}, 422, "INVALID_FIELD", "maxPrice"),
        ({"expiresAt": "2030-01-01T00:00:00Z"}, 422, "INVALID_FIELD", "expiresAt"),
        (
            {"type": "limit", "limitPrice": "1", "expiresAt": "2030-01-01T00:00:00"},
            422,
            "INVALID_EXPIRY",
            "expiresAt",
        ),
        (
            {"type": "limit", "limitPrice": "1", "expiresAt": "soon"},
            422,
            "INVALID_EXPIRY",
            "expiresAt",
        ),
        ({"tokenOut": "PEPE"}, 422, "UNKNOWN_TOKEN", "tokenOut"),
        ({"type": "sniper", "tokenOut": "not a token!"}, 422, "UNKNOWN_TOKEN", "tokenOut"),
        (
            {"type": "sniper", "tokenOut": "PEPE", "maxPrice": "-1"},
            422,
            "INVALID_PRICE",
            "maxPrice",
        ),
    ],
)
def test_parse_bad_field_names_code_and_field(changes, status, code, field):
    error = error_of(body(**changes))
    assert (error.status, error.code, error.field) == (status, code, field)
    assert error.message


def test_parse_limit_order_keeps_its_limit_and_expiry():
    order = parse_order_request(
        body(type="limit", limitPrice="150.5", expiresAt="2026-11-24T12:00:00+01:00")
    )
    spec = order.to_spec()
    assert (spec.order_type, spec.limit_price) == ("limit", Decimal("150.5"))
    assert spec.expires_at is not None
    assert spec.expires_at.isoformat() == "2026-11-24T11:00:00+00:00"


def test_parse_sniper_order_may_target_a_token_not_listed_yet():
    order = parse_order_request(
        body(type="sniper", tokenIn="SOL", tokenOut="pepe", maxPrice="0.001")
    )
    spec = order.to_spec()
    assert (spec.order_type, spec.token_out, spec.max_price) == ("sniper", "PEPE", Decimal("0.001"))


def test_parse_malformed_json_is_400_invalid_json():
    error = error_of(b'{"type": "market",')
    assert (error.status, error.code) == (400, "INVALID_JSON")


def test_parse_json_that_is_not_an_object_is_400_invalid_body():
    error = error_of(b"[1, 2]")
    assert (error.status, error.code) == (400, "INVALID_BODY")


def test_request_hash_same_order_written_differently_is_equal():
    a = parse_order_request(body(amount="1.50")).to_spec()
    b = parse_order_request(body(amount="1.5", tokenIn="sol")).to_spec()
    c = parse_order_request(body(amount="1.6")).to_spec()
    assert request_hash(a) == request_hash(b)
    assert request_hash(a) != request_hash(c)
