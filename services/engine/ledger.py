"""Which input offsets the engine has handled, so no commit ever passes one it has not.

faust-streaming can hand a message to no agent at all: at the end of table recovery
it resumes the stream partitions before seeking them to their committed offsets, and
a batch fetched in between is cut short, or skipped for a generation change, with
its remaining messages acknowledged unprocessed. Its commit logic then moves the
group's offset past them (its check for a gap at the head is skipped when a
partition had no committed offset, and is off by one otherwise). Commands written
around an engine restart were lost that way: on the log, never handled.

The ledger is the engine's own account, independent of faust's: per input partition
it knows the next offset it expects, the offsets handed to a handler and not yet
finished, and so the watermark below which every offset is finished. The engine's
consumer commits that watermark and nothing else, and a message that arrives past
the expected offset is not handled: the partition is rewound to the offset missing.
Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


class Admission(enum.Enum):
    """What to do with a message that arrived at an offset."""

    HANDLE = "handle"  # the offset expected next: hand it to a handler
    DUPLICATE = "duplicate"  # below the expected offset: handled already (or in hand)
    GAP = "gap"  # above the expected offset: earlier ones were skipped, rewind


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
    expected: int
    in_flight: set[int] = field(default_factory=set)
    # The offset up to which the group may commit, as last reported.
    watermark: int = 0

    def advance(self) -> None:
        self.watermark = min(self.in_flight) if self.in_flight else self.expected


class OffsetLedger:
    """Track admitted and finished offsets per input partition."""

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
        """Classify a message at ``offset`` of a started partition; admit the expected one."""
        part = self._partitions[tp]
        if offset < part.expected:
            return Admission.DUPLICATE, None
        if offset > part.expected:
            return Admission.GAP, None
        part.in_flight.add(offset)
        part.expected = offset + 1
        return Admission.HANDLE, Ticket(tp[0], tp[1], offset, part.epoch)

    def expected(self, tp: TopicPartition) -> int:
        """Return the next offset ``tp`` must deliver."""
        return self._partitions[tp].expected

    def skip_to(self, tp: TopicPartition, offset: int) -> None:
        """Accept that offsets below ``offset`` no longer exist (retention removed them)."""
        part = self._partitions[tp]
        if offset > part.expected:
            part.expected = offset
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
