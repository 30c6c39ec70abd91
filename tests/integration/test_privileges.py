"""Least privilege inside: each process may do its own work on the log and the read models alone.

The whole system runs as processes, each logged into the embedded broker and
database as its own principal. A forged order event written with another process's
login is refused by the broker, a client without a login is refused at all, and the
read models refuse a write from a role that only reads them; orders still run end
to end.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from adapters.kafka import client_options, producer_options
from adapters.settings import Settings
from events.messages import OrderCancelled, encode, order_key
from tests import logins
from tests.auth import AUTH
from tests.integration.system import System
from tests.integration.test_order_flow import ORDER, read_model_row, submit
from tests.logins import as_principal, as_service


@pytest.fixture(autouse=True)
def embedded_only() -> None:
    current = logins.current()
    if current is None or not (current.kafka and current.database):
        pytest.skip("the logins and rules of the embedded broker and database are ours to test")


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=30, headers=AUTH) as http:
        yield http


async def confirmed_order(system: System, client: httpx.AsyncClient) -> str:
    order_id = await submit(client, ORDER)
    await read_model_row(system.settings.database_url or "", order_id, "confirmed")
    return order_id


def forged_cancel(order_id: str) -> OrderCancelled:
    """A cancellation of a confirmed order, as an attacker on this machine would write it."""
    return OrderCancelled(
        message_id=uuid.uuid4(),
        order_id=uuid.UUID(order_id),
        seq=6,
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
        reason="forged",
    )


async def write(settings: Settings, topic: str, order_id: str) -> None:
    producer = AIOKafkaProducer(**producer_options(settings), request_timeout_ms=10_000)
    await producer.start()
    try:
        event = forged_cancel(order_id)
        await producer.send_and_wait(topic, encode(event), key=order_key(event.order_id))
    finally:
        await producer.stop()


@pytest.mark.parametrize("principal", ["gateway", "triggers", "sweeper", "market", "projector"])
async def test_event_forged_with_a_non_engine_login_is_refused_and_the_order_stands(
    system: System, client: httpx.AsyncClient, principal: str
) -> None:
    order_id = await confirmed_order(system, client)
    forger = as_principal(system.settings, principal)

    with pytest.raises(TopicAuthorizationFailedError):
        await write(forger, system.settings.events_topic, order_id)

    row = await read_model_row(system.settings.database_url or "", order_id, "confirmed")
    assert row["status"] == "confirmed"


async def test_client_without_login_is_refused(system: System) -> None:
    anonymous = system.settings.model_copy(update={"kafka_username": None, "kafka_password": None})
    producer = AIOKafkaProducer(**client_options(anonymous), request_timeout_ms=5_000)

    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()


async def test_client_with_a_wrong_password_is_refused(system: System) -> None:
    impostor = as_principal(system.settings, "engine").model_copy(
        update={"kafka_password": "not-the-password"}
    )
    producer = AIOKafkaProducer(**client_options(impostor), request_timeout_ms=5_000)

    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()


async def test_command_written_with_the_gateway_login_is_accepted(system: System) -> None:
    # The gateway's login may do its own work: write commands (here a cancel nobody
    # asked for is harmless: the order id is unknown).
    gateway = as_service(system.settings, "gateway")
    producer = AIOKafkaProducer(**producer_options(gateway))
    await producer.start()
    try:
        await producer.send_and_wait(system.settings.commands_topic, b"{}", key=b"k")
    finally:
        await producer.stop()


@pytest.mark.parametrize("service", ["gateway", "triggers", "sweeper"])
async def test_read_model_write_with_a_reader_role_is_refused_while_reads_work(
    system: System, client: httpx.AsyncClient, service: str
) -> None:
    order_id = await confirmed_order(system, client)
    reader = as_service(system.settings, service).database_url
    assert reader is not None

    async with await psycopg.AsyncConnection.connect(reader, autocommit=True) as conn:
        cursor = await conn.execute(
            "select status from orders where order_id = %s", (uuid.UUID(order_id),)
        )
        assert await cursor.fetchone() == ("confirmed",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(
                "update orders set status = 'cancelled' where order_id = %s",
                (uuid.UUID(order_id),),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(
                "insert into projection_offsets (projection, topic, partition, next_offset) "
                "values ('orders', 'orders.events', 0, 0)"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("delete from order_events")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("create table planted (id int)")


async def test_database_login_without_password_is_refused(system: System) -> None:
    url = system.settings.database_url
    assert url is not None
    bare = url.replace(url.split("//", 1)[1].split("@", 1)[0] + "@", "postgres@")

    with pytest.raises(psycopg.OperationalError, match="password"):
        await psycopg.AsyncConnection.connect(bare, connect_timeout=5)
