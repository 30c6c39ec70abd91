"""The gateway's only write: a command onto the commands topic, keyed by order id.

The producer is idempotent with acks=all, so a command is answered for only once
every in-sync replica holds it.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from adapters.settings import Settings
from events.messages import Command, encode, order_key
from services.gateway.errors import ApiError

log = logging.getLogger(__name__)


class CommandWriter:
    """Write commands to the log and wait for the broker's acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "the command writer is not started"
        return self._producer

    async def start(self) -> None:
        # aiokafka binds to the running loop, so it is created here and not in __init__.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap, acks="all", enable_idempotence=True
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def partitions(self, topic: str) -> set[int]:
        """Return the partition numbers of ``topic``."""
        return set(await self.producer.partitions_for(topic))

    async def write(self, command: Command) -> None:
        """Write ``command``; raise ``ApiError`` 503 when the broker does not take it."""
        try:
            await self.producer.send_and_wait(
                self._settings.commands_topic, encode(command), key=order_key(command.order_id)
            )
        except KafkaError as exc:
            log.error("command for %s not written: %r", command.order_id, exc)
            raise ApiError(503, "BROKER_UNAVAILABLE", "the order log is unavailable") from exc
