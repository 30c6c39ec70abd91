"""What this gateway knows of submissions: idempotency keys and commands not yet accepted.

A submission is known from the log tail (any gateway's) or from this gateway's
own write, so a client reads its own order before the engine has accepted it,
and a retried ``Idempotency-Key`` is recognised without asking the database.
Both memories are bounded: the least recently used go first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from adapters.locks import KeyedLocks
from events.messages import SubmitOrder
from services.gateway.errors import gateway_busy


class Turns:
    """Let ``at_once`` submissions be worked on at a time; the rest wait in order of
    arrival, at most ``wait_s``, then are refused (503 ``GATEWAY_BUSY``, unwritten).

    A burst handled all at once shares the event loop so thinly that acknowledgements
    already on their way outwait the produce timeout; a waiting request costs nothing
    but its connection.
    """

    def __init__(self, at_once: int, wait_s: float) -> None:
        self._slots = asyncio.Semaphore(at_once)
        self._wait_s = wait_s

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the slots for the block; raise ``GATEWAY_BUSY`` if none frees in time."""
        try:
            async with asyncio.timeout(self._wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise gateway_busy(self._wait_s) from None
        try:
            yield
        finally:
            self._slots.release()


@dataclass(frozen=True, slots=True)
class Submission:
    """What a gateway knows of an earlier submission under an idempotency key."""

    order_id: uuid.UUID
    request_hash: str


class Submissions:
    """Idempotency keys seen, and the first submission of each recent order."""

    def __init__(self, max_keys: int = 10_000, max_orders: int = 2000) -> None:
        self._max_keys = max_keys
        self._max_orders = max_orders
        # Idempotency keys are each account's own: (account, key).
        self._keys: OrderedDict[tuple[str | None, str], Submission] = OrderedDict()
        self._commands: OrderedDict[uuid.UUID, SubmitOrder] = OrderedDict()
        self._locks = KeyedLocks()

    def record_submission(self, command: SubmitOrder) -> None:
        """Remember a submission read from the log, or just written to it by this gateway."""
        if command.order_id in self._commands:
            self._commands.move_to_end(command.order_id)
        else:
            self._commands[command.order_id] = command  # the first one is what was asked
            _trim(self._commands, self._max_orders)
        if command.idempotency_key is not None:
            self.remember(
                command.account, command.idempotency_key, command.order_id, command.request_hash
            )

    def submitted(self, order_id: uuid.UUID) -> SubmitOrder | None:
        """Return the first submission of an order, if known."""
        return self._commands.get(order_id)

    def remember(self, account: str | None, key: str, order_id: uuid.UUID, digest: str) -> None:
        """Record a submission made by ``account`` under an idempotency key."""
        scoped = (account, key)
        self._keys[scoped] = Submission(order_id, digest)
        self._keys.move_to_end(scoped)
        _trim(self._keys, self._max_keys)

    def submission(self, account: str | None, key: str) -> Submission | None:
        """Return the submission ``account`` recorded under an idempotency key, if seen."""
        return self._keys.get((account, key))

    @asynccontextmanager
    async def hold(self, account: str, key: str) -> AsyncIterator[None]:
        """Run the block alone among ``account``'s submissions under the same key."""
        async with self._locks.hold((account, key)):
            yield


def _trim(memory: OrderedDict[Any, Any], size: int) -> None:
    while len(memory) > size:
        memory.popitem(last=False)
