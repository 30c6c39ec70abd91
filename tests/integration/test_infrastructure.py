"""The infrastructure the system stands on: topics, the broker and PostgreSQL, for real."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from adapters.credentials import ADMIN
from adapters.embedded.kafka import KafkaBroker
from adapters.embedded.postgres import EmbeddedPostgres
from adapters.kafka import (
    TopicMismatchError,
    client_options,
    ensure_topics,
    producer_options,
    topic_names,
)
from adapters.processes import free_port
from adapters.settings import Settings
from tests.conftest import Infra


async def partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        topics = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0}


async def produce(settings: Settings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def consume(
    settings: Settings, topic: str, count: int, timeout_s: float = 30.0
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(settings),
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                values.extend(record.value for record in records if record.value is not None)
    finally:
        await consumer.stop()
    return values


async def test_ensure_topics_new_names_creates_configured_partitions_and_rerun_is_noop(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(partitions=3)
    names = list(topic_names(settings))

    await ensure_topics(settings)
    await ensure_topics(settings)

    assert await partition_counts(settings, names) == dict.fromkeys(names, 3)


async def test_ensure_topics_existing_with_other_partition_count_raises(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(partitions=2)
    await ensure_topics(settings)

    with pytest.raises(TopicMismatchError, match="wrong partition count"):
        await ensure_topics(settings.model_copy(update={"partitions": 4}))


async def test_idempotent_producer_acks_all_round_trips_in_order_per_key(
    settings: Settings,
) -> None:
    order_id = uuid.uuid4().bytes
    sent = [f"event-{seq}".encode() for seq in range(1, 21)]

    await produce(settings, settings.events_topic, [(order_id, v) for v in sent])
    received = await consume(settings, settings.events_topic, len(sent))

    # One key, one partition: the order's history comes back in the order it was written.
    assert received == sent


async def test_database_url_answers_select_1(infra: Infra) -> None:
    async with await psycopg.AsyncConnection.connect(infra.database_url) as conn:
        cursor = await conn.execute("select 1")
        assert await cursor.fetchone() == (1,)


def test_embedded_broker_restart_on_same_data_dir_keeps_messages(infra: Infra) -> None:
    if infra.kafka_source != "embedded":
        pytest.skip("only the embedded broker's data directory is ours to restart")
    root = Path(tempfile.mkdtemp(prefix="oee-test-restart-"))
    broker = KafkaBroker(root / "kafka", port=free_port(), controller_port=free_port())
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        kafka_username=ADMIN,
        kafka_password=broker.credentials.password(ADMIN),
        partitions=1,
        data_dir=root,
    )
    try:
        broker.start()
        asyncio.run(ensure_topics(settings))
        asyncio.run(produce(settings, settings.events_topic, [(b"k", b"survives")]))
        broker.stop()
        assert not broker.running

        broker.start()

        received = asyncio.run(consume(settings, settings.events_topic, 1))
        assert received == [b"survives"]
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_embedded_postgres_restart_on_same_data_dir_keeps_rows() -> None:
    root = Path(tempfile.mkdtemp(prefix="oee-test-pg-"))
    # As root the server runs as an unprivileged user, which must traverse the temp dir.
    root.chmod(0o755)
    database = EmbeddedPostgres(root / "postgres", port=free_port())
    try:
        database.start()
        with psycopg.connect(database.url, autocommit=True) as conn:
            conn.execute("create table kept (id int primary key)")
            conn.execute("insert into kept values (42)")
        database.stop()

        database.start()

        with psycopg.connect(database.url) as conn:
            assert conn.execute("select id from kept").fetchall() == [(42,)]
    finally:
        database.stop()
        shutil.rmtree(root, ignore_errors=True)
