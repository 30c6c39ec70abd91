"""The engine's message handling under at-least-once delivery, crashes and bad input.

The log is played by a list: whatever the processor emits is delivered back to
it, in order, exactly as the engine's own subscription to the events topic does.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from adapters.settings import Settings
from adapters.venues.interface import Quote, SwapRequest, SwapResult, VenueError
from events.messages import (
    CancelOrder,
    DeadLetter,
    Event,
    OrderConfirmed,
    OrderFailed,
    SwapAttemptFailed,
    TransactionBuilt,
    TransactionSubmitted,
    encode,
)
from services.engine.executor import Executor, RetryPolicy
from services.engine.processor import OrderProcessor, Position
from services.venues.simulator import SimulatedVenue, default_venues
from tests.unit.factories import SPEC, T0, OrderHistory, confirmed_history, submit_order

WHERE = Position(topic="t", partition=0, offset=0, key=None)


class CountingVenue:
    """A simulated venue that counts the swaps actually sent to it."""

    def __init__(self, inner: SimulatedVenue, *, broken: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.submits = 0
        self.broken = broken
        self.submit_errors: list[VenueError] = []  # raised by the next submits
        self.lost_acks = 0  # submits that reach the venue but answer a network error
        self.landing_failures: list[str] = []  # error codes of the next landings
        self._failed: dict[str, SwapResult] = {}  # by client_ref, as the venue reports them

    async def quote(self, token_in: str, token_out: str, amount_in: Decimal) -> Quote:
        return await self.inner.quote(token_in, token_out, amount_in)

    async def submit(self, request: SwapRequest) -> SwapResult:
        if self.broken:
            raise RuntimeError("venue adapter bug")
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        # Count swaps the venue made: a client reference it knows gets the first one.
        known = await self.inner.find_swap(request.client_ref) is not None
        self.submits += 0 if known else 1
        result = await self.inner.submit(request)
        if self.lost_acks:
            self.lost_acks -= 1
            raise VenueError("NETWORK_ERROR", "connection reset", transient=True)
        return result

    async def confirm(self, tx_hash: str) -> SwapResult:
        result = await self.inner.confirm(tx_hash)
        if self.landing_failures:
            code = self.landing_failures.pop(0)
            result = result.model_copy(
                update={"status": "failed", "error_code": code, "amount_out": None}
            )
            self._failed[result.client_ref] = result
        return result

    async def find_swap(self, client_ref: str) -> SwapResult | None:
        return self._failed.get(client_ref) or await self.inner.find_swap(client_ref)


class Harness:
    def __init__(
        self,
        *,
        broken: bool = False,
        max_attempts: int = 3,
        now: list[datetime] | None = None,
        monotonic: list[float] | None = None,
    ) -> None:
        settings = Settings(venue_profile="instant", venue_seed=11)
        self.venues = {v.name: CountingVenue(v, broken=broken) for v in default_venues(settings)}
        self.table: dict[bytes, bytes] = {}
        self.log: list[Event] = []
        self.dead: list[DeadLetter] = []
        self.slept: list[float] = []
        self.settled: list[Position] = []
        self.now = now or [T0]
        self.monotonic = monotonic or [0.0]
        self.max_attempts = max_attempts
        self.restart()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def emit(self, event: Event) -> None:
        self.log.append(event)

    async def emit_dead(self, letter: DeadLetter) -> None:
        self.dead.append(letter)

    def restart(self) -> None:
        """Start a new processor over the same table, as a restarted engine would."""
        self.processor = OrderProcessor(
            table=self.table,
            executor=Executor(
                self.venues,
                lambda: T0,
                quote_timeout_s=1,
                retry=RetryPolicy(max_attempts=self.max_attempts, base_s=0.5, factor=2),
                sleep=self.sleep,
            ),
            emit=self.emit,
            emit_dead_letter=self.emit_dead,
            clock=lambda: self.now[0],
            settle=self.settled.append,
            retention=timedelta(minutes=10),
            monotonic=lambda: self.monotonic[0],
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
    h.restart()
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


async def test_event_out_of_lifecycle_waits_for_its_predecessors_then_goes_to_dead_letter():
    h = Harness()
    orphan = confirmed_history(uuid.uuid4())[3]  # "submitted" for an order never accepted
    assert await h.processor.on_event(encode(orphan), WHERE) is False
    assert h.dead == []
    assert h.processor.early == 1

    h.monotonic[0] = 61.0
    assert await h.processor.expire_early(older_than_s=60) == 1
    assert len(h.dead) == 1
    assert "illegal transition" in h.dead[0].error
    assert h.settled == [WHERE]
    assert h.log == []


async def test_an_event_that_overtook_its_predecessor_waits_for_it_and_both_fold_in_order():
    h = Harness()
    await h.processor.on_command(encode(submit_order()), WHERE)
    await h.processor.on_event(encode(h.log[0]), WHERE)  # accepted: routes, emits routed
    routed = h.log[1]
    await h.processor.on_event(encode(routed), WHERE)  # routed: builds, emits built
    built = h.log[2]
    # A restarted engine whose table still says "pending" gets "built" before "routed".
    h.table.clear()
    h.restart()
    await h.processor.on_event(encode(h.log[0]), WHERE)
    emitted = len(h.log)
    late = WHERE.model_copy(update={"offset": 9})

    assert await h.processor.on_event(encode(built), late) is False
    assert h.dead == []
    assert h.settled == []

    assert await h.processor.on_event(encode(routed), WHERE) is True
    assert h.dead == []
    assert h.settled == [late]  # folded once "routed" was, and settled then
    assert h.processor.early == 0
    record = h.processor.record(built.order_id)
    assert record is not None
    assert (record.state.seq, record.reacted_seq) == (built.seq, built.seq)
    # Its step was taken: the submission that follows "built" is on the log.
    assert "submitted" in [e.status for e in h.log[emitted:]]


async def test_command_topic_with_an_event_goes_to_dead_letter():
    h = Harness()
    await h.processor.on_command(encode(confirmed_history()[0]), WHERE)
    assert len(h.dead) == 1
    assert h.log == []


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


def all_venues_fail_submits(h: Harness, *errors: VenueError) -> None:
    for venue in h.venues.values():
        venue.submit_errors = list(errors)


async def run_order(h: Harness) -> list[Event]:
    await h.processor.on_command(encode(submit_order()), WHERE)
    await h.deliver_from(0)
    return h.log


async def test_transient_submit_failure_is_retried_and_confirms_on_attempt_two():
    h = Harness()
    all_venues_fail_submits(h, VenueError("NETWORK_ERROR", "timed out", transient=True))
    log = await run_order(h)
    assert [e.status for e in log] == [
        "pending", "routing", "building", "retrying", "routing", "building", "submitted",
        "confirmed",
    ]  # fmt: skip
    retry = log[3]
    assert isinstance(retry, SwapAttemptFailed)
    assert (retry.attempt, retry.code) == (1, "NETWORK_ERROR")
    assert retry.retry_at == T0 + timedelta(seconds=0.5)
    assert h.slept == [0.5]
    assert [e.client_ref for e in log if isinstance(e, TransactionBuilt)] == [
        f"{log[0].order_id}:1",
        f"{log[0].order_id}:2",
    ]
    assert [e.seq for e in log] == list(range(1, 9))


async def test_three_transient_failures_end_failed_with_the_reason():
    h = Harness()
    busy = VenueError("POOL_BUSY", "pool locked", transient=True)
    all_venues_fail_submits(h, busy, busy, busy)
    log = await run_order(h)
    assert [e.status for e in log].count("retrying") == 2
    last = log[-1]
    assert isinstance(last, OrderFailed)
    assert (last.code, last.attempt) == ("POOL_BUSY", 3)
    assert last.reason.startswith("gave up after 3 attempts")
    assert h.slept == [0.5, 1.0]  # exponential backoff
    assert h.submits == 0


async def test_non_transient_failure_fails_at_once():
    h = Harness()
    all_venues_fail_submits(h, VenueError("INVALID_AMOUNT", "bad", transient=False))
    log = await run_order(h)
    assert [e.status for e in log] == ["pending", "routing", "building", "failed"]
    assert isinstance(log[-1], OrderFailed)
    assert log[-1].code == "INVALID_AMOUNT"
    assert h.slept == []


async def test_slippage_exceeded_is_retried_with_a_fresh_quote():
    h = Harness()
    for venue in h.venues.values():
        venue.landing_failures = ["SLIPPAGE_EXCEEDED"]
    log = await run_order(h)
    statuses = [e.status for e in log]
    assert statuses[:5] == ["pending", "routing", "building", "submitted", "retrying"]
    assert statuses[-1] == "confirmed"
    assert statuses.count("routing") == 2  # re-quoted
    assert log[4].code == "SLIPPAGE_EXCEEDED"  # type: ignore[union-attr]
    assert h.submits == 2


async def test_submission_that_reached_the_venue_despite_an_error_is_followed_not_repeated():
    h = Harness()
    for venue in h.venues.values():
        venue.lost_acks = 1
    log = await run_order(h)
    assert [e.status for e in log] == [
        "pending", "routing", "building", "retrying", "submitted", "confirmed",
    ]  # fmt: skip
    assert h.submits == 1
    submitted = log[4]
    assert isinstance(submitted, TransactionSubmitted)
    assert submitted.attempt == 1
    assert isinstance(log[-1], OrderConfirmed)
    assert log[-1].tx_hash == submitted.tx_hash


def limit_order() -> OrderHistory:
    spec = SPEC.model_copy(update={"order_type": "limit", "limit_price": Decimal("500")})
    return OrderHistory(spec=spec)


def cancel(order: OrderHistory, seq: int) -> CancelOrder:
    return CancelOrder(
        message_id=uuid.uuid4(),
        order_id=order.order_id,
        seq=seq,
        occurred_at=T0,
        correlation_id=order.command.correlation_id,
    )


async def test_command_for_a_version_not_folded_yet_stays_unsettled_until_the_order_reaches_it():
    h = Harness()
    order = limit_order()
    accepted, armed = order.accepted(), order.armed()
    await h.processor.on_event(encode(accepted), WHERE)
    early = WHERE.model_copy(update={"offset": 7})

    # The client saw the order armed (seq 2) before this engine folded it.
    settled_now = await h.processor.on_command(encode(cancel(order, 2)), early)
    assert settled_now is False
    assert h.settled == []
    assert h.processor.deferred == 1

    await h.processor.on_event(encode(armed), WHERE)
    assert h.settled == [early]
    assert h.processor.deferred == 0
    assert h.log[-1].status == "cancelled"
    assert h.log[-1].seq == 3


async def test_kept_command_past_its_timeout_is_decided_as_things_stand_and_settled():
    h = Harness()
    order = limit_order()
    await h.processor.on_event(encode(order.accepted()), WHERE)
    assert await h.processor.on_command(encode(cancel(order, 5)), WHERE) is False

    h.monotonic[0] = 30.0
    assert await h.processor.expire_deferred(older_than_s=60) == 0
    assert h.settled == []
    h.monotonic[0] = 61.0
    assert await h.processor.expire_deferred(older_than_s=60) == 1
    assert h.settled == [WHERE]
    # The order never reaches version 5: the cancel decides nothing.
    assert "cancelled" not in [e.status for e in h.log]


async def test_kept_messages_of_a_revoked_partition_are_dropped_and_never_decided_here():
    h = Harness()
    order, other = limit_order(), limit_order()
    for kept in (order, other):
        await h.processor.on_event(encode(kept.accepted()), WHERE)
    revoked = WHERE.model_copy(update={"partition": 3, "offset": 9})
    assert await h.processor.on_command(encode(cancel(order, 2)), revoked) is False
    assert await h.processor.on_command(encode(cancel(other, 2)), WHERE) is False

    # Another engine gets partition 3 and reads the cancel again from the committed offset.
    assert h.processor.drop_partitions({("t", 3)}) == 1
    assert h.processor.deferred == 1
    h.monotonic[0] = 61.0
    assert await h.processor.expire_deferred(older_than_s=60) == 1
    assert h.settled == [WHERE]


async def test_ended_order_is_forgotten_after_the_retention_and_not_before():
    h = Harness()
    await h.processor.on_command(encode(submit_order()), WHERE)
    await h.deliver_from(0)
    assert h.log[-1].status == "confirmed"
    ended_at = h.log[-1].occurred_at

    assert h.processor.retire(ended_at + timedelta(minutes=9)) == 0
    assert len(h.table) == 1
    assert h.processor.retire(ended_at + timedelta(minutes=11)) == 1
    assert h.table == {}


async def test_order_still_running_is_never_forgotten():
    h = Harness()
    order = limit_order()
    await h.processor.on_event(encode(order.accepted()), WHERE)
    await h.processor.on_event(encode(order.armed()), WHERE)
    assert h.processor.retire(T0 + timedelta(days=30)) == 0
    assert len(h.table) == 1
