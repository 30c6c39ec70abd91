"""The gateway while its broker or its database is down, and after they come back.

Each fault runs on a private embedded broker or PostgreSQL of this module's own,
killed, frozen or stopped and then started again; the gateway is served in the
test's event loop, configured as ``oee gateway`` runs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from adapters.credentials import ADMIN
from adapters.embedded.kafka import KafkaBroker
from adapters.embedded.postgres import EmbeddedPostgres
from adapters.kafka import ensure_topics
from adapters.log_reader import read_topics
from adapters.processes import free_port
from adapters.settings import Settings
from domain.accounts import DEV_ACCOUNT
from events.messages import SubmitOrder, decode
from projections.contract import ensure_schema
from projections.registry import PROJECTIONS
from services.gateway.intake import idempotent_order_id
from tests.auth import AUTH
from tests.gateway_server import serving

PRODUCE_TIMEOUT_S = 2.0
DATABASE_TIMEOUT_S = 1.0
ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "slippageBps": 50}


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker of this module's own, which its tests kill, freeze and restart."""
    broker = KafkaBroker(
        tmp_path_factory.mktemp("broker") / "kafka", port=free_port(), controller_port=free_port()
    )
    broker.start()
    try:
        yield broker
    finally:
        if broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)  # a failed test may leave it frozen
        broker.stop()


@pytest.fixture(scope="module")
def private_database() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this module's own, which its tests stop and start."""
    # Outside pytest's temporary directories: PostgreSQL runs as an unprivileged
    # user when we are root, and it must be able to reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="oee-test-"))
    root.chmod(0o755)
    database = EmbeddedPostgres(root / "postgres", port=free_port())
    try:
        database.start()
        yield database
    finally:
        database.stop()
        shutil.rmtree(root, ignore_errors=True)


async def create_read_models(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for projection in PROJECTIONS.values():
            await ensure_schema(conn, projection())


@pytest.fixture
async def gateway_settings(
    isolated_settings: Callable[..., Settings], tmp_path: Path
) -> Callable[..., Any]:
    """Return ``await make(**overrides)``: settings with topics and read models in place."""

    async def make(**overrides: Any) -> Settings:
        settings = isolated_settings(
            tmp_path,
            produce_timeout_s=PRODUCE_TIMEOUT_S,
            database_timeout_s=DATABASE_TIMEOUT_S,
            **overrides,
        )
        await ensure_topics(settings)
        await create_read_models(settings.database_url or "")
        return settings

    return make


@pytest.fixture
async def fresh_read_models(fresh_database_url: str) -> str:
    await create_read_models(fresh_database_url)
    return fresh_database_url


async def post(
    client: httpx.AsyncClient, key: str | None = None, body: dict[str, Any] | None = None
) -> tuple[httpx.Response, float]:
    """POST an order; return the answer and how long it took."""
    headers = {"Idempotency-Key": key} if key else {}
    started = time.monotonic()
    response = await client.post("/api/orders/execute", json=body or ORDER, headers=headers)
    return response, time.monotonic() - started


async def answers(client: httpx.AsyncClient, path: str, within: float = 60) -> float:
    """Wait until ``GET path`` answers 200; return how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            if (await client.get(path)).status_code == 200:
                return time.monotonic() - started
            await asyncio.sleep(0.1)


async def submissions_on_log(settings: Settings) -> list[uuid.UUID]:
    """Return the order id of every SubmitOrder on the commands topic, in log order."""
    found: list[uuid.UUID] = []
    async with read_topics(settings, [settings.commands_topic]) as snapshot:
        async for batch in snapshot.batches():
            for record in batch:
                message = decode(record.value or b"")
                if isinstance(message, SubmitOrder):
                    found.append(message.order_id)
    return found


def kill(broker: KafkaBroker) -> None:
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGKILL)
    broker.stop()  # reaps it


def assert_unavailable(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == code


async def test_gateway_broker_killed_answers_503_at_once_and_writes_none_of_them_later(
    private_broker: KafkaBroker, gateway_settings: Callable[..., Any], fresh_read_models: str
) -> None:
    settings = await gateway_settings(
        kafka_bootstrap=private_broker.bootstrap,
        kafka_password=private_broker.credentials.password(ADMIN),
        database_url=fresh_read_models,
    )
    run = uuid.uuid4().hex[:8]
    async with (
        serving(settings) as base,
        httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client,
    ):
        before, _ = await post(client, key=f"{run}-before")
        assert before.status_code == 202, before.text

        kill(private_broker)
        refused = [await post(client, key=f"{run}-outage-{n}") for n in range(5)]
        refused += [await post(client) for _ in range(3)]
        health = await client.get("/health")

        await asyncio.to_thread(private_broker.start)
        recovered_in = await answers(client, "/health")
        after, _ = await post(client, key=f"{run}-after")
        assert after.status_code == 202, after.text

    for response, took in refused:
        assert_unavailable(response, "BROKER_UNAVAILABLE")
        assert "outcome" not in response.json()["error"]
        assert took < PRODUCE_TIMEOUT_S + 1
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"] == {"log": False, "database": True}
    print(f"healthy again {recovered_in:.1f}s after the broker was started")

    on_log = await submissions_on_log(settings)
    never_written = {
        idempotent_order_id(settings.order_secret(), DEV_ACCOUNT, f"{run}-outage-{n}")
        for n in range(5)
    }
    assert not never_written & set(on_log)
    assert sorted(on_log) == sorted(
        [uuid.UUID(before.json()["orderId"]), uuid.UUID(after.json()["orderId"])]
    )


async def test_gateway_broker_frozen_answers_503_outcome_unknown_and_a_retry_resolves_it(
    private_broker: KafkaBroker, gateway_settings: Callable[..., Any], fresh_read_models: str
) -> None:
    settings = await gateway_settings(
        kafka_bootstrap=private_broker.bootstrap,
        kafka_password=private_broker.credentials.password(ADMIN),
        database_url=fresh_read_models,
    )
    key = f"frozen-{uuid.uuid4().hex[:8]}"
    async with (
        serving(settings) as base,
        httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client,
    ):
        assert (await post(client))[0].status_code == 202  # the connection is up
        assert private_broker.pid is not None
        os.kill(private_broker.pid, signal.SIGSTOP)
        try:
            unknown, took = await post(client, key=key)
            health = await client.get("/health")
        finally:
            os.kill(private_broker.pid, signal.SIGCONT)
        # The same key and body again, until the broker answers: the same order.
        async with asyncio.timeout(60):
            while (retry := (await post(client, key=key))[0]).status_code != 202:
                assert_unavailable(retry, "BROKER_UNAVAILABLE")
                await asyncio.sleep(0.5)

    assert_unavailable(unknown, "BROKER_UNAVAILABLE")
    error = unknown.json()["error"]
    assert error["outcome"] == "unknown"
    assert error["orderId"] == str(idempotent_order_id(settings.order_secret(), DEV_ACCOUNT, key))
    assert PRODUCE_TIMEOUT_S <= took < PRODUCE_TIMEOUT_S + 1.5
    assert health.json()["checks"]["log"] is False
    assert retry.json()["orderId"] == error["orderId"]
    assert uuid.UUID(error["orderId"]) in await submissions_on_log(settings)


async def test_gateway_database_stopped_reads_fail_fast_intake_goes_on_and_recovers(
    private_database: EmbeddedPostgres, gateway_settings: Callable[..., Any]
) -> None:
    settings = await gateway_settings(database_url=private_database.url)
    known_key, new_key = f"known-{uuid.uuid4().hex[:8]}", f"new-{uuid.uuid4().hex[:8]}"
    async with (
        serving(settings) as base,
        httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client,
    ):
        first, _ = await post(client, key=known_key)
        assert first.status_code == 202, first.text
        order_id = first.json()["orderId"]

        await asyncio.to_thread(private_database.stop)
        reads = []
        for path in (f"/api/orders/{order_id}", "/api/orders", "/api/analytics"):
            started = time.monotonic()
            reads.append((await client.get(path), time.monotonic() - started))
        health = await client.get("/health")
        keyless, _ = await post(client)
        retried, _ = await post(client, key=known_key)
        unknown_key, unknown_took = await post(client, key=new_key)

        await asyncio.to_thread(private_database.start)
        recovered_in = await answers(client, "/api/orders", within=30)
        healthy_in = await answers(client, "/health", within=30)

    for response, took in reads:
        assert_unavailable(response, "DATABASE_UNAVAILABLE")
        assert took < 2 * DATABASE_TIMEOUT_S + 0.5
    assert health.status_code == 503
    assert health.json()["checks"] == {"log": True, "database": False}
    assert keyless.status_code == 202, keyless.text
    assert retried.status_code == 202, retried.text
    assert retried.json() == {"orderId": order_id, "status": "pending"}
    assert_unavailable(unknown_key, "DATABASE_UNAVAILABLE")
    assert unknown_took < 2 * DATABASE_TIMEOUT_S + 0.5
    assert recovered_in < 5
    assert healthy_in < 5
    print(f"reads answered again {recovered_in:.1f}s after the database was started")
