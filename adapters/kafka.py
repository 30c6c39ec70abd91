"""Create the log's topics explicitly, with the configured partition count.

The broker never auto-creates topics: commands and order events must share one
partition count (both are keyed by order id), so a topic that silently appeared
with a default count would break per-order ordering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)

from adapters.backoff import until_reachable
from adapters.settings import Settings
from events.messages import Command, encode, order_key

log = logging.getLogger(__name__)


class TopicMismatchError(RuntimeError):
    """A topic exists with a layout other than the configured one."""


def topic_names(settings: Settings) -> tuple[str, ...]:
    """Return every topic the system uses."""
    return (
        settings.commands_topic,
        settings.events_topic,
        settings.dead_letter_topic,
        settings.market_topic,
        settings.accounts_topic,
    )


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """Return the broker settings of a topic: the market topic keeps each pool's last
    state, the accounts topic each key's last record; every topic the in-sync replicas
    configured (``durability``)."""
    if name not in (settings.market_topic, settings.accounts_topic):
        return durability(settings)
    # Compacted: the last message of every pool survives, older ones are cleaned up
    # soon after (short segments), so a reader from the start sees today's market.
    return {
        "cleanup.policy": "compact",
        "segment.ms": "60000",
        "min.cleanable.dirty.ratio": "0.1",
        **durability(settings),
    }


def durability(settings: Settings) -> dict[str, str]:
    """Return the topic setting of ``min_insync_replicas``, if it is set."""
    if settings.min_insync_replicas is None:
        return {}
    return {"min.insync.replicas": str(settings.min_insync_replicas)}


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Return the partition count of each of ``names`` that exists and is fully created."""
    found: dict[str, int] = {}
    topics: list[dict[str, Any]] = await admin.describe_topics(names)
    for topic in topics:
        if topic["error_code"] == UnknownTopicOrPartitionError.errno:
            continue
        if topic["error_code"]:
            # Typically LEADER_NOT_AVAILABLE right after creation: not ready yet.
            continue
        partitions = topic["partitions"]
        if all(p["error_code"] == 0 and p["leader"] >= 0 for p in partitions):
            found[topic["topic"]] = len(partitions)
    return found


async def ensure_topics(settings: Settings, *, wait_s: float = 30.0) -> None:
    """Create the commands, events, dead-letter and market topics unless they exist.

    Idempotent. Raise ``TopicMismatchError`` if a topic exists with a partition count
    other than ``settings.partitions``. Return once every partition has a leader.
    """
    names = list(topic_names(settings))
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=int(wait_s * 1000))
    await admin.start()
    try:
        existing = await _describe(admin, names)
        missing = [name for name in names if name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name=name,
                        num_partitions=settings.partitions,
                        replication_factor=settings.replication_factor,
                        topic_configs=topic_config(settings, name),
                    )
                    for name in missing
                ]
            )
            for name, code, *rest in response.topic_errors:
                # Already exists: another process created it between describe and create.
                if code and code != TopicAlreadyExistsError.errno:
                    message = rest[0] if rest else ""
                    raise for_code(code)(f"could not create topic {name}: {message}")
                if code == 0:
                    log.info("created topic %s (%d partitions)", name, settings.partitions)
        deadline = time.monotonic() + wait_s
        while True:
            existing = await _describe(admin, names)
            if len(existing) == len(names):
                break
            if time.monotonic() > deadline:
                absent = sorted(set(names) - set(existing))
                raise TimeoutError(f"topics {absent} have no leader after {wait_s:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()

    if any(count != settings.partitions for count in existing.values()):
        raise TopicMismatchError(mismatch_message(existing, settings.partitions))


def mismatch_message(existing: dict[str, int], configured: int) -> str:
    """Return why topics whose partition counts are not all ``configured`` are refused,
    and what to do about it (README "Choosing the partition count")."""
    wrong = {name: count for name, count in existing.items() if count != configured}
    details = ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items()))
    counts = sorted(set(existing.values()))
    keep = (
        f"set OEE_PARTITIONS={counts[0]}, the count they have"
        if len(counts) == 1
        else f"no OEE_PARTITIONS fits: they disagree among themselves ({counts})"
    )
    return (
        f"topics exist with the wrong partition count ({details}; configured "
        f"OEE_PARTITIONS={configured}). An order's messages are keyed by its id and must "
        "share one partition number across the topics: another count moves keys to other "
        "partitions and splits the history of orders in flight, so nothing starts. To run "
        f"on these topics, {keep}. To change the count, stop every service once no order "
        "is in flight, then start on new topics with the new count: empty ones (a new log), "
        "or copies of these, record by record with their keys, named by OEE_*_TOPIC; see "
        "README, 'Choosing the partition count'."
    )


async def await_topics(settings: Settings) -> None:
    """``ensure_topics``, waiting with backoff while the broker cannot be reached.

    A service started while the broker restarts waits for it instead of exiting; a
    topic with the wrong layout still raises ``TopicMismatchError`` at once.
    """
    await until_reachable(
        lambda: ensure_topics(settings), broker_unreachable, f"Kafka at {settings.bootstrap}"
    )


def broker_unreachable(exc: Exception) -> bool:
    """Tell whether ``exc`` means the broker is down or not ready yet (worth a retry)."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    # A connection refused, or no partition leader yet (ensure_topics' own wait).
    return isinstance(exc, (OSError, TimeoutError))


def client_options(settings: Settings) -> dict[str, Any]:
    """Return where and how every Kafka client of this process connects: its own login.

    With ``kafka_username`` set the client authenticates with SASL/SCRAM; without, it
    connects unauthenticated (PLAINTEXT), as to an external broker that asks for nothing.
    """
    options: dict[str, Any] = {"bootstrap_servers": settings.bootstrap}
    if settings.kafka_username is not None:
        options |= {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_username,
            "sasl_plain_password": settings.kafka_password,
        }
    return options


def producer_options(settings: Settings) -> dict[str, Any]:
    """Return what every producer of the system uses: acks=all, idempotent, batching.

    ``linger_ms`` lets the messages of concurrent requests share one produce request;
    the broker's CPU is spent per request far more than per message.
    """
    return client_options(settings) | {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.kafka_linger_ms,
        "max_batch_size": settings.kafka_max_batch_bytes,
    }


def group_options(settings: Settings) -> dict[str, Any]:
    """Return the session of a consumer group member: how long the group waits for a
    member that stopped answering before its partitions go to another."""
    session_s = settings.broker_session_timeout_s
    return {
        "session_timeout_ms": int(session_s * 1000),
        "heartbeat_interval_ms": int(min(3.0, session_s / 3) * 1000),
    }


def batch_consumer_options(settings: Settings) -> dict[str, Any]:
    """Return the fetch options of a consumer that prefers batches to latency."""
    return {
        "fetch_min_bytes": settings.batch_fetch_min_bytes,
        "fetch_max_wait_ms": settings.batch_fetch_max_wait_ms,
    }


async def send_commands(
    producer: AIOKafkaProducer, topic: str, commands: Sequence[Command]
) -> None:
    """Write commands keyed by order, in order, and wait until every one is acknowledged."""
    sent = [
        await producer.send(topic, encode(command), key=order_key(command.order_id))
        for command in commands
    ]
    await asyncio.gather(*sent)
