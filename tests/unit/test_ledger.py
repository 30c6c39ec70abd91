"""The engine's ledger of input offsets: nothing is committed past an offset in hand."""

from __future__ import annotations

import asyncio

from faust.types import TP

from services.engine.intake import EngineApp, Intake, LedgerConsumer
from services.engine.ledger import Admission, OffsetLedger, Ticket

COMMANDS = ("orders.commands", 0)


def admitted(ledger: OffsetLedger, offset: int) -> Ticket:
    verdict, ticket = ledger.admit(COMMANDS, offset)
    assert verdict is Admission.HANDLE and ticket is not None
    return ticket


def started_at(offset: int) -> OffsetLedger:
    ledger = OffsetLedger()
    ledger.start(COMMANDS, offset)
    return ledger


def test_ledger_offsets_in_order_are_admitted_and_commit_stops_at_the_oldest_unfinished():
    ledger = started_at(10)
    tickets = [admitted(ledger, offset) for offset in (10, 11, 12)]
    assert ledger.committable(COMMANDS) == 10

    ledger.finish(tickets[1])  # 11 done, 10 still in hand
    assert ledger.committable(COMMANDS) == 10
    ledger.finish(tickets[0])
    assert ledger.committable(COMMANDS) == 12
    ledger.finish(tickets[2])
    assert ledger.committable(COMMANDS) == 13


def test_ledger_offset_past_the_expected_one_is_a_gap_and_not_admitted():
    ledger = started_at(7)
    assert ledger.admit(COMMANDS, 7)[0] is Admission.HANDLE
    verdict, ticket = ledger.admit(COMMANDS, 9)  # 8 never came
    assert (verdict, ticket) == (Admission.GAP, None)
    assert ledger.expected(COMMANDS) == 8
    assert ledger.committable(COMMANDS) == 7


def test_ledger_offset_below_the_expected_one_is_a_duplicate():
    ledger = started_at(3)
    ledger.admit(COMMANDS, 3)
    assert ledger.admit(COMMANDS, 3) == (Admission.DUPLICATE, None)
    assert ledger.admit(COMMANDS, 2) == (Admission.DUPLICATE, None)


def test_ledger_ticket_of_an_ended_assignment_does_not_move_the_new_watermark():
    ledger = started_at(0)
    old = ledger.admit(COMMANDS, 0)[1]
    ledger.forget([COMMANDS])
    ledger.start(COMMANDS, 0)  # the partition comes back from the committed offset
    fresh = ledger.admit(COMMANDS, 0)[1]
    assert old is not None and fresh is not None
    ledger.finish(old)
    assert ledger.committable(COMMANDS) == 0
    ledger.finish(fresh)
    assert ledger.committable(COMMANDS) == 1


def test_ledger_skip_to_accepts_offsets_retention_removed():
    ledger = started_at(5)
    ledger.skip_to(COMMANDS, 20)
    assert ledger.expected(COMMANDS) == 20
    assert ledger.committable(COMMANDS) == 20
    assert ledger.admit(COMMANDS, 20)[0] is Admission.HANDLE


def test_ledger_partition_not_started_has_nothing_to_commit():
    assert OffsetLedger().committable(COMMANDS) is None


def engine_consumer() -> LedgerConsumer:
    app = EngineApp("test-ledger", broker="kafka://127.0.0.1:1", web_enabled=False)
    consumer = app.consumer
    assert isinstance(consumer, LedgerConsumer)
    return consumer


def test_engine_consumer_commits_the_ledger_watermark_not_the_acknowledged_offsets():
    consumer = engine_consumer()
    app: EngineApp = consumer.app  # type: ignore[assignment]
    tp = TP(*COMMANDS)
    app.ledger.start(COMMANDS, 10)
    in_hand = app.ledger.admit(COMMANDS, 10)[1]
    done = app.ledger.admit(COMMANDS, 11)[1]
    assert in_hand is not None and done is not None
    app.ledger.finish(done)
    # faust acknowledged 10..14 (it acknowledges messages it skipped, too).
    consumer._acked[tp].extend([10, 11, 12, 13, 14])
    consumer._acked_index[tp].update([10, 11, 12, 13, 14])
    assert consumer._new_offset(tp) == 10  # 10 is still being handled

    app.ledger.finish(in_hand)
    assert consumer._new_offset(tp) == 12
    assert consumer._acked[tp] == [12, 13, 14]  # faust's list is trimmed, not grown


def test_engine_consumer_commits_nothing_for_a_partition_the_ledger_has_not_started():
    consumer = engine_consumer()
    tp = TP(*COMMANDS)
    consumer._acked[tp].extend([0, 1, 2])
    assert consumer._new_offset(tp) is None


async def test_intake_rewinds_a_stalled_input_but_never_the_table_changelog(monkeypatch):
    app = EngineApp("test-intake", broker="kafka://127.0.0.1:1", web_enabled=False)
    now = [0.0]
    intake = Intake(
        app,
        topics=["orders.commands"],
        bootstrap="127.0.0.1:1",
        group_id="test-intake",
        monotonic=lambda: now[0],
    )
    commands, changelog = TP("orders.commands", 0), TP("test-intake-orders-changelog", 0)
    consumer = app.consumer
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)

    monkeypatch.setattr(consumer, "assignment", lambda: {commands, changelog})
    monkeypatch.setattr(consumer, "highwater", lambda tp: 10)
    monkeypatch.setattr(consumer, "seek", seek)
    monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)
    for tp in (commands, changelog):
        app.ledger.start((tp.topic, tp.partition), 4)
    await intake.check_stalls()  # nothing arrived for no time at all yet
    assert sought == []

    now[0] = 5.0  # offsets 4..9 are on the log, none arrived
    await intake.check_stalls()
    await asyncio.sleep(0)  # the seek runs beside the agents
    assert sought == [(commands, 4)]
