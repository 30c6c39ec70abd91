"""Every input that once got through (202) or crashed (500) answers 4xx with its code and field.

Each case below was found by trying the API as a demanding user would. The gateway
is served over real HTTP with its parts never started: every one of these is
decided before the broker or the database is involved, so a 503 from either would
mean the input got through.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

import httpx
import pytest

from adapters.processes import free_port
from adapters.settings import Settings
from domain.numbers import NotADecimal, parse_decimal
from services.gateway.firehose import StreamParamError, parse_cursor
from services.gateway.intake import parse_order_request
from services.venues.service import create_app as create_venue_app
from services.venues.simulator import SimulatedVenue, default_price_table
from tests.auth import AUTH, DEV_KEY
from tests.gateway_server import serving

ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", "slippageBps": 50}
LIMIT = {**ORDER, "type": "limit", "limitPrice": "150"}


def body(base: Mapping[str, Any] = ORDER, **changes: Any) -> bytes:
    return json.dumps({**base, **changes}).encode()


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url="postgresql://nobody@127.0.0.1:9/nothing",
        gateway_port=free_port(),
        dev_api_key=DEV_KEY,
    )
    async with (
        serving(settings, lifespan=False) as url,
        httpx.AsyncClient(base_url=url, timeout=10, headers=AUTH) as client,
    ):
        yield client


# (name, path, raw body, status, code, field)
BAD_BODIES = [
    (
        "zero amount",
        "/api/orders/execute",
        body(amount="0.000000"),
        422,
        "INVALID_AMOUNT",
        "amount",
    ),
    (
        "zero amount with 28 decimals",
        "/api/orders/execute",
        body(amount="0.0000000000000000000000000000"),
        422,
        "INVALID_AMOUNT",
        "amount",
    ),
    (
        "amount 1e-100000",
        "/api/orders/execute",
        body(amount="1e-100000"),
        422,
        "INVALID_AMOUNT",
        "amount",
    ),
    ("amount 1E-28", "/api/orders/execute", body(amount="1E-28"), 422, "INVALID_AMOUNT", "amount"),
    (
        "amount below SOL's smallest unit",
        "/api/orders/execute",
        body(amount="0.0000000001"),
        422,
        "INVALID_AMOUNT",
        "amount",
    ),
    ("amount 1_000", "/api/orders/execute", body(amount="1_000"), 422, "INVALID_AMOUNT", "amount"),
    (
        "amount in Arabic-Indic digits",
        "/api/orders/execute",
        body(amount="١٢"),
        422,
        "INVALID_AMOUNT",
        "amount",
    ),
    (
        "amount with spaces",
        "/api/orders/execute",
        body(amount=" 1.5 "),
        422,
        "INVALID_AMOUNT",
        "amount",
    ),
    (
        "amount as a JSON number",
        "/api/orders/execute",
        body(amount=1.5),
        422,
        "INVALID_AMOUNT",
        "amount",
    ),
    (
        "amount too large",
        "/api/orders/execute",
        body(amount="1000000000000001"),
        422,
        "INVALID_AMOUNT",
        "amount",
    ),
    (
        "limitPrice 1e-100000",
        "/api/orders/execute",
        body(LIMIT, limitPrice="1e-100000"),
        422,
        "INVALID_PRICE",
        "limitPrice",
    ),
    (
        "clientOrderId with a NUL byte",
        "/api/orders/execute",
        body(clientOrderId="a\x00b"),
        422,
        "INVALID_FIELD",
        "clientOrderId",
    ),
    (
        "clientOrderId with a newline",
        "/api/orders/execute",
        body(clientOrderId="a\nb"),
        422,
        "INVALID_FIELD",
        "clientOrderId",
    ),
    (
        "duplicate key",
        "/api/orders/execute",
        b'{"type":"market","tokenIn":"SOL","tokenIn":"USDT","tokenOut":"USDC","amount":"1"}',
        400,
        "DUPLICATE_KEY",
        "tokenIn",
    ),
    (
        "JSON nested 1,500 deep",
        "/api/orders/execute",
        b"[" * 1500 + b"]" * 1500,
        400,
        "INVALID_JSON",
        None,
    ),
    (
        "JSON nested 5,000 deep",
        "/api/orders/execute",
        b"[" * 5000 + b"]" * 5000,
        400,
        "INVALID_JSON",
        None,
    ),
    (
        "lone surrogate",
        "/api/orders/execute",
        b'{"type":"market","tokenIn":"\\ud800","tokenOut":"USDC","amount":"1"}',
        400,
        "INVALID_JSON",
        None,
    ),
    (
        "expiresAt out of datetime's range in UTC",
        "/api/orders/execute",
        body(LIMIT, expiresAt="0001-01-01T00:00:00+01:00"),
        422,
        "INVALID_EXPIRY",
        "expiresAt",
    ),
    (
        "expiresAt as a number",
        "/api/orders/execute",
        body(LIMIT, expiresAt=10**12),
        422,
        "INVALID_EXPIRY",
        "expiresAt",
    ),
    (
        "expiresAt years ahead",
        "/api/orders/execute",
        body(LIMIT, expiresAt="2999-01-01T00:00:00Z"),
        422,
        "INVALID_EXPIRY",
        "expiresAt",
    ),
    (
        "launch price 1e-100000",
        "/api/simulate/launch",
        b'{"symbol":"PEPE","price":"1e-100000"}',
        422,
        "INVALID_PRICE",
        "price",
    ),
    (
        "launch price 0",
        "/api/simulate/launch",
        b'{"symbol":"PEPE","price":"0"}',
        422,
        "INVALID_PRICE",
        "price",
    ),
    (
        "launch duplicate key",
        "/api/simulate/launch",
        b'{"symbol":"PEPE","symbol":"WIF"}',
        400,
        "DUPLICATE_KEY",
        "symbol",
    ),
    (
        "launch nested 5,000 deep",
        "/api/simulate/launch",
        b"[" * 5000 + b"]" * 5000,
        400,
        "INVALID_JSON",
        None,
    ),
    (
        "launch unknown venue",
        "/api/simulate/launch",
        b'{"symbol":"PEPE","venue":"orca"}',
        422,
        "UNKNOWN_VENUE",
        "venue",
    ),
]


@pytest.mark.parametrize(
    ("path", "raw", "status", "code", "field"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_bad_body_answers_4xx_with_its_code_and_field(
    gateway: httpx.AsyncClient, path: str, raw: bytes, status: int, code: str, field: str | None
) -> None:
    response = await gateway.post(path, content=raw, headers={"content-type": "application/json"})

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert "{" not in error["message"], "a template, not the value"


async def test_huge_page_size_answers_422_invalid_query(gateway: httpx.AsyncClient) -> None:
    for limit in ("9999999999999999999999999999999999", "9" * 5000, "0", " 5", "\u0665"):
        response = await gateway.get("/api/orders", params={"limit": limit})

        assert response.status_code == 422, (limit, response.text)
        assert response.json()["error"]["code"] == "INVALID_QUERY"
        assert response.json()["error"]["field"] == "limit"


async def test_unknown_token_message_shows_the_value_not_a_template(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.post("/api/orders/execute", content=body(tokenIn="DOGE"))

    error = response.json()["error"]
    assert (response.status_code, error["code"], error["field"]) == (
        422,
        "UNKNOWN_TOKEN",
        "tokenIn",
    )
    assert error["message"] == "token 'DOGE' is not listed"


async def test_idempotency_key_beyond_printable_ascii_answers_400(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.post(
        "/api/orders/execute",
        content=body(),
        headers={b"Idempotency-Key": "caf\xe9".encode("latin-1")},
    )

    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, "INVALID_IDEMPOTENCY_KEY")
    assert error["field"] == "Idempotency-Key"


async def test_order_id_that_is_no_uuid_names_the_field_as_the_api_does(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/api/orders/not-a-uuid")

    error = response.json()["error"]
    assert (response.status_code, error["code"], error["field"]) == (
        422,
        "INVALID_ORDER_ID",
        "orderId",
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"tokenIn": "sol"}, "tokenIn"), ({"tokenOut": "usdc"}, "tokenOut")],
)
def test_symbols_are_case_insensitive_and_stored_upper_case(
    changes: dict[str, str], field: str
) -> None:
    order = parse_order_request(body(ORDER, **changes))

    assert order.model_dump(by_alias=True)[field] == changes[field].upper()


@pytest.mark.parametrize(
    "text", ["1e3", "1E-28", "1_000", "١٢", " 1.5", "1.5 ", "+1", "-1", ".5", "5.", "0", "1.5\n"]
)
def test_parse_decimal_refuses_anything_but_plain_positive_digits(text: str) -> None:
    with pytest.raises(NotADecimal):
        parse_decimal(text, "amount", maximum=Decimal(1000))


def test_parse_decimal_keeps_the_number_written() -> None:
    assert parse_decimal("0001.50", "amount", maximum=Decimal(1000)) == Decimal("1.5")


@pytest.fixture(scope="module")
async def venues() -> AsyncIterator[httpx.AsyncClient]:
    venue = SimulatedVenue("raydium", fee_bps=30, seed=7, prices=default_price_table(Decimal(150)))
    transport = httpx.ASGITransport(app=create_venue_app([venue], admin_token="controls"))
    headers = {"Authorization": "Bearer controls"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://venues", headers=headers
    ) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/venues/raydium/pools", {"symbol": "PEPE", "price": "1e-100000"}, "price"),
        ("/venues/raydium/pools", {"symbol": "PEPE", "price": "1e100000"}, "price"),
        (
            "/venues/raydium/pools",
            {"symbol": "PEPE", "liquidity_usd": "1e-100000"},
            "liquidity_usd",
        ),
        (
            "/venues/raydium/quote",
            {"token_in": "SOL", "token_out": "USDC", "amount_in": "1e-100000"},
            "amount_in",
        ),
        (
            "/venues/raydium/pools/liquidity",
            {"token_a": "SOL", "token_b": "USDC", "usd": "1e100000"},
            "usd",
        ),
    ],
)
async def test_venue_simulator_refuses_numbers_out_of_bounds_with_422(
    venues: httpx.AsyncClient, path: str, payload: dict[str, str], field: str
) -> None:
    response = await venues.post(path, json=payload)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_REQUEST", field)


@pytest.mark.parametrize("text", ["0:1,0:2", "²:1", "0:" + "9" * 5000, "0:\u0661", ":1", "0:"])
def test_firehose_cursor_refuses_what_is_no_cursor(text: str) -> None:
    with pytest.raises(StreamParamError):
        parse_cursor(text)


def test_firehose_cursor_reads_partitions_and_offsets() -> None:
    assert parse_cursor("0:12, 3:40") == {0: 12, 3: 40}


def test_parse_decimal_says_a_negative_number_must_be_above_zero() -> None:
    with pytest.raises(NotADecimal, match="amount must be greater than zero, not '-1'"):
        parse_decimal("-1", "amount", maximum=Decimal(1000))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"type": "stop"}, "order type 'stop' is not supported (market, limit, sniper)"),
        ({"slippageBps": 9000}, "slippageBps must be an integer from 1 to 5000, not 9000"),
        ({"tokenOut": "PEPE"}, "token 'PEPE' is not listed (only a sniper order may target"),
        ({"amount": "0.1234567"}, "amount 0.1234567 has more decimals than BONK has (5)"),
    ],
)
async def test_error_messages_show_the_value_refused(
    gateway: httpx.AsyncClient, changes: dict[str, Any], message: str
) -> None:
    base = {**ORDER, "tokenIn": "BONK"} if "amount" in changes else ORDER
    response = await gateway.post("/api/orders/execute", content=body(base, **changes))

    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(message)
