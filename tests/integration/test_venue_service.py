"""The real venue service over HTTP, reached through ``HttpVenue``.

The service runs under uvicorn on a free port in a background thread; swaps on
"raydium" land 0.3 s after submission so the pending state is observable, and
"meteora" is configured to always answer POOL_BUSY to quotes and swaps (launches
and pool listings still work).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.processes import free_port
from adapters.settings import Settings
from adapters.venues.client import HttpVenue, http_venues
from adapters.venues.interface import SwapRequest, VenueError
from services.venues.service import create_app
from services.venues.simulator import (
    FailureRates,
    LatencyProfile,
    SimulatedVenue,
    default_price_table,
    tx_hash_for,
)

ADMIN_TOKEN = "venue-admin-token-of-this-test"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LANDING = LatencyProfile(quote_s=(0.0, 0.0), submit_s=(0.0, 0.0), land_s=(0.3, 0.3))


@pytest.fixture(scope="module")
def service_url() -> Iterator[str]:
    prices = default_price_table(Decimal("150"))
    venues = [
        SimulatedVenue(
            "raydium",
            fee_bps=30,
            spread=(Decimal("0.98"), Decimal("1.02")),
            seed=7,
            prices=prices,
            latency=LANDING,
        ),
        SimulatedVenue(
            "meteora",
            fee_bps=20,
            spread=(Decimal("0.97"), Decimal("1.02")),
            seed=7,
            prices=prices,
            failures=FailureRates(pool_busy=1.0),
        ),
    ]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(venues, admin_token=ADMIN_TOKEN),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("venue service did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
async def raydium(service_url: str) -> AsyncIterator[HttpVenue]:
    venue = HttpVenue("raydium", service_url, timeout=5.0, admin_token=ADMIN_TOKEN)
    yield venue
    await venue.aclose()


def swap(client_ref: str, min_out: str = "0") -> SwapRequest:
    return SwapRequest(
        client_ref=client_ref,
        token_in="SOL",
        token_out="USDC",
        amount_in=Decimal("1"),
        min_amount_out=Decimal(min_out),
    )


async def test_venue_service_quote_returns_decimal_quote(raydium: HttpVenue) -> None:
    quote = await raydium.quote("SOL", "USDC", Decimal("2"))

    assert quote.venue == "raydium"
    assert quote.fee == Decimal("0.006")
    assert quote.fee_bps == 30
    assert Decimal("290") < quote.amount_out < Decimal("306")


async def test_venue_service_submit_confirm_find_swap_round_trip(raydium: HttpVenue) -> None:
    submitted = await raydium.submit(swap("it-order-1:1"))
    while_pending = await raydium.find_swap("it-order-1:1")
    confirmed = await raydium.confirm(submitted.tx_hash)
    found = await raydium.find_swap("it-order-1:1")

    assert submitted.status == "pending"
    assert submitted.tx_hash == tx_hash_for("raydium", "it-order-1:1")
    assert while_pending == submitted
    assert confirmed.status == "confirmed"
    assert confirmed.amount_out is not None
    assert confirmed.amount_out > Decimal("140")
    assert confirmed.executed_price == confirmed.amount_out
    assert found == confirmed


async def test_venue_service_duplicate_submit_returns_same_tx(raydium: HttpVenue) -> None:
    first = await raydium.submit(swap("it-order-2:1"))
    second = await raydium.submit(swap("it-order-2:1"))

    assert second.tx_hash == first.tx_hash
    assert second == first


async def test_venue_service_min_out_above_pool_confirms_as_slippage_failure(
    raydium: HttpVenue,
) -> None:
    submitted = await raydium.submit(swap("it-order-3:1", min_out="1000"))
    result = await raydium.confirm(submitted.tx_hash)

    assert result.status == "failed"
    assert result.error_code == "SLIPPAGE_EXCEEDED"


async def test_venue_service_unknown_client_ref_returns_none(raydium: HttpVenue) -> None:
    assert await raydium.find_swap("never-submitted") is None


async def test_venue_service_unknown_tx_raises_permanent_error(raydium: HttpVenue) -> None:
    with pytest.raises(VenueError) as caught:
        await raydium.confirm("1111")

    assert (caught.value.code, caught.value.transient) == ("UNKNOWN_TX", False)


async def test_venue_service_invalid_pair_raises_permanent_error(raydium: HttpVenue) -> None:
    with pytest.raises(VenueError) as caught:
        await raydium.quote("SOL", "SOL", Decimal("1"))

    assert (caught.value.code, caught.value.transient) == ("INVALID_PAIR", False)


async def test_venue_service_injected_failure_raises_transient_error(service_url: str) -> None:
    meteora = HttpVenue("meteora", service_url, timeout=5.0, admin_token=ADMIN_TOKEN)
    try:
        with pytest.raises(VenueError) as caught:
            await meteora.quote("SOL", "USDC", Decimal("1"))
    finally:
        await meteora.aclose()

    assert (caught.value.code, caught.value.transient) == ("POOL_BUSY", True)


async def test_venue_service_unknown_venue_raises_permanent_error(service_url: str) -> None:
    orca = HttpVenue("orca", service_url, timeout=5.0, admin_token=ADMIN_TOKEN)
    try:
        with pytest.raises(VenueError) as caught:
            await orca.find_swap("it-order-1:1")
    finally:
        await orca.aclose()

    assert (caught.value.code, caught.value.transient) == ("UNKNOWN_VENUE", False)


async def test_http_venue_unreachable_service_raises_transient_network_error() -> None:
    venue = HttpVenue("raydium", f"http://127.0.0.1:{free_port()}", timeout=1.0)
    try:
        with pytest.raises(VenueError) as caught:
            await venue.quote("SOL", "USDC", Decimal("1"))
    finally:
        await venue.aclose()

    assert (caught.value.code, caught.value.transient) == ("NETWORK_ERROR", True)


async def test_http_venues_lists_service_venues_sharing_one_client(service_url: str) -> None:
    port = int(service_url.rsplit(":", 1)[1])
    venues = await http_venues(Settings(venues_port=port, venues_admin_token=ADMIN_TOKEN))
    try:
        quote = await venues[0].quote("SOL", "USDC", Decimal("1"))
    finally:
        for venue in venues:
            await venue.aclose()

    assert [v.name for v in venues] == ["raydium", "meteora"]
    assert quote.venue == "raydium"


async def test_http_venues_service_down_falls_back_to_default_names() -> None:
    venues = await http_venues(Settings(venues_port=free_port(), venues_admin_token=ADMIN_TOKEN))
    for venue in venues:
        await venue.aclose()

    assert [v.name for v in venues] == ["raydium", "meteora"]


# Pools and launches ------------------------------------------------------------


async def test_venue_service_pools_lists_every_pool_priced_quote_per_base(
    raydium: HttpVenue,
) -> None:
    pools = {pool.pool_id: pool for pool in await raydium.pools()}

    sol_usdc, bonk_sol = pools["raydium:SOL-USDC"], pools["raydium:SOL-BONK"]
    assert len(pools) >= 15
    assert (sol_usdc.base, sol_usdc.quote, sol_usdc.launched) == ("SOL", "USDC", False)
    assert Decimal("140") < sol_usdc.price < Decimal("160")
    assert (bonk_sol.base, bonk_sol.quote) == ("BONK", "SOL")
    assert Decimal("1.2e-7") < bonk_sol.price < Decimal("1.5e-7")
    # $10M deep, plus the fees earlier swaps left in the pool.
    assert Decimal(10_000_000) <= sol_usdc.liquidity_usd < Decimal(10_000_100)


async def test_venue_service_launched_pool_quotes_and_swaps_through_the_venue_api(
    raydium: HttpVenue,
) -> None:
    pool = await raydium.launch("ITPEPE", price=Decimal("0.0002"), liquidity_usd=Decimal(20_000))
    quote = await raydium.quote("SOL", "ITPEPE", Decimal("0.5"))
    submitted = await raydium.submit(
        SwapRequest(
            client_ref="it-sniper-1:1",
            token_in="SOL",
            token_out="ITPEPE",
            amount_in=Decimal("0.5"),
            min_amount_out=Decimal(0),
        )
    )
    found = await raydium.find_swap("it-sniper-1:1")
    confirmed = await raydium.confirm(submitted.tx_hash)
    listed = {p.pool_id: p for p in await raydium.pools()}

    assert (pool.pool_id, pool.base, pool.quote) == ("raydium:SOL-ITPEPE", "ITPEPE", "SOL")
    assert (pool.price, pool.launched, pool.base_decimals) == (Decimal("0.0002"), True, 6)
    assert pool.liquidity_usd == Decimal("20000.00")
    assert Decimal(2_400) < quote.amount_out < Decimal(2_500)
    assert found is not None
    assert found.tx_hash == submitted.tx_hash
    assert confirmed.status == "confirmed"
    assert listed["raydium:SOL-ITPEPE"].price > pool.price


async def test_venue_service_launch_without_price_or_liquidity_uses_the_defaults(
    service_url: str,
) -> None:
    async with httpx.AsyncClient(base_url=service_url, headers=ADMIN) as client:
        response = await client.post("/venues/meteora/pools", json={"symbol": "itdflt"})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "venue",
        "pool_id",
        "base",
        "quote",
        "price",
        "liquidity_usd",
        "launched",
        "base_mint",
        "base_decimals",
    }
    assert (body["pool_id"], body["base"], body["quote"]) == ("meteora:SOL-ITDFLT", "ITDFLT", "SOL")
    # A ten-thousandth of a SOL; this "meteora" runs constant-product pools: exact.
    assert Decimal(body["price"]) == Decimal("0.0001")
    assert Decimal(body["liquidity_usd"]) == Decimal("50000.00")


async def test_venue_service_launch_of_an_existing_pool_answers_409(
    service_url: str, raydium: HttpVenue
) -> None:
    await raydium.launch("ITTWICE")
    async with httpx.AsyncClient(base_url=service_url, headers=ADMIN) as client:
        again = await client.post("/venues/raydium/pools", json={"symbol": "ITTWICE"})
        listed = await client.post("/venues/raydium/pools", json={"symbol": "BONK"})
    with pytest.raises(VenueError) as caught:
        await raydium.launch("ITTWICE")

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "POOL_EXISTS"
    assert (listed.status_code, listed.json()["error"]["code"]) == (409, "TOKEN_EXISTS")
    assert (caught.value.code, caught.value.transient) == ("POOL_EXISTS", False)


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"symbol": "X"}, "INVALID_REQUEST", "symbol"),
        ({"symbol": "ITBAD", "price": "-1"}, "INVALID_REQUEST", "price"),
        ({"symbol": "ITBAD", "liquidity_usd": "0"}, "INVALID_REQUEST", "liquidity_usd"),
        ({"symbol": "ITBAD", "liquidityUsd": "10"}, "INVALID_REQUEST", "liquidityUsd"),
        ({"symbol": "ITBAD", "quote": "DOGE"}, "UNKNOWN_TOKEN", None),
    ],
)
async def test_venue_service_launch_bad_input_answers_422(
    service_url: str, body: dict[str, str], code: str, field: str | None
) -> None:
    async with httpx.AsyncClient(base_url=service_url, headers=ADMIN) as client:
        response = await client.post("/venues/raydium/pools", json=body)

    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["field"], error["transient"]) == (code, field, False)


async def test_venue_service_add_liquidity_deepens_the_pool_at_its_price(
    raydium: HttpVenue,
) -> None:
    before = {p.pool_id: p for p in await raydium.pools()}["raydium:USDC-JUP"]

    after = await raydium.add_liquidity("JUP", "USDC", Decimal(2_000_000))

    assert after.pool_id == before.pool_id
    assert after.price == before.price
    assert abs(after.liquidity_usd - before.liquidity_usd - 2_000_000) < Decimal("0.05")


async def test_venue_service_drift_moves_each_named_pool(raydium: HttpVenue) -> None:
    before = {p.pool_id: p for p in await raydium.pools()}

    await raydium.drift([("RAY", "USDT", Decimal("0.0004")), ("USDT", "BONK", Decimal("0.0004"))])
    after = {p.pool_id: p for p in await raydium.pools()}

    assert after["raydium:USDT-RAY"].price > before["raydium:USDT-RAY"].price  # RAY dearer
    assert after["raydium:USDT-BONK"].price < before["raydium:USDT-BONK"].price  # BONK cheaper


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/venues/raydium/pools", {"symbol": "ITNOPE"}),
        ("/venues/raydium/pools/liquidity", {"token_a": "SOL", "token_b": "USDC", "usd": "1"}),
        ("/venues/raydium/faults", {"call": "submit", "codes": ["POOL_BUSY"]}),
        (
            "/venues/raydium/price-moves",
            {"token_in": "SOL", "token_out": "USDC", "fraction": "0.3"},
        ),
        ("/venues/raydium/drift", {"moves": []}),
    ],
)
@pytest.mark.parametrize("token", [None, "a-guess"])
async def test_venue_service_controls_without_the_admin_token_answer_401_and_change_nothing(
    service_url: str, path: str, body: dict[str, Any], token: str | None
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=service_url, headers=headers) as client:
        before = (await client.get("/venues/raydium/pools")).json()
        response = await client.post(path, json=body)
        after = (await client.get("/venues/raydium/pools")).json()

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    assert after == before
