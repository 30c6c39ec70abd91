"""How messages enter the engine: each input offset handled once, none skipped.

faust owns the consumer; this module makes its delivery trustworthy (see ``ledger``):

* ``LedgerConsumer`` commits, per input partition, the watermark of the engine's own
  ``OffsetLedger`` instead of faust's count of acknowledged messages;
* ``Intake.admit`` hands a message over once: one received before (faust redelivers
  after a seek) is dropped;
* on a timer (``check_stalls``), a partition missing an offset below ones received
  for a second (faust skipped it), or whose log end is past what arrived while
  nothing arrives (a skipped LAST message has no successor to reveal it), is sought
  back to the missing offset;
* the ledger starts each assigned partition at the group's committed offset, read
  from the broker itself, and forgets it when the partition is revoked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from services.engine.ledger import Admission, OffsetLedger, Ticket

log = logging.getLogger(__name__)

# A partition rewound for a skipped offset is sought again if it has not come by then.
REWIND_AGAIN_S = 2.0
# An offset missing below received ones this long was skipped, not just overtaken
# by a concurrent actor: the partition is rewound to it.
GAP_S = 1.0
# A partition whose log holds offsets the engine was not handed for this long is
# rewound too: a skipped last message has no successor to reveal the gap. Not much
# shorter: under a burst, busy agents leave a partition's messages waiting that long.
STALL_S = 5.0


class LedgerConsumer(faust_aiokafka.Consumer):
    """faust's consumer, committing only offsets below which the engine handled all."""

    def _new_offset(self, tp: TP) -> int | None:
        ledger: OffsetLedger = self.app.ledger  # type: ignore[attr-defined]
        mark = ledger.committable((tp.topic, tp.partition))
        # faust's own bookkeeping of acknowledged offsets is not used for commits;
        # trim it so it does not grow.
        acked = self._acked[tp]
        if acked:
            floor = mark if mark is not None else min(acked)
            kept = [offset for offset in acked if offset >= floor]
            self._acked_index[tp].difference_update(o for o in acked if o < floor)
            acked[:] = kept
        committed = self._committed_offset[tp]
        if mark is None or (committed is not None and mark <= committed):
            return None
        return mark

    async def _seek(self, partition: TP, offset: int) -> None:
        # faust seeks from the agents' event loop, but aiokafka's consumer lives on a
        # thread of its own and may be draining its fetched records right then: the
        # seek drops a partition's records under it and the fetcher dies of a KeyError
        # (seen under a burst, taking the engine down). The seek runs on that thread.
        thread = self._thread

        async def seek() -> None:
            thread.seek(partition, offset)

        await thread.call_thread(seek)


class LedgerTransport(faust_aiokafka.Transport):
    """The aiokafka transport with the ``LedgerConsumer``."""

    Consumer = LedgerConsumer


class EngineApp(faust.App):
    """A faust app whose consumer commits the engine's ledger watermarks."""

    ledger: OffsetLedger

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ledger = OffsetLedger()
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return LedgerTransport(self.conf.broker_consumer, self)


class Intake:
    """Admit input messages in offset order; finish them when their effect is logged."""

    def __init__(
        self,
        app: EngineApp,
        *,
        topics: Iterable[str],
        client_options: Mapping[str, Any],
        group_id: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = app
        # The agents' input; the table's changelog (read by faust's recovery, never by
        # an agent) and faust's own topics are assigned too but are none of the ledger's.
        self._topics = frozenset(topics)
        self._ledger = app.ledger
        self._client_options = dict(client_options)
        self._group_id = group_id
        self._monotonic = monotonic
        self._admin: AIOKafkaAdminClient | None = None
        self._starting = asyncio.Lock()
        self._admin_lock = asyncio.Lock()
        self._rewound_at: dict[tuple[str, int], float] = {}
        self._progress_at: dict[tuple[str, int], float] = {}
        self._gap_since: dict[tuple[str, int], float] = {}
        self._seeks: set[asyncio.Future[None]] = set()
        self.rewinds = 0
        # faust types a receiver as a union of callables that mypy cannot match.
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    async def admit(self, message: Message) -> Ticket | None:
        """Return the ticket of a message to handle now, or None to drop it."""
        if message.generation_id != self._app.consumer_generation_id:
            return None  # fetched before a rebalance: it comes again in this one
        tp = (message.topic, message.partition)
        if not self._ledger.started(tp) and not await self._start(message.tp):
            return None
        verdict, ticket = self._ledger.admit(tp, message.offset)
        if verdict is Admission.DUPLICATE:
            return None
        now = self._monotonic()
        self._progress_at[tp] = now
        if self._ledger.missing(tp) is None:
            self._gap_since.pop(tp, None)
        else:
            self._gap_since.setdefault(tp, now)
        return ticket

    def finish(self, ticket: Ticket) -> None:
        """Count the ticket's offset as handled."""
        self._ledger.finish(ticket)

    async def check_stalls(self) -> int:
        """Rewind partitions missing an offset; return how many were rewound.

        Missing: below offsets received past it for ``GAP_S`` (concurrent actors
        reorder messages only slightly), or on the log while nothing arrived for
        ``STALL_S`` (a skipped last message has no successor to reveal it).
        """
        now = self._monotonic()
        rewound = 0
        for tp in self.inputs():
            key = (tp.topic, tp.partition)
            if not self._ledger.started(key):
                continue
            gap_since = self._gap_since.get(key)
            gap = gap_since is not None and now - gap_since >= GAP_S
            stalled = False
            if not gap and now - self._progress_at.setdefault(key, now) >= STALL_S:
                end = self._app.consumer.highwater(tp)
                stalled = end is not None and end > self._ledger.expected(key)
            if (gap or stalled) and await self._rewind(tp, "gap" if gap else "stall"):
                rewound += 1
        return rewound

    async def lag(self) -> dict[tuple[str, int], int]:
        """Return, per input partition, how many messages on the log are not handled yet.

        A partition no message has arrived on yet counts from the group's committed offset.
        """
        lag = {}
        waiting = []
        for tp in self.inputs():
            end = self._app.consumer.highwater(tp)
            if end is None:
                continue
            done = self._ledger.committable((tp.topic, tp.partition))
            if done is None:
                waiting.append((tp, end))
            else:
                lag[(tp.topic, tp.partition)] = max(0, end - done)
        if waiting:
            committed = await self._committed([tp for tp, _ in waiting])
            for tp, end in waiting:
                lag[(tp.topic, tp.partition)] = max(0, end - committed.get(tp, 0))
        return lag

    def inputs(self) -> list[TP]:
        """Return the assigned partitions of the agents' input topics."""
        return [tp for tp in self._app.consumer.assignment() if tp.topic in self._topics]

    async def stop(self) -> None:
        """Close the admin client."""
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def _start(self, tp: TP) -> bool:
        """Start the ledger of ``tp`` (and of every assigned partition not started yet)
        at the group's committed offsets; False if ``tp`` is not assigned here."""
        async with self._starting:
            if self._ledger.started((tp.topic, tp.partition)):
                return True
            assigned = self.inputs()
            if tp not in assigned:
                return False
            pending = [p for p in assigned if not self._ledger.started((p.topic, p.partition))]
            offsets = await self._committed(pending)
            missing = [p for p in pending if p not in offsets]
            if missing:
                # Nothing committed: the consumer starts at the log's first offset.
                offsets.update(await self._app.consumer.earliest_offsets(*missing))
            now = self._monotonic()
            for p in pending:
                key = (p.topic, p.partition)
                self._ledger.start(key, offsets[p])
                self._progress_at[key] = now
            log.info(
                "engine input starts at %s",
                ", ".join(f"{p.topic}[{p.partition}]@{offsets[p]}" for p in sorted(pending)),
            )
            return True

    async def _committed(self, partitions: list[TP]) -> dict[TP, int]:
        """Return the group's committed offset of each partition that has one."""
        async with self._admin_lock:  # the health check asks too, concurrently
            if self._admin is None:
                admin = AIOKafkaAdminClient(**self._client_options)
                await admin.start()
                self._admin = admin
        found = await self._admin.list_consumer_group_offsets(
            self._group_id, partitions=[TopicPartition(p.topic, p.partition) for p in partitions]
        )
        committed = {}
        for p in partitions:
            meta = found.get(TopicPartition(p.topic, p.partition))
            if meta is not None and meta.offset >= 0:
                committed[p] = meta.offset
        return committed

    async def _rewind(self, tp: TP, why: str) -> bool:
        """Seek ``tp`` back to its first missing offset, unless sought just now.

        Return whether a seek was started.
        """
        key = (tp.topic, tp.partition)
        now = self._monotonic()
        last = self._rewound_at.get(key)
        if last is not None and now - last < REWIND_AGAIN_S:
            return False  # sought a moment ago: give the fetch time to bring it
        self._rewound_at[key] = now
        expected = self._ledger.expected(key)
        earliest = (await self._app.consumer.earliest_offsets(tp))[tp]
        if earliest > expected:
            # Retention removed what was never handled: nothing to seek back to.
            log.error(
                "engine input %s[%d]: offsets %d..%d were deleted by retention before "
                "the engine handled them",
                tp.topic,
                tp.partition,
                expected,
                earliest - 1,
            )
            self._ledger.skip_to(key, earliest)
            expected = self._ledger.expected(key)
        self.rewinds += 1
        log.warning(
            "engine input %s[%d]: offset %d never arrived (%s); seeking back to it",
            tp.topic,
            tp.partition,
            expected,
            why,
        )
        self._progress_at[key] = now
        self._gap_since.pop(key, None)
        # Not awaited here: the agents keep draining what was fetched already (the
        # ledger drops what it saw), so the consumer is free to carry out the seek.
        seek = asyncio.ensure_future(self._app.consumer.seek(tp, expected))
        self._seeks.add(seek)
        seek.add_done_callback(self._seeks.discard)
        return True

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # faust committed the watermarks before this signal (revoked partitions are
        # its argument); the next assignment starts from the broker's committed offsets.
        self._forget(args[0])

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        self._forget(args[0])

    def _forget(self, partitions: Iterable[TP]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._ledger.forget(keys)
        for key in keys:
            self._rewound_at.pop(key, None)
            self._progress_at.pop(key, None)
            self._gap_since.pop(key, None)
