"""What an operator sees: metrics that move with an order, health of every process,
``oee status``, JSON log lines that carry the request's id.

Every service runs as its own process against the real broker and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from adapters.log_reader import read_topics
from adapters.ops import OPS_SERVICES, ops_address
from cli.status import collect, render
from events.messages import decode
from tests.auth import AUTH
from tests.integration.system import System
from tests.orders import SELL_SOL

ORDER = SELL_SOL

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Return every sample of a Prometheus text page by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient, system: System) -> dict[str, Samples]:
    """Return the metrics of the gateway and of every service with an operations port."""
    pages = {"gateway": f"{system.base_url}/metrics"} | {
        name: f"http://{ops_address(system.settings, name)}/metrics" for name in OPS_SERVICES
    }
    scraped = {}
    for name, url in pages.items():
        response = await http.get(url)
        assert response.status_code == 200, (name, response.text)
        scraped[name] = parse(response.text)
    return scraped


async def until_ready(http: httpx.AsyncClient, system: System, within: float = 60) -> None:
    """Wait until every service answers ready (caught up, group joined)."""
    deadline = time.monotonic() + within
    pending = set(OPS_SERVICES)
    while pending:
        for name in sorted(pending):
            url = f"http://{ops_address(system.settings, name)}/health/ready"
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == 200:
                    pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"not ready in {within}s: {sorted(pending)}")
        await asyncio.sleep(0.5)


async def follow_to_end(system: System, order_id: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    url = f"{system.ws_url}/api/orders/execute?orderId={order_id}"
    async with connect(url, additional_headers=AUTH) as socket:
        async with asyncio.timeout(60):
            try:
                async for raw in socket:
                    messages.append(json.loads(raw))
            except ConnectionClosed:
                pass
    return messages


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_an_order_moves_the_metrics_of_every_process_it_crosses(
    system: System, http: httpx.AsyncClient
) -> None:
    await until_ready(http, system)
    before = await scrape(http, system)

    response = await http.post(f"{system.base_url}/api/orders/execute", json=ORDER, headers=AUTH)
    assert response.status_code == 202, response.text
    order_id = response.json()["orderId"]
    messages = await follow_to_end(system, order_id)
    assert messages[-1]["status"] == "confirmed", messages
    # The projector batches its fetches: give it a moment to write the order.
    await asyncio.sleep(1.5)
    after = await scrape(http, system)

    def moved(service: str, name: str, **labels: str) -> float:
        return value(after[service], name, **labels) - value(before[service], name, **labels)

    assert moved("gateway", "oee_orders_submitted_total", type="market") == 1
    assert (
        moved("gateway", "oee_http_requests_total", route="/api/orders/execute", status="202") == 1
    )
    assert moved("gateway", "oee_websockets_closed_total", kind="order", code="1000") == 1
    assert moved("engine", "oee_orders_ended_total", type="market", status="confirmed") == 1
    for event in ("OrderAccepted", "OrderRouted", "TransactionSubmitted", "OrderConfirmed"):
        assert moved("engine", "oee_events_written_total", type=event) == 1, event
    assert moved("engine", "oee_events_consumed_total", consumer="engine", type="SubmitOrder") == 1
    for step in ("accepted_to_routed", "routed_to_submitted", "submitted_to_confirmed"):
        assert moved("engine", "oee_order_step_seconds_count", step=step) == 1, step
    assert moved("engine", "oee_order_step_seconds_count", step="submit_to_terminal") == 1
    venue_calls = sum(
        v - before["engine"].get(k, 0.0)
        for k, v in after["engine"].items()
        if k[0] == "oee_venue_call_seconds_count"
    )
    assert venue_calls >= 4  # a quote from each venue, the submit, the confirmation
    assert moved("projector", "oee_projector_batch_size_count", projection="orders") >= 1
    assert (
        moved("projector", "oee_events_consumed_total", consumer="projector.orders", type="any")
        >= 5
    )
    lags = [k for k in after["engine"] if k[0] == "oee_consumer_lag"]
    assert lags, "the engine reports its consumer lag"


async def test_every_process_reports_ready_and_status_prints_them_all(
    system: System, http: httpx.AsyncClient
) -> None:
    await until_ready(http, system)
    for name in OPS_SERVICES:
        address = ops_address(system.settings, name)
        live = await http.get(f"http://{address}/health/live")
        assert live.json() == {"service": name, "status": "live"}
        ready = (await http.get(f"http://{address}/health/ready")).json()
        assert ready["checks"]["broker"]["ok"], ready
        if name in ("engine", "projector", "triggers", "sweeper"):
            assert ready["checks"]["caught_up"]["ok"], ready
            assert ready["lag"], ready
    projector = (
        await http.get(f"http://{ops_address(system.settings, 'projector')}/health/ready")
    ).json()
    assert projector["checks"]["database"]["ok"]

    rows, _ = await asyncio.to_thread(collect, system.settings)
    assert {row.service for row in rows} == {"gateway", *OPS_SERVICES}
    assert all(row.status == "ready" for row in rows), render(rows)


async def test_a_stopped_service_shows_as_down_in_status(
    system: System, http: httpx.AsyncClient
) -> None:
    await until_ready(http, system)
    system.stop("sweeper")
    try:
        rows, _ = await asyncio.to_thread(collect, system.settings)
        by_name = {row.service: row for row in rows}
        assert by_name["sweeper"].status == "down"
        assert by_name["engine"].status == "ready"
    finally:
        system.start("sweeper")


async def test_the_request_id_is_answered_logged_and_correlates_the_order(
    system: System, http: httpx.AsyncClient
) -> None:
    request_id = str(uuid.uuid4())
    response = await http.post(
        f"{system.base_url}/api/orders/execute",
        json=ORDER,
        headers={"X-Request-ID": request_id, **AUTH},
    )
    assert response.status_code == 202
    assert response.headers["x-request-id"] == request_id
    order_id = response.json()["orderId"]
    messages = await follow_to_end(system, order_id)
    assert messages[-1]["status"] == "confirmed", messages
    correlations = set()
    async with read_topics(system.settings, [system.settings.events_topic]) as snapshot:
        async for batch in snapshot.batches():
            for record in batch:
                event = decode(record.value or b"")
                if str(event.order_id) == order_id:
                    correlations.add(str(event.correlation_id))
    assert correlations == {request_id}

    generated = await http.get(f"{system.base_url}/health")
    assert uuid.UUID(generated.headers["x-request-id"])

    lines = [
        json.loads(line)
        for line in (system.log_dir / "gateway.log").read_text().splitlines()
        if line.startswith("{")
    ]
    access = [
        line
        for line in lines
        if line.get("correlation_id") == request_id and "/api/orders/execute" in line["message"]
    ]
    assert access, "the access line of the POST carries its request id"
    assert access[0]["service"] == "gateway"
    assert access[0]["level"] == "INFO"
    engine = [
        json.loads(line)
        for line in (system.log_dir / "engine.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert engine
    assert all(line["service"] == "engine" for line in engine)
    # Still ours once the faust worker has set up its logging.
    assert any("metrics and health" in line["message"] for line in engine), engine
