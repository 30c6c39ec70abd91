"""The gateway's only write: a command onto the commands topic, keyed by order id.

The producer is idempotent with acks=all, so a command is answered for only once
every in-sync replica holds it, and within ``produce_timeout_s`` either way:

* the command is handed to the producer only once the connection to its
  partition's leader is up. Otherwise nothing was sent, and the answer is a plain
  503 ``BROKER_UNAVAILABLE``: the command will never be written.
* a command handed over and not acknowledged in time may or may not be on the
  log: the answer is 503 with ``"outcome": "unknown"`` and the order id. If the
  broker does not answer either, the producer is then abandoned (``_discard``)
  and a fresh one started, so nothing it still held is sent when the broker
  comes back: aiokafka retries an idempotent producer's batches for ever, so
  that a command the client was told failed would otherwise be written minutes
  later. A broker that answers but acknowledges slowly keeps its producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from adapters.kafka import producer_options
from adapters.settings import Settings
from events.messages import Command, encode, order_key
from services.gateway.errors import broker_unavailable, outcome_unknown

log = logging.getLogger(__name__)

# How long past the producer's own request timeout a write waits for the acknowledgement.
_ACK_GRACE_S = 0.5
# How often a gateway without a producer tries to start one.
_RECONNECT_EVERY_S = 1.0
# How long the health check waits for the broker's metadata.
_PROBE_TIMEOUT_S = 1.0


class _LeaderNotReady(Exception):
    """The connection to the partition's leader is down: nothing can be sent now."""


class CommandWriter:
    """Write commands to the log and wait, for a bounded time, for the broker's acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout_s = settings.produce_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._checking: asyncio.Task[None] | None = None
        self._discarding: set[asyncio.Task[None]] = set()

    def _new_producer(self) -> AIOKafkaProducer:
        # aiokafka binds to the running loop, so producers are made in coroutines only.
        return AIOKafkaProducer(
            **producer_options(self._settings), request_timeout_ms=int(self._timeout_s * 1000)
        )

    async def start(self) -> None:
        """Start the producer; raise when the broker cannot be reached."""
        producer = self._new_producer()
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        for task in (self._reconnecting, self._checking):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                # A clean stop flushes what is queued, which never ends without a broker.
                await asyncio.wait_for(producer.stop(), self._timeout_s)
            except TimeoutError:
                await _discard(producer, self._timeout_s)
        await asyncio.gather(*self._discarding, return_exceptions=True)

    async def partitions(self, topic: str) -> set[int]:
        """Return the partition numbers of ``topic``."""
        assert self._producer is not None, "the command writer is not started"
        return set(await self._producer.partitions_for(topic))

    async def write(self, command: Command) -> None:
        """Write ``command``, or raise ``ApiError`` 503 (saying whether it may be on the log)."""
        producer = self._producer
        if producer is None:
            self._reconnect()
            raise broker_unavailable()
        topic, key = self._settings.commands_topic, order_key(command.order_id)
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                await _leader_ready(producer, topic, key)
                # Until ``send`` returns, the command is not in the producer: a timeout
                # here cancels it before it is queued.
                delivery = await producer.send(topic, encode(command), key=key)
        except (_LeaderNotReady, TimeoutError, KafkaError) as exc:
            log.warning("command for %s not written: %r", command.order_id, exc)
            raise broker_unavailable() from exc
        try:
            async with asyncio.timeout_at(deadline + _ACK_GRACE_S):
                await asyncio.shield(delivery)
        except (TimeoutError, KafkaError) as exc:
            log.error("command for %s not acknowledged: %r", command.order_id, exc)
            if self._checking is None or self._checking.done():
                self._checking = asyncio.create_task(self._abandon_if_silent(producer))
            raise outcome_unknown(command.order_id) from exc

    async def reachable(self) -> bool:
        """Tell whether the broker answers a metadata request now."""
        producer = self._producer
        if producer is None:
            self._reconnect()
            return False
        return await _answers(producer)

    async def _abandon_if_silent(self, producer: AIOKafkaProducer) -> None:
        if not await _answers(producer):
            self._abandon(producer)

    def _abandon(self, producer: AIOKafkaProducer) -> None:
        """Stop using ``producer``: discard what it holds and start a fresh one."""
        if self._producer is not producer:
            return  # another write abandoned it already
        self._producer = None
        task = asyncio.create_task(_discard(producer, self._timeout_s), name="discard-producer")
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)
        self._reconnect()

    def _reconnect(self) -> None:
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(self._start_again(), name="producer")

    async def _start_again(self) -> None:
        while self._producer is None:
            producer = self._new_producer()
            try:
                await asyncio.wait_for(producer.start(), self._timeout_s)
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("the broker is still unavailable: %r", exc)
                with contextlib.suppress(TimeoutError, KafkaError, OSError):
                    await asyncio.wait_for(producer.stop(), self._timeout_s)
                await asyncio.sleep(_RECONNECT_EVERY_S)
                continue
            log.info("the broker is back: a new producer is started")
            self._producer = producer


async def _answers(producer: AIOKafkaProducer) -> bool:
    """Tell whether the broker answers ``producer``'s metadata request within a second."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), _PROBE_TIMEOUT_S)
    except (TimeoutError, KafkaError):
        return False
    return True


async def _leader_ready(producer: AIOKafkaProducer, topic: str, key: bytes) -> None:
    """Return once the connection to the leader of ``key``'s partition is up, else raise."""
    cluster = producer.client.cluster
    partitions = cluster.partitions_for_topic(topic) or await producer.partitions_for(topic)
    # The producer picks the partition the same way (its default partitioner).
    available = list(cluster.available_partitions_for_topic(topic))
    partition = DefaultPartitioner()(key, list(partitions), available)
    leader = cluster.leader_for_partition(TopicPartition(topic, partition))
    if leader is None or leader < 0 or not await producer.client.ready(leader):
        raise _LeaderNotReady(f"no connection to the leader of {topic}[{partition}]")


async def _discard(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """Stop ``producer`` without sending anything it still holds.

    A clean ``stop`` flushes, which is what must not happen. aiokafka has no public
    way to drop queued batches, hence its internals here (pinned below 0.15 in
    pyproject.toml): the sender task is cancelled, so nothing more goes out, and
    the connections are closed. What the producer held is dropped with it; a
    write still waiting for it ends at its own deadline, outcome unknown.
    """
    sender_task = producer._sender.sender_task
    if sender_task is not None:
        sender_task.cancel()
        # It lets the requests in flight finish first, each bounded by the request timeout.
        await asyncio.wait({sender_task}, timeout=timeout_s)
    try:
        await asyncio.wait_for(producer.client.close(), timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("an abandoned producer did not close cleanly: %r", exc)
    producer._closed = True  # stopped as far as it can be; spares the "unclosed" warning
