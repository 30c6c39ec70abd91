"""The audit's reconciliation: pure, over decoded sources, one problem kind at a time."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.venues.interface import LedgerEntry
from cli import main as cli_main
from cli.audit import describe
from cli.reconcile import AuditReport, Limits, Logged, Position, Sources, reconcile
from domain.lifecycle import EnvelopeFields
from events.messages import (
    Command,
    DeadLetter,
    Event,
    OrderArmed,
    OrderConfirmed,
    OrderFailed,
    OrderRouted,
    OrderSpec,
    OrderTriggered,
    SwapAttemptFailed,
    TransactionBuilt,
    TransactionSubmitted,
    TriggerOrder,
)
from projections.heads import Head
from tests.unit.factories import SPEC, T0, OrderHistory
from tests.unit.test_processor import cancel

NOW = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
# Older than both the grace period (30 s) and the stall deadline (120 s).
LONG_AGO = NOW - timedelta(minutes=10)
JUST_NOW = NOW - timedelta(seconds=5)
COMMANDS, EVENTS, DEAD_LETTERS = "orders.commands", "orders.events", "orders.deadletter"
LIMIT = SPEC.model_copy(update={"order_type": "limit", "limit_price": Decimal(160)})


def routed(e: EnvelopeFields) -> Event:
    return OrderRouted(
        **e,
        quotes=(),
        venue="raydium",
        expected_out=Decimal(150),
        reason="best",
        runner_up=None,
        improvement_bps=None,
    )


def built(e: EnvelopeFields) -> Event:
    return TransactionBuilt(
        **e,
        venue="raydium",
        min_amount_out=Decimal(149),
        client_ref=f"{e['order_id']}:1",
        attempt=1,
        steps=("swap:raydium",),
    )


def submitted(e: EnvelopeFields) -> Event:
    return TransactionSubmitted(**e, venue="raydium", tx_hash=f"tx-{e['order_id']}", attempt=1)


def confirmed(e: EnvelopeFields) -> Event:
    return OrderConfirmed(
        **e,
        venue="raydium",
        tx_hash=f"tx-{e['order_id']}",
        amount_out=Decimal(150),
        executed_price=Decimal(150),
    )


def armed(e: EnvelopeFields) -> Event:
    return OrderArmed(**e, reason="waiting for the limit")


def triggered(e: EnvelopeFields) -> Event:
    return OrderTriggered(**e, reason="crossed")


def retrying(retry_at: datetime) -> Callable[[EnvelopeFields], Event]:
    return lambda e: SwapAttemptFailed(
        **e, venue="raydium", attempt=1, code="POOL_BUSY", reason="busy", retry_at=retry_at
    )


def swap(order_id: uuid.UUID, attempt: int = 1, status: str = "confirmed") -> LedgerEntry:
    return LedgerEntry.model_validate(
        {
            "client_ref": f"{order_id}:{attempt}",
            "tx_hash": f"tx-{order_id}" if attempt == 1 else f"tx-{order_id}-{attempt}",
            "status": status,
            "venue": "raydium",
            "token_in": "SOL",
            "token_out": "USDC",
            "amount_in": "1.5",
            "min_amount_out": "149",
            "amount_out": "150" if status == "confirmed" else None,
        }
    )


@dataclass
class World:
    """The sources as a test sets them up: topics, read models and the ledger."""

    commands: list[Logged[Command]] = field(default_factory=list)
    events: list[Logged[Event]] = field(default_factory=list)
    dead_letters: list[Logged[DeadLetter]] = field(default_factory=list)
    tables: dict[str, dict[uuid.UUID, Head]] = field(
        default_factory=lambda: {"orders": {}, "order_events": {}, "analytics_orders": {}}
    )
    ledger: list[LedgerEntry] | None = field(default_factory=list)
    offsets: itertools.count[int] = field(default_factory=itertools.count)

    def at(self, topic: str) -> Position:
        """Return the next position on the log (one offset counter for every topic)."""
        return Position(topic=topic, partition=0, offset=next(self.offsets))

    def command(self, command: Command | str, at: datetime = LONG_AGO) -> None:
        self.commands.append(Logged(self.at(COMMANDS), at, command))

    def event(self, event: Event | str, at: datetime = LONG_AGO) -> None:
        self.events.append(Logged(self.at(EVENTS), at, event))

    def dead_letter(self, letter: DeadLetter | str) -> None:
        self.dead_letters.append(Logged(self.at(DEAD_LETTERS), NOW, letter))

    def project(self, order: OrderHistory, upto: int | None = None) -> None:
        """Give the read models the order as of seq ``upto`` (default: its last event)."""
        seq = len(order.events) if upto is None else upto
        status = order.events[seq - 1].status
        self.tables["orders"][order.order_id] = Head(seq, status)
        self.tables["order_events"][order.order_id] = Head(seq, None, seq)
        self.tables["analytics_orders"][order.order_id] = Head(seq, status)

    def order(
        self,
        *steps: Callable[[EnvelopeFields], Event],
        spec: OrderSpec | None = None,
        at: datetime = LONG_AGO,
        projected: bool = True,
    ) -> OrderHistory:
        """Submit an order, log its acceptance and then ``steps``, and project it."""
        order = OrderHistory(spec=spec) if spec is not None else OrderHistory()
        self.command(order.command, at)
        self.event(order.accepted(), at)
        for step in steps:
            self.event(order.add(step), at)
        if projected:
            self.project(order)
        return order

    def audit(self, grace_s: float = 30, stall_s: float = 120) -> AuditReport:
        sources = Sources(
            commands=self.commands,
            events=self.events,
            dead_letters=self.dead_letters,
            read_models=self.tables,
            ledger=self.ledger,
            skipped={} if self.ledger is not None else {"ledger": "venue service down"},
        )
        limits = Limits(grace=timedelta(seconds=grace_s), stall=timedelta(seconds=stall_s))
        return reconcile(sources, NOW, limits)


def kinds(report: AuditReport) -> list[tuple[str, uuid.UUID | None]]:
    return [(p.kind, p.order_id) for p in report.problems]


FILLED = (routed, built, submitted, confirmed)


def failed(e: EnvelopeFields) -> Event:
    return OrderFailed(**e, code="SLIPPAGE_EXCEEDED", reason="moved")


# A clean run ------------------------------------------------------------------------------


def test_reconcile_orders_that_ended_or_wait_everywhere_are_clean() -> None:
    world = World()
    filled = world.order(*FILLED)
    world.order(armed, spec=LIMIT)
    world.ledger = [swap(filled.order_id)]

    report = world.audit()

    assert report.clean
    assert report.problem_counts == {}


def test_reconcile_coverage_counts_what_was_read() -> None:
    world = World()
    filled = world.order(*FILLED)
    world.order(armed, spec=LIMIT)
    world.ledger = [swap(filled.order_id)]

    report = world.audit()

    assert report.coverage.commands == {"SubmitOrder": 2}
    assert report.coverage.events == 7
    assert report.coverage.orders == {"armed": 1, "confirmed": 1}
    assert report.coverage.read_models == {"orders": 2, "order_events": 2, "analytics_orders": 2}
    assert report.coverage.ledger_swaps == 1
    assert report.coverage.skipped == {}


def test_reconcile_without_the_ledger_checks_no_swap_and_says_it_was_skipped() -> None:
    world = World()
    world.order(*FILLED[:3])  # submitted long ago, never confirmed
    world.ledger = None

    report = world.audit()

    assert report.coverage.ledger_swaps is None
    assert report.coverage.skipped == {"ledger": "venue service down"}
    assert {kind for kind, _ in kinds(report)} == {"stalled"}


# Submissions ------------------------------------------------------------------------------


def test_reconcile_submission_older_than_the_grace_without_acceptance_is_not_accepted() -> None:
    world = World()
    lost = OrderHistory()
    world.command(lost.command, at=NOW - timedelta(seconds=31))

    report = world.audit()

    assert kinds(report) == [("not_accepted", lost.order_id)]
    [problem] = report.problems
    assert problem.position == Position(topic=COMMANDS, partition=0, offset=0)
    assert problem.since == NOW - timedelta(seconds=31)


def test_reconcile_submission_within_the_grace_is_in_flight() -> None:
    world = World()
    world.command(OrderHistory().command, at=JUST_NOW)

    assert world.audit().clean


def test_reconcile_grace_zero_flags_a_submission_at_once() -> None:
    world = World()
    lost = OrderHistory()
    world.command(lost.command, at=NOW)

    assert kinds(world.audit(grace_s=0)) == [("not_accepted", lost.order_id)]


def test_reconcile_repeated_submission_of_an_accepted_order_is_clean() -> None:
    world = World()
    order = world.order(*FILLED)
    world.command(order.command)
    world.ledger = [swap(order.order_id)]

    assert world.audit().clean


def test_reconcile_events_of_an_order_nobody_submitted_are_not_submitted() -> None:
    world = World()
    order = world.order(*FILLED)
    world.commands.clear()
    world.ledger = [swap(order.order_id)]

    assert kinds(world.audit()) == [("not_submitted", order.order_id)]


# Commands after the submission -------------------------------------------------------------


def trigger(order: OrderHistory, seq: int) -> TriggerOrder:
    """Return a trigger of the armed version ``seq``, as the trigger service writes one."""
    return TriggerOrder(**cancel(order, seq).model_dump(exclude={"type", "reason"}), reason="x")


def test_reconcile_trigger_for_the_armed_version_the_order_is_still_at_is_unanswered() -> None:
    world = World()
    order = world.order(armed, spec=LIMIT)
    world.command(trigger(order, seq=2))

    report = world.audit()

    assert kinds(report) == [("unanswered_command", order.order_id)]
    assert "TriggerOrder for armed version 2" in report.problems[0].detail


def test_reconcile_trigger_for_an_earlier_arming_is_not_unanswered() -> None:
    world = World()
    order = world.order(armed, spec=LIMIT)
    world.command(trigger(order, seq=2))
    for step in (triggered, armed):  # the first trigger fired; the quotes missed: armed again
        world.event(order.add(step))
    world.project(order)

    assert world.audit().clean


def test_reconcile_cancel_within_the_grace_is_in_flight() -> None:
    world = World()
    order = world.order(armed, spec=LIMIT)
    cancelling = cancel(order, seq=2)
    world.command(cancelling, at=JUST_NOW)

    assert world.audit().clean
    world.commands[-1] = Logged(world.commands[-1].position, LONG_AGO, cancelling)
    assert kinds(world.audit()) == [("unanswered_command", order.order_id)]


# Progress -----------------------------------------------------------------------------------


def test_reconcile_order_idle_past_the_stall_deadline_is_stalled() -> None:
    world = World()
    order = world.order(routed, built, submitted)

    report = world.audit()

    assert kinds(report) == [("stalled", order.order_id)]
    assert report.problems[0].detail.startswith("submitted since")
    assert report.problems[0].position == Position(topic=EVENTS, partition=0, offset=4)


def test_reconcile_order_idle_within_the_stall_deadline_is_not_stalled() -> None:
    world = World()
    world.order(routed, built, submitted, at=NOW - timedelta(seconds=119))

    assert world.audit().clean


def test_reconcile_armed_order_waits_however_long() -> None:
    world = World()
    world.order(armed, spec=LIMIT, at=NOW - timedelta(days=3))

    assert world.audit().clean


def test_reconcile_armed_order_past_its_expiry_by_the_stall_deadline_is_stalled() -> None:
    world = World()
    expiring = LIMIT.model_copy(update={"expires_at": NOW - timedelta(seconds=121)})
    order = world.order(armed, spec=expiring)

    report = world.audit()

    assert kinds(report) == [("stalled", order.order_id)]
    assert "past its expiry" in report.problems[0].detail


def test_reconcile_retrying_order_whose_retry_is_ahead_is_not_stalled() -> None:
    world = World()
    world.order(routed, built, retrying(NOW + timedelta(seconds=5)))

    assert world.audit().clean


def test_reconcile_retrying_order_whose_retry_was_due_long_ago_is_stalled() -> None:
    world = World()
    order = world.order(routed, built, retrying(NOW - timedelta(seconds=200)))

    assert kinds(world.audit()) == [("stalled", order.order_id)]


# Sequences ------------------------------------------------------------------------------------


def test_reconcile_gap_in_an_orders_events_is_a_bad_sequence() -> None:
    world = World()
    order = world.order(armed, spec=LIMIT)
    for step in (triggered, armed, triggered):
        event = order.add(step)
        if event.seq == 5:  # seq 3 and 4 never reach the log
            world.event(event)

    report = world.audit()

    assert kinds(report) == [("bad_sequence", order.order_id)]
    assert report.problems[0].detail == (
        "OrderTriggered seq 5 refused after seq 2 (armed): expected seq 3, got 5"
    )
    assert report.problems[0].position == Position(topic=EVENTS, partition=0, offset=3)


def test_reconcile_every_event_after_a_gap_is_refused_and_counted() -> None:
    world = World()
    order = world.order(projected=False)
    for step in FILLED:
        event = order.add(step)
        if event.seq != 2:  # the routing never reaches the log
            world.event(event)
    world.project(order, upto=1)

    report = world.audit()

    bad = [p for p in report.problems if p.kind == "bad_sequence"]
    assert [p.order_id for p in bad] == [order.order_id]
    assert bad[0].detail.startswith("TransactionBuilt seq 3 refused after seq 1 (pending)")
    assert bad[0].detail.endswith("; 2 more refused")
    # The fold stops where every consumer stops: pending, stalled.
    assert {p.kind for p in report.problems} == {"bad_sequence", "stalled"}


def test_reconcile_illegal_transition_is_a_bad_sequence() -> None:
    world = World()
    order = world.order(projected=False)
    confirmed_early = confirmed(
        {
            "message_id": uuid.uuid4(),
            "order_id": order.order_id,
            "seq": 2,
            "occurred_at": T0,
            "correlation_id": order.command.correlation_id,
            "causation_id": None,
        }
    )
    world.event(confirmed_early)
    world.event(order.add(failed))
    world.project(order)

    report = world.audit()

    assert kinds(report) == [("bad_sequence", order.order_id)]
    assert "pending -> confirmed is not a legal transition" in report.problems[0].detail


def test_reconcile_duplicate_event_first_occurrence_wins() -> None:
    world = World()
    order = world.order(*FILLED)
    world.ledger = [swap(order.order_id)]
    copy = order.events[1].model_copy(update={"status": "routing", "reason": "re-emitted"})
    world.event(copy)

    report = world.audit()

    assert report.clean
    assert report.coverage.duplicate_events == 1


# Read models ----------------------------------------------------------------------------------


def test_reconcile_order_missing_from_the_read_models_is_reported_per_table() -> None:
    world = World()
    order = world.order(failed, projected=False)

    report = world.audit()

    assert kinds(report) == [("read_model", order.order_id)] * 3
    assert sorted(p.detail.split(";")[0] for p in report.problems) == [
        "missing from analytics_orders",
        "missing from order_events",
        "missing from orders",
    ]
    assert {p.position for p in report.problems} == {Position(topic=EVENTS, partition=0, offset=1)}


def test_reconcile_row_behind_events_older_than_the_grace_is_reported() -> None:
    world = World()
    order = world.order(failed)
    world.tables["orders"][order.order_id] = Head(1, "pending")

    report = world.audit()

    assert kinds(report) == [("read_model", order.order_id)]
    assert report.problems[0].detail == "orders is behind at seq 1; the log has seq 2 (failed)"
    assert report.problems[0].position == Position(topic=EVENTS, partition=0, offset=2)


def test_reconcile_row_behind_events_younger_than_the_grace_is_a_lag() -> None:
    world = World()
    order = world.order(armed, spec=LIMIT)
    world.event(order.add(triggered), at=JUST_NOW)

    assert world.audit().clean


def test_reconcile_row_whose_status_differs_from_the_log_is_reported() -> None:
    world = World()
    order = world.order(failed)
    world.tables["analytics_orders"][order.order_id] = Head(2, "confirmed")

    report = world.audit()

    assert kinds(report) == [("read_model", order.order_id)]
    assert report.problems[0].detail == "analytics_orders says confirmed at seq 2, the log failed"


def test_reconcile_audit_trail_with_a_hole_is_reported() -> None:
    world = World()
    order = world.order(failed)
    world.tables["order_events"][order.order_id] = Head(2, None, 1)

    report = world.audit()

    assert kinds(report) == [("read_model", order.order_id)]
    assert "order_events holds 1 events up to seq 2" in report.problems[0].detail


def test_reconcile_row_of_an_order_with_no_events_on_the_log_is_reported() -> None:
    world = World()
    stray = uuid.uuid4()
    world.tables["orders"][stray] = Head(3, "building")

    report = world.audit()

    assert kinds(report) == [("read_model", stray)]
    assert "no events on the log" in report.problems[0].detail


def test_reconcile_missing_read_model_table_is_not_checked() -> None:
    world = World()
    world.order(failed)
    del world.tables["analytics_orders"]

    report = world.audit()

    assert report.clean
    assert set(report.coverage.read_models) == {"orders", "order_events"}


# Dead letters and undecodable records ---------------------------------------------------------


def letter(offset: int, error: str, key: str | None = None) -> DeadLetter:
    return DeadLetter(
        source_topic=EVENTS,
        partition=0,
        offset=offset,
        key=key,
        value="{oops",
        error=error,
        occurred_at=T0,
    )


def test_reconcile_every_dead_letter_is_reported_at_its_source_position() -> None:
    world = World()
    order_id = uuid.uuid4()
    world.event("DecodeError: Invalid JSON")
    world.dead_letter(letter(0, "undecodable event: Invalid JSON", str(order_id)))
    world.dead_letter(letter(0, "DecodeError: Invalid JSON", str(order_id)))
    world.dead_letter(letter(0, "DecodeError: Invalid JSON", str(order_id)))  # published twice

    report = world.audit()

    assert kinds(report) == [("dead_letter", order_id)] * 2
    assert {p.position for p in report.problems} == {Position(topic=EVENTS, partition=0, offset=0)}
    assert sorted(p.detail for p in report.problems) == [
        f"dead-lettered at {DEAD_LETTERS}[0]@1: undecodable event: Invalid JSON",
        f"dead-lettered at {DEAD_LETTERS}[0]@2 (2 copies): DecodeError: Invalid JSON",
    ]


def test_reconcile_undecodable_dead_letter_is_reported_at_its_own_position() -> None:
    world = World()
    world.dead_letter("ValidationError: bad")

    report = world.audit()

    assert [(p.kind, p.position) for p in report.problems] == [
        ("dead_letter", Position(topic=DEAD_LETTERS, partition=0, offset=0))
    ]


def test_reconcile_undecodable_record_nobody_dead_lettered_is_reported() -> None:
    world = World()
    world.event("DecodeError: Invalid JSON")
    world.command("OrderAccepted is not a command", at=JUST_NOW)

    report = world.audit()

    assert [(p.kind, p.position) for p in report.problems] == [
        ("undecodable", Position(topic=EVENTS, partition=0, offset=0))
    ]
    assert report.coverage.commands == {"undecodable": 1}


# The venues' ledger ---------------------------------------------------------------------------


def test_reconcile_landed_swap_of_an_order_that_failed_is_a_swap_without_order() -> None:
    world = World()
    order = world.order(routed, built, failed)
    world.ledger = [swap(order.order_id)]

    report = world.audit()

    assert kinds(report) == [("swap_without_order", order.order_id)]
    assert report.problems[0].detail.endswith("landed, but its order ended failed")


def test_reconcile_landed_swap_of_no_known_order_is_a_swap_without_order() -> None:
    world = World()
    stray = uuid.uuid4()
    world.ledger = [swap(stray), swap(uuid.uuid4()).model_copy(update={"client_ref": "manual"})]

    report = world.audit()

    assert kinds(report) == [("swap_without_order", None), ("swap_without_order", stray)]


def test_reconcile_landed_swap_of_an_order_in_flight_is_not_reported() -> None:
    world = World()
    order = world.order(routed, built, submitted, at=JUST_NOW)
    world.ledger = [swap(order.order_id)]

    assert world.audit().clean


def test_reconcile_landed_swap_of_a_stalled_order_is_reported_beside_the_stall() -> None:
    world = World()
    order = world.order(routed, built, submitted)
    world.ledger = [swap(order.order_id)]

    assert sorted(kind for kind, _ in kinds(world.audit())) == ["stalled", "swap_without_order"]


def test_reconcile_pending_or_failed_swaps_are_not_landed() -> None:
    world = World()
    order = world.order(routed, built, failed)
    world.ledger = [swap(order.order_id, status="pending"), swap(order.order_id, 2, "failed")]

    assert world.audit().clean


def test_reconcile_order_with_two_landed_swaps_was_executed_twice() -> None:
    world = World()
    order = world.order(*FILLED)
    world.ledger = [swap(order.order_id), swap(order.order_id, attempt=2)]

    report = world.audit()

    assert kinds(report) == [
        ("swap_without_order", order.order_id),
        ("executed_twice", order.order_id),
    ]
    assert report.problems[1].detail.startswith("2 swaps landed")


# The summary ----------------------------------------------------------------------------------


def test_describe_clean_report_says_so_after_what_was_read() -> None:
    world = World()
    filled = world.order(*FILLED)
    world.ledger = [swap(filled.order_id)]

    lines = describe(world.audit(), seconds=0.25)

    assert lines[0].startswith("audited in 0.25s as of 2026-11-24T13:00:00+00:00")
    assert lines[1] == "commands: 1 SubmitOrder; events: 5 (0 duplicates); dead letters: 0"
    assert lines[2] == "orders: 1 confirmed"
    assert lines[-1] == "no problems"


def test_describe_lists_each_problem_on_one_line() -> None:
    world = World()
    lost = OrderHistory()
    world.command(lost.command)
    world.ledger = None

    lines = describe(world.audit(), seconds=1)

    assert "skipped ledger: venue service down" in lines
    assert lines[-2] == "1 problem(s): 1 not_accepted"
    assert lines[-1].split()[:3] == ["not_accepted", str(lost.order_id), f"{COMMANDS}[0]@0"]


def test_audit_command_negative_grace_is_refused_before_reading_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["audit", "--grace-s", "-1"])

    assert exited.value.code == 2
    assert "must be a number of seconds >= 0, got '-1'" in capsys.readouterr().err
