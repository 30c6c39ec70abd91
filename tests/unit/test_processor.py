"""The engine's message handling under at-least-once delivery, crashes and bad input.

The log is played by a list: whatever the processor emits is delivered back to
it, in order, exactly as the engine's own subscription to the events topic does.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from events.messages import (
    DeadLetter,
    Event,
    OrderConfirmed,
    OrderFailed,
    TransactionSubmitted,
    encode,
)
from services.common.settings import Settings
from services.engine.executor import Executor
from services.engine.processor import OrderProcessor, Position
from services.venues.interface import Quote, SwapRequest, SwapResult
from services.venues.simulator import default_venues
from tests.unit.factories import T0, confirmed_history, submit_order

WHERE = Position(topic="t", partition=0, offset=0, key=None)


class CountingVenue:
    """A simulated venue that counts the swaps actually sent to it."""

    def __init__(self, inner, *, broken: bool = False):
        self.inner = inner
        self.name = inner.name
        self.submits = 0
        self.broken = broken

    async def quote(self, token_in: str, token_out: str, amount_in: Decimal) -> Quote:
        return await self.inner.quote(token_in, token_out, amount_in)

    async def submit(self, request: SwapRequest) -> SwapResult:
        if self.broken:
            raise RuntimeError("venue adapter bug")
        self.submits += 1
        return await self.inner.submit(request)

    async def confirm(self, tx_hash: str) -> SwapResult:
        return await self.inner.confirm(tx_hash)

    async def find_swap(self, client_ref: str) -> SwapResult | None:
        return await self.inner.find_swap(client_ref)


class Harness:
    def __init__(self, *, broken: bool = False) -> None:
        settings = Settings(venue_profile="instant", venue_seed=11)
        self.venues = {v.name: CountingVenue(v, broken=broken) for v in default_venues(settings)}
        self.table: dict[bytes, bytes] = {}
        self.log: list[Event] = []
        self.dead: list[DeadLetter] = []

        async def emit(event: Event) -> None:
            self.log.append(event)

        async def emit_dead(letter: DeadLetter) -> None:
            self.dead.append(letter)

        self.processor = OrderProcessor(
            table=self.table,
            executor=Executor(self.venues, lambda: T0, quote_timeout_s=1),
            emit=emit,
            emit_dead_letter=emit_dead,
            clock=lambda: T0,
        )

    async def deliver_from(self, start: int) -> None:
        """Deliver every logged event from index ``start`` on, including new ones."""
        index = start
        while index < len(self.log):
            await self.processor.on_event(encode(self.log[index]), WHERE)
            index += 1

    @property
    def submits(self) -> int:
        return sum(v.submits for v in self.venues.values())


async def test_submit_order_runs_to_confirmed_with_gap_free_sequence():
    h = Harness()
    command = submit_order()
    await h.processor.on_command(encode(command), WHERE)
    await h.deliver_from(0)
    assert [e.status for e in h.log] == ["pending", "routing", "building", "submitted", "confirmed"]
    assert [e.seq for e in h.log] == [1, 2, 3, 4, 5]
    assert all(e.order_id == command.order_id for e in h.log)
    assert all(e.causation_id == prev.message_id for prev, e in zip(h.log, h.log[1:], strict=False))
    confirmed = h.log[-1]
    assert isinstance(confirmed, OrderConfirmed)
    assert confirmed.amount_out > 0
    assert h.submits == 1


async def test_submit_order_twice_accepts_once():
    h = Harness()
    command = submit_order()
    await h.processor.on_command(encode(command), WHERE)
    await h.deliver_from(0)
    await h.processor.on_command(encode(command), WHERE)
    assert [e.seq for e in h.log] == [1, 2, 3, 4, 5]


async def test_redelivered_event_after_reaction_is_a_no_op():
    h = Harness()
    await h.processor.on_command(encode(submit_order()), WHERE)
    await h.deliver_from(0)
    before = list(h.log)
    for event in before:
        await h.processor.on_event(encode(event), WHERE)
    assert h.log == before
    assert h.submits == 1


async def test_crash_after_submit_before_recording_does_not_swap_twice():
    h = Harness()
    await h.processor.on_command(encode(submit_order()), WHERE)
    # Run up to and including the building event's reaction.
    await h.processor.on_event(encode(h.log[0]), WHERE)
    await h.processor.on_event(encode(h.log[1]), WHERE)
    snapshot = dict(h.table)
    await h.processor.on_event(encode(h.log[2]), WHERE)
    first_submitted = h.log[3]
    assert isinstance(first_submitted, TransactionSubmitted)

    # The worker dies: its table loses the last write and the building event
    # comes again. The swap must be found by client reference, not re-sent.
    h.table.clear()
    h.table.update(snapshot)
    await h.processor.on_event(encode(h.log[2]), WHERE)
    again = h.log[4]
    assert isinstance(again, TransactionSubmitted)
    assert again.message_id == first_submitted.message_id
    assert again.tx_hash == first_submitted.tx_hash
    assert h.submits == 1

    # The log now holds seq 4 twice; the first occurrence drives the order on and
    # the second is ignored.
    await h.deliver_from(3)
    statuses = [e.status for e in h.log]
    assert statuses.count("confirmed") == 1
    assert h.log[-1].seq == 5


async def test_undecodable_event_goes_to_dead_letter_and_processing_continues():
    h = Harness()
    await h.processor.on_event(b'{"type": "Nonsense"}', WHERE)
    assert len(h.dead) == 1
    assert "undecodable" in h.dead[0].error
    await h.processor.on_command(encode(submit_order()), WHERE)
    await h.deliver_from(0)
    assert h.log[-1].status == "confirmed"


async def test_event_out_of_lifecycle_goes_to_dead_letter():
    h = Harness()
    orphan = confirmed_history(uuid.uuid4())[3]  # "submitted" for an order never accepted
    await h.processor.on_event(encode(orphan), WHERE)
    assert len(h.dead) == 1
    assert "illegal transition" in h.dead[0].error
    assert h.log == []


async def test_command_topic_with_an_event_goes_to_dead_letter():
    h = Harness()
    await h.processor.on_command(encode(confirmed_history()[0]), WHERE)
    assert len(h.dead) == 1 and h.log == []


async def test_unexpected_error_in_a_step_fails_the_order_instead_of_stalling():
    h = Harness(broken=True)
    await h.processor.on_command(encode(submit_order()), WHERE)
    await h.deliver_from(0)
    last = h.log[-1]
    assert isinstance(last, OrderFailed)
    assert last.code == "ENGINE_ERROR"
    assert "venue adapter bug" in last.reason


async def test_order_with_no_answering_venue_fails_with_no_route():
    h = Harness()
    spec = submit_order().spec.model_copy(update={"token_out": "NOPE"})
    await h.processor.on_command(encode(submit_order(spec=spec)), WHERE)
    await h.deliver_from(0)
    last = h.log[-1]
    assert isinstance(last, OrderFailed)
    assert last.code == "NO_ROUTE"
