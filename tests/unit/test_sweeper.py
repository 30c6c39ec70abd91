"""The sweeper's core: lost submissions are submitted again, stalled orders resumed."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from events.messages import SwapAttemptFailed, TransactionSubmitted
from services.sweeper.core import Sweeper
from tests.unit.factories import SPEC, T0, OrderHistory, confirmed_history, submit_order

SUBMIT_AFTER = timedelta(seconds=30)
STALL_AFTER = timedelta(seconds=60)


def sweeper(max_attempts: int = 3) -> Sweeper:
    return Sweeper(submit_after=SUBMIT_AFTER, stall_after=STALL_AFTER, max_attempts=max_attempts)


def test_submission_never_accepted_is_due_again_after_the_deadline_and_not_before():
    core = sweeper()
    command = submit_order()  # occurred at T0
    core.on_submission(command)

    assert core.due(T0 + timedelta(seconds=29)).resubmit == ()
    assert core.overdue_submissions(T0 + timedelta(seconds=30)) == [command.order_id]
    assert core.due(T0 + timedelta(seconds=30)).resubmit == (command,)
    # Looked at again one deadline later, not at every tick.
    assert core.due(T0 + timedelta(seconds=31)).resubmit == ()
    assert core.due(T0 + timedelta(seconds=60)).resubmit == (command,)


def test_submission_accepted_is_not_sent_again_even_when_read_before_the_submission():
    core = sweeper()
    history = confirmed_history()
    core.on_event(history[0])  # OrderAccepted read first (another topic, another pace)
    core.on_submission(submit_order(history[0].order_id))
    assert core.due(T0 + timedelta(hours=1)).resubmit == ()


def test_submission_the_read_model_knows_is_dropped():
    core = sweeper()
    command = submit_order()
    core.on_submission(command)
    core.known({command.order_id}, T0 + timedelta(seconds=30))
    assert core.due(T0 + timedelta(seconds=31)).resubmit == ()


def test_submission_postponed_when_the_read_model_cannot_be_asked():
    core = sweeper()
    command = submit_order()
    core.on_submission(command)
    core.postpone([command.order_id], T0 + timedelta(seconds=30))
    assert core.due(T0 + timedelta(seconds=31)).resubmit == ()
    assert core.due(T0 + timedelta(seconds=60)).resubmit == (command,)


def test_order_without_a_new_event_past_the_deadline_is_resumed_with_its_last_event():
    core = sweeper()
    history = confirmed_history()  # events one second apart from T0
    for event in history[:3]:  # accepted, routed, built; then nothing
        core.on_event(event)
    built = history[2]
    assert core.due(built.occurred_at + timedelta(seconds=59)).resume == ()
    assert core.due(built.occurred_at + timedelta(seconds=60)).resume == (built,)


def test_order_that_moves_on_is_not_resumed():
    core = sweeper()
    history = confirmed_history()
    for event in history[:3]:
        core.on_event(event)
    core.on_event(history[3])  # submitted: the deadline starts again
    assert isinstance(history[3], TransactionSubmitted)
    assert core.due(history[2].occurred_at + timedelta(seconds=60)).resume == ()


def test_ended_order_is_forgotten_and_a_late_duplicate_does_not_revive_it():
    core = sweeper()
    history = confirmed_history()
    for event in history:
        core.on_event(event)
    core.on_event(history[2])  # a duplicate of an earlier event, read late
    assert core.watching == (0, 0)
    assert core.due(T0 + timedelta(hours=1)).resume == ()


def test_armed_order_waits_without_being_resumed():
    spec = SPEC.model_copy(update={"order_type": "limit", "limit_price": Decimal("500")})
    order = OrderHistory(spec=spec)
    core = sweeper()
    core.on_event(order.accepted())
    core.on_event(order.armed())
    assert core.due(T0 + timedelta(days=2)).resume == ()


def test_retrying_order_is_stalled_only_after_its_retry_time():
    core = sweeper()
    history = confirmed_history()
    for event in history[:4]:
        core.on_event(event)
    submitted = history[3]
    retry_at = submitted.occurred_at + timedelta(seconds=300)
    failed = SwapAttemptFailed(
        message_id=submitted.message_id,
        order_id=submitted.order_id,
        seq=submitted.seq + 1,
        occurred_at=submitted.occurred_at + timedelta(seconds=1),
        correlation_id=submitted.correlation_id,
        venue="raydium",
        attempt=1,
        code="POOL_BUSY",
        reason="busy",
        retry_at=retry_at,
    )
    core.on_event(failed)
    assert core.due(retry_at + timedelta(seconds=59)).resume == ()
    assert core.due(retry_at + timedelta(seconds=60)).resume == (failed,)


def test_sweeper_gives_up_after_its_attempts_and_says_so_once():
    core = sweeper(max_attempts=2)
    command = submit_order()
    core.on_submission(command)
    at = T0
    sent = 0
    for _ in range(2):
        at += SUBMIT_AFTER
        sent += len(core.due(at).resubmit)
    assert sent == 2
    final = core.due(at + SUBMIT_AFTER)
    assert final.resubmit == ()
    assert len(final.given_up) == 1
    assert str(command.order_id) in final.given_up[0]
    assert core.due(at + 10 * SUBMIT_AFTER).given_up == ()
