"""The engine's ledger of input offsets: nothing is committed past an offset in hand."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from services.engine.intake import EngineApp, Intake, LedgerConsumer
from services.engine.ledger import Admission, OffsetLedger, Ticket

COMMANDS = ("orders.commands", 0)


def admitted(ledger: OffsetLedger, offset: int) -> Ticket:
    verdict, ticket = ledger.admit(COMMANDS, offset)
    assert verdict is Admission.HANDLE
    assert ticket is not None
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


def test_ledger_offset_overtaken_by_a_later_one_holds_the_commit_until_it_arrives():
    ledger = started_at(7)
    seven = admitted(ledger, 7)
    nine = admitted(ledger, 9)  # 8 is late (another actor) or skipped (faust)
    ledger.finish(seven)
    ledger.finish(nine)
    assert ledger.missing(COMMANDS) == 8
    assert ledger.committable(COMMANDS) == 8  # never past the offset not received

    eight = admitted(ledger, 8)
    assert ledger.missing(COMMANDS) is None
    assert ledger.expected(COMMANDS) == 10
    ledger.finish(eight)
    assert ledger.committable(COMMANDS) == 10


def test_ledger_offset_received_past_the_frontier_is_a_duplicate_when_it_comes_again():
    ledger = started_at(7)
    admitted(ledger, 9)
    assert ledger.admit(COMMANDS, 9) == (Admission.DUPLICATE, None)


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
    assert old is not None
    assert fresh is not None
    ledger.finish(old)
    assert ledger.committable(COMMANDS) == 0
    ledger.finish(fresh)
    assert ledger.committable(COMMANDS) == 1


def test_ledger_skip_to_accepts_offsets_retention_removed():
    ledger = started_at(5)
    ledger.finish(admitted(ledger, 21))  # received past the frontier before the skip
    ledger.skip_to(COMMANDS, 20)
    assert ledger.expected(COMMANDS) == 20
    assert ledger.committable(COMMANDS) == 20
    assert ledger.admit(COMMANDS, 20)[0] is Admission.HANDLE
    assert ledger.expected(COMMANDS) == 22


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
    assert in_hand is not None
    assert done is not None
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
        client_options={"bootstrap_servers": "127.0.0.1:1"},
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


def message(tp: TP, offset: int, generation: int) -> Any:
    return SimpleNamespace(
        topic=tp.topic, partition=tp.partition, tp=tp, offset=offset, generation_id=generation
    )


async def test_intake_waits_for_an_overtaken_offset_and_rewinds_only_a_skipped_one(
    monkeypatch,
):
    app = EngineApp("test-gap", broker="kafka://127.0.0.1:1", web_enabled=False)
    now = [0.0]
    intake = Intake(
        app, topics=["orders.commands"], client_options={}, group_id="-", monotonic=lambda: now[0]
    )
    commands = TP("orders.commands", 0)
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)

    consumer = app.consumer
    monkeypatch.setattr(consumer, "assignment", lambda: {commands})
    monkeypatch.setattr(consumer, "highwater", lambda tp: 12)
    monkeypatch.setattr(consumer, "seek", seek)
    monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)
    generation = app.consumer_generation_id
    app.ledger.start(("orders.commands", 0), 8)

    # 9 overtakes 8 (another actor took 8 first): both are handed over, nothing sought.
    assert await intake.admit(message(commands, 9, generation)) is not None
    now[0] = 0.5
    assert await intake.admit(message(commands, 8, generation)) is not None
    now[0] = 3.0
    await intake.check_stalls()
    assert sought == []

    # 11 arrives, 10 never does: a second later the partition is sought back to 10,
    # and 11 coming again is not handed over twice.
    assert await intake.admit(message(commands, 11, generation)) is not None
    now[0] = 3.5
    await intake.check_stalls()
    assert sought == []
    now[0] = 4.1
    await intake.check_stalls()
    await asyncio.sleep(0)
    assert sought == [(commands, 10)]
    assert await intake.admit(message(commands, 10, generation)) is not None
    assert await intake.admit(message(commands, 11, generation)) is None


async def test_engine_consumer_seeks_on_the_consumer_thread_not_the_agents_loop():
    consumer = engine_consumer()
    calls: list[tuple[str, Any]] = []

    class Thread:
        """Stands for faust's consumer thread: records what is run on it."""

        def seek(self, tp: TP, offset: int) -> None:
            calls.append(("seek", (tp, offset)))

        async def call_thread(self, fun: Any, *args: Any) -> Any:
            calls.append(("on the thread", fun.__name__))
            return await fun(*args)

    consumer._thread = Thread()  # type: ignore[assignment]
    await consumer.seek(TP(*COMMANDS), 7)

    assert calls == [("on the thread", "seek"), ("seek", (TP(*COMMANDS), 7))]
