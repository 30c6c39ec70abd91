"""``oee audit``: reconcile the log, the read models and the venues' ledger; print the problems.

``replay --check`` compares the read models with a rebuild from the events, so what
never became an event (a submission the engine lost) or never reached the read
models (an event dead-lettered) passes it. The audit reads every source instead:
the commands, events and dead-letter topics from their start to the end offsets
taken at the start (no consumer group), the read models, and the venues' ledger
when the venue service answers. ``cli.reconcile`` finds the problems.

The sources are read in an order that leaves no room for a false alarm between
them: the ledger, then the read models, then the topics. A swap on the ledger was
built, and its order's events logged, before the topics' end offsets are taken,
and no read-model row can be ahead of the log it was projected from.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import psycopg
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from adapters.log_reader import MissingTopicError, ReadStalledError, TopicRecord, read_topics
from adapters.postgres import connect
from adapters.settings import Settings
from adapters.venues.client import http_venues
from adapters.venues.interface import LedgerEntry, VenueError
from cli.reconcile import (
    DEFAULT_LIMITS,
    AuditReport,
    Limits,
    Logged,
    Position,
    Problem,
    Sources,
    reconcile,
)
from events.messages import Command, DeadLetter, DecodeError, Event, decode, decode_event
from projections.heads import read_heads

T = TypeVar("T")
# A problem's detail in the summary: on one line, and cut at this length (--json has it all).
DETAIL_CHARS = 300


def utc_now() -> datetime:
    """Return the current UTC time (the audit's default clock)."""
    return datetime.now(UTC)


# Reading the sources -------------------------------------------------------------------


def _decoded(value: bytes | None, decode_as: Callable[[bytes], T]) -> T | str:
    """Return the message in ``value``, or why there is none (as the consumers word it)."""
    if value is None:
        return "DecodeError: record has no value"
    try:
        return decode_as(value)
    except (DecodeError, ValidationError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _command(value: bytes) -> Command:
    message = decode(value)
    if not isinstance(message, Command):
        raise DecodeError(f"{message.type} is not a command")
    return message


def _logged(record: TopicRecord, decode_as: Callable[[bytes], T]) -> Logged[T]:
    return Logged(
        # Trusted values from the broker: built without validation, tens of thousands a run.
        Position.model_construct(
            topic=record.topic, partition=record.partition, offset=record.offset
        ),
        datetime.fromtimestamp(record.timestamp / 1000, UTC),
        _decoded(record.value, decode_as),
    )


async def _read_ledger(settings: Settings) -> list[LedgerEntry] | str:
    """Return every swap of every venue, or why the venue service could not say."""
    venues = await http_venues(settings)
    try:
        return [entry for venue in venues for entry in await venue.ledger()]
    except VenueError as exc:
        return f"the venue service at {settings.venues_url} did not answer: {exc.code}: {exc}"
    finally:
        for venue in venues:
            await venue.aclose()


async def collect(settings: Settings) -> Sources:
    """Read and decode every source the audit compares (see the module's docstring)."""
    ledger = await _read_ledger(settings)
    conn = await connect(settings)
    try:
        heads = await read_heads(conn)
    finally:
        await conn.close()
    commands: list[Logged[Command]] = []
    events: list[Logged[Event]] = []
    dead_letters: list[Logged[DeadLetter]] = []
    topics = (settings.commands_topic, settings.events_topic, settings.dead_letter_topic)
    async with read_topics(settings, topics) as snapshot:
        async for batch in snapshot.batches():
            for record in batch:
                if record.topic == settings.events_topic:
                    events.append(_logged(record, decode_event))
                elif record.topic == settings.commands_topic:
                    commands.append(_logged(record, _command))
                else:
                    dead_letters.append(_logged(record, DeadLetter.model_validate_json))
    return Sources(
        commands=commands,
        events=events,
        dead_letters=dead_letters,
        read_models=heads,
        ledger=ledger if not isinstance(ledger, str) else None,
        skipped={"ledger": ledger} if isinstance(ledger, str) else {},
    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    # Tens of thousands of decoded messages stay alive until the report is made, and
    # every collection the allocations trigger walks them all, to find no cycle among
    # frozen values: the collector doubled the audit's decoding time at 60,000 records.
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


async def run_audit(
    settings: Settings, limits: Limits = DEFAULT_LIMITS, clock: Callable[[], datetime] = utc_now
) -> AuditReport:
    """Read every source and return what the audit finds, as of when it started."""
    now = clock()
    with _collector_paused():
        return reconcile(await collect(settings), now, limits)


# Printing ---------------------------------------------------------------------------------


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {name}" for name, count in counts.items()) or "none"


def _line(problem: Problem) -> str:
    detail = re.sub(r"\s+", " ", problem.detail)
    if len(detail) > DETAIL_CHARS:
        detail = detail[: DETAIL_CHARS - 1] + "…"
    return (
        f"{problem.kind:<18}  {problem.order_id or '-'!s:<36}  "
        f"{problem.position or '-'!s:<24}  {detail}"
    )


def describe(report: AuditReport, seconds: float) -> list[str]:
    """Return the summary of a report: what was read, then one line per problem."""
    seen = report.coverage
    tables = ", ".join(f"{table} {rows}" for table, rows in seen.read_models.items())
    ledger = "skipped" if seen.ledger_swaps is None else f"{seen.ledger_swaps} swap(s)"
    lines = [
        f"audited in {seconds:.2f}s as of {report.checked_at.isoformat(timespec='seconds')} "
        f"(grace {report.grace_s:g}s, stall {report.stall_s:g}s)",
        f"commands: {_counts(seen.commands)}; events: {seen.events} "
        f"({seen.duplicate_events} duplicates); dead letters: {seen.dead_letters}",
        f"orders: {_counts(seen.orders)}",
        f"read models (orders per table): {tables or 'none'}; venues' ledger: {ledger}",
    ]
    lines += [f"skipped {source}: {why}" for source, why in seen.skipped.items()]
    if report.clean:
        return [*lines, "no problems"]
    lines.append(f"{len(report.problems)} problem(s): {_counts(report.problem_counts)}")
    return lines + [_line(problem) for problem in report.problems]


def main(
    settings: Settings,
    *,
    grace_s: float = DEFAULT_LIMITS.grace.total_seconds(),
    stall_s: float = DEFAULT_LIMITS.stall.total_seconds(),
    as_json: bool = False,
) -> int:
    """Audit, print the summary (or with ``as_json`` the whole report) and return the
    exit code: 0 no problem, 1 problems found, 2 the log or the database unreachable."""
    limits = Limits(grace=timedelta(seconds=grace_s), stall=timedelta(seconds=stall_s))
    started = time.monotonic()
    try:
        report = asyncio.run(run_audit(settings, limits))
    except psycopg.OperationalError as exc:
        print(f"oee audit: cannot reach PostgreSQL: {exc}", file=sys.stderr)
        return 2
    except (KafkaError, MissingTopicError, ReadStalledError) as exc:
        print(f"oee audit: cannot read the log at {settings.bootstrap}: {exc!r}", file=sys.stderr)
        return 2
    seconds = time.monotonic() - started
    if as_json:
        print(
            json.dumps({"seconds": round(seconds, 3), **report.model_dump(mode="json")}, indent=2)
        )
    else:
        print("\n".join(describe(report, seconds)))
    return 0 if report.clean else 1
