"""The venues' ledger: every swap a venue knows, in the simulator and over its HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import uvicorn

from adapters.processes import free_port
from adapters.venues.client import HttpVenue
from adapters.venues.interface import VenueError
from services.venues.service import create_app
from services.venues.simulator import SimulatedVenue, tx_hash_for
from tests.unit.test_simulator import landing_venue, swap


async def test_simulated_venue_ledger_lists_every_swap_oldest_first_landed_ones_settled() -> None:
    now = [100.0]
    venue = landing_venue(now)
    await venue.submit(swap("order-1:1", amount_in="1"))
    now[0] = 104.0  # the first swap has landed (2-3 s), unobserved so far
    await venue.submit(swap("order-2:1", amount_in="2", min_out="250"))

    ledger = venue.ledger()

    assert [(e.client_ref, e.status) for e in ledger] == [
        ("order-1:1", "confirmed"),
        ("order-2:1", "pending"),
    ]
    first, second = ledger
    assert first.venue == "meteora"
    assert first.tx_hash == tx_hash_for("meteora", "order-1:1")
    assert (first.token_in, first.token_out, first.amount_in) == ("SOL", "USDC", Decimal(1))
    assert first.amount_out is not None
    assert first.amount_out > 0
    assert first.executed_price == first.amount_out
    assert (second.amount_in, second.min_amount_out, second.amount_out) == (
        Decimal(2),
        Decimal(250),
        None,
    )


async def test_simulated_venue_ledger_reading_twice_settles_a_swap_once() -> None:
    now = [100.0]
    venue = landing_venue(now)
    submitted = await venue.submit(swap("order-1:1"))
    now[0] = 104.0

    first = venue.ledger()
    confirmed = await venue.confirm(submitted.tx_hash)

    assert venue.ledger() == first
    assert first[0].amount_out == confirmed.amount_out


@pytest.fixture
async def served() -> AsyncIterator[tuple[list[float], SimulatedVenue, str]]:
    """Serve the venue app on a free loopback port; yield the clock, venue and URL."""
    now = [100.0]
    venue = landing_venue(now)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app([venue], admin_token="t"), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(500):  # up to 5 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield now, venue, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def test_http_venue_ledger_returns_what_the_service_lists(
    served: tuple[list[float], SimulatedVenue, str],
) -> None:
    now, venue, url = served
    await venue.submit(swap("order-1:1"))
    now[0] = 104.0

    client = HttpVenue("meteora", url, 5.0)
    listed = await client.ledger()
    await client.aclose()

    assert listed == venue.ledger()
    assert [e.status for e in listed] == ["confirmed"]


async def test_http_venue_ledger_of_an_unknown_venue_raises_unknown_venue(
    served: tuple[list[float], SimulatedVenue, str],
) -> None:
    _, _, url = served
    client = HttpVenue("orca", url, 5.0)

    with pytest.raises(VenueError) as raised:
        await client.ledger()
    await client.aclose()

    assert raised.value.code == "UNKNOWN_VENUE"
    assert not raised.value.transient
