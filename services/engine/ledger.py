"""Which input offsets the engine has handled, so no commit ever passes one it has not.

faust-streaming can hand a message to no agent at all: at the end of table recovery
it resumes the stream partitions before seeking them to their committed offsets, and
a batch fetched in between is cut short, or skipped for a generation change, with
its remaining messages acknowledged unprocessed. Its commit logic then moves the
group's offset past them (its check for a gap at the head is skipped when a
partition had no committed offset, and is off by one otherwise). Commands written
around an engine restart were lost that way: on the log, never handled.

The ledger is the engine's own account, independent of faust's. Per input partition
it knows the frontier (the first offset not received yet), the offsets received
beyond it (concurrent actors take messages in order but may reach the ledger a
little out of order), and the offsets handed to a handler and not finished; so the
watermark, below which every offset was received and finished. The engine's
consumer commits that watermark and nothing else. An offset missing below ones
received beyond it is a gap while it lasts: the intake rewinds the partition to it
when it has not come by itself. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


class Admission(enum.Enum):
    """What to do with a message that arrived at an offset."""

    HANDLE = "handle"  # not received before: hand it to a handler
    DUPLICATE = "duplicate"  # received before (handled, or in hand): drop it


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted offset; finishing it moves the watermark (unless its epoch ended)."""

    topic: str
    partition: int
    offset: int
    epoch: int


@dataclass(slots=True)
class _Partition:
    epoch: int
    frontier: int  # the first offset not received
    beyond: set[int] = field(default_factory=set)  # received past the frontier
    in_flight: set[int] = field(default_factory=set)
    # The offset up to which the group may commit, as last reported.
    watermark: int = 0

    def advance(self) -> None:
        self.watermark = min(self.in_flight) if self.in_flight else self.frontier
        self.watermark = min(self.watermark, self.frontier)


class OffsetLedger:
    """Track received and finished offsets per input partition."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._epochs = 0

    def started(self, tp: TopicPartition) -> bool:
        """Tell whether ``tp`` has a start offset in this assignment."""
        return tp in self._partitions

    def start(self, tp: TopicPartition, offset: int) -> None:
        """Begin tracking ``tp`` from ``offset``: the group's committed position."""
        self._epochs += 1
        self._partitions[tp] = _Partition(self._epochs, offset, watermark=offset)

    def forget(self, partitions: set[TopicPartition] | list[TopicPartition]) -> None:
        """Stop tracking partitions (revoked or reassigned); their tickets become void."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    def admit(self, tp: TopicPartition, offset: int) -> tuple[Admission, Ticket | None]:
        """Admit a message at ``offset`` of a started partition unless received before."""
        part = self._partitions[tp]
        if offset < part.frontier or offset in part.beyond:
            return Admission.DUPLICATE, None
        part.in_flight.add(offset)
        if offset == part.frontier:
            part.frontier += 1
            while part.frontier in part.beyond:
                part.beyond.remove(part.frontier)
                part.frontier += 1
        else:
            part.beyond.add(offset)
        part.advance()
        return Admission.HANDLE, Ticket(tp[0], tp[1], offset, part.epoch)

    def missing(self, tp: TopicPartition) -> int | None:
        """Return the first offset missing below received ones (a gap), or None."""
        part = self._partitions[tp]
        return part.frontier if part.beyond else None

    def expected(self, tp: TopicPartition) -> int:
        """Return the first offset of ``tp`` not received yet."""
        return self._partitions[tp].frontier

    def skip_to(self, tp: TopicPartition, offset: int) -> None:
        """Accept that offsets below ``offset`` no longer exist (retention removed them)."""
        part = self._partitions[tp]
        if offset > part.frontier:
            part.frontier = offset
            part.beyond = {o for o in part.beyond if o > offset}
            while part.frontier in part.beyond:
                part.beyond.remove(part.frontier)
                part.frontier += 1
            part.advance()

    def finish(self, ticket: Ticket) -> None:
        """Mark a ticket's offset handled; a ticket of an ended assignment is ignored."""
        part = self._partitions.get((ticket.topic, ticket.partition))
        if part is None or part.epoch != ticket.epoch:
            return
        part.in_flight.discard(ticket.offset)
        part.advance()

    def committable(self, tp: TopicPartition) -> int | None:
        """Return the offset the group may commit for ``tp``: all below it are handled."""
        part = self._partitions.get(tp)
        return part.watermark if part is not None else None

    def in_flight(self, tp: TopicPartition) -> int:
        """Return how many offsets of ``tp`` are admitted and not finished."""
        part = self._partitions.get(tp)
        return len(part.in_flight) if part is not None else 0
