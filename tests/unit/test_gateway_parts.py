"""The gateway's parts, each alone: the read side's fold, the tail's memories, a route."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from adapters.settings import Settings
from domain.accounts import DEV_ACCOUNT, Caller
from domain.lifecycle import evolve
from events.messages import Event
from services.gateway import deps, errors
from services.gateway.auth import authenticate
from services.gateway.fanout import Fanout, StreamFilter
from services.gateway.firehose import StreamParamError, parse_cursor
from services.gateway.read_side import fold_onto
from services.gateway.recent import RecentEvents
from services.gateway.routes import orders
from services.gateway.submissions import Submissions, Turns
from services.gateway.tail import Cursor, Logged
from tests.orders import SELL_SOL
from tests.unit.factories import confirmed_history, submit_order


def logged(event: Event, offset: int = 0) -> Logged:
    return Logged(event, {"topic": "orders.events", "partition": 0, "offset": offset})


def test_fold_onto_a_row_behind_the_tail_folds_the_newer_events_on_top() -> None:
    events = confirmed_history()
    row = evolve(evolve(None, events[0]), events[1])  # the projector is at seq 2

    state = fold_onto(row, [logged(e) for e in events])

    assert state is not None
    assert (state.seq, state.status) == (5, "confirmed")


def test_fold_onto_a_gap_in_the_tails_events_stops_before_it() -> None:
    events = confirmed_history()
    row = evolve(None, events[0])

    state = fold_onto(row, [logged(events[1]), logged(events[3]), logged(events[4])])

    assert state is not None
    assert (state.seq, state.status) == (2, "routing")


def test_fold_onto_no_row_and_no_events_is_unknown() -> None:
    assert fold_onto(None, []) is None


async def test_recent_events_a_second_copy_of_a_seq_is_dropped_and_not_relayed() -> None:
    first, *_ = confirmed_history()
    recent = RecentEvents()
    async with recent.subscribe(first.order_id, capacity=10) as live:
        assert recent.add(logged(first, offset=1))
        assert not recent.add(logged(first, offset=9))
        assert live.queue.qsize() == 1
    assert [item.position["offset"] for item in recent.recent(first.order_id)] == [1]
    assert recent.knows(first.order_id)


def test_recent_events_past_the_bound_forget_the_oldest_order() -> None:
    recent = RecentEvents(max_orders=2)
    histories = [confirmed_history() for _ in range(3)]
    for events in histories:
        recent.add(logged(events[0]))

    assert [recent.knows(events[0].order_id) for events in histories] == [False, True, True]
    assert len(recent) == 2


def test_recent_events_past_the_bound_forget_ended_orders_before_running_ones() -> None:
    recent = RecentEvents(max_orders=3)
    running, ended, newer = confirmed_history(), confirmed_history(), confirmed_history()
    recent.add(logged(running[0]))
    for event in ended:
        recent.add(logged(event))
    recent.add(logged(running[1]))  # the running order is now the one heard of last...
    recent.add(logged(newer[0]))
    recent.add(logged(confirmed_history()[0]))  # ...yet the ended one goes first

    assert not recent.knows(ended[0].order_id)
    assert recent.knows(running[0].order_id)
    assert recent.knows(newer[0].order_id)


async def test_recent_events_an_order_being_watched_is_kept_past_the_bound() -> None:
    recent = RecentEvents(max_orders=2)
    watched, older, newer = confirmed_history(), confirmed_history(), confirmed_history()
    async with recent.subscribe(watched[0].order_id, capacity=10):
        for events in (watched, older, newer):
            recent.add(logged(events[0]))
        assert recent.knows(watched[0].order_id)
        assert not recent.knows(older[0].order_id)
        assert recent.knows(newer[0].order_id)


async def test_recent_events_a_subscriber_that_falls_behind_is_dropped_not_waited_for() -> None:
    events = confirmed_history()
    recent = RecentEvents()
    async with recent.subscribe(events[0].order_id, capacity=2) as live:
        for event in events:
            assert recent.add(logged(event))
        assert live.dropped.is_set()
        assert live.queue.qsize() == 2


async def test_recent_events_an_unknown_order_subscribed_to_is_forgotten_after() -> None:
    recent = RecentEvents()
    async with recent.subscribe(uuid.uuid4(), capacity=1):
        assert len(recent) == 1
    assert len(recent) == 0


def test_submissions_a_keyed_submission_is_remembered_under_its_key() -> None:
    command = submit_order().model_copy(update={"idempotency_key": "k1"})
    submissions = Submissions()

    submissions.record_submission(command)

    seen = submissions.submission(command.account, "k1")
    assert seen is not None
    assert seen.order_id == command.order_id
    assert submissions.submitted(command.order_id) == command


def test_fanout_an_event_is_rendered_once_for_every_feed_that_matches() -> None:
    rendered: list[str] = []

    def render(item: Logged, cursor: str) -> str:
        rendered.append(cursor)
        return f"{item.event.seq}@{cursor}"

    cursor: Cursor = {0: 7}
    fanout = Fanout(render, lambda: cursor)
    both = [fanout.open_feed(StreamFilter(), 10)[0] for _ in range(2)]
    failed_only, _ = fanout.open_feed(StreamFilter(statuses=frozenset({"failed"})), 10)

    fanout.publish(logged(confirmed_history()[0]))

    assert rendered == ["0:7"]
    assert [feed.queue.qsize() for feed in [*both, failed_only]] == [1, 1, 0]


def test_fanout_a_feed_that_is_full_is_dropped_and_no_longer_fed() -> None:
    fanout = Fanout(lambda item, cursor: "x", lambda: {})
    feed, _ = fanout.open_feed(StreamFilter(), 1)

    for event in confirmed_history()[:2]:
        fanout.publish(logged(event))

    assert feed.dropped.is_set()
    assert fanout.listeners == 0


ADMIN = Caller(DEV_ACCOUNT, "admin", "dev")


class StubReadSide:
    """Answers ``state`` from a dict, as if the read models held those orders."""

    def __init__(self, states: dict[uuid.UUID, Any]) -> None:
        self.states = states

    async def state(self, order_id: uuid.UUID) -> Any:
        return self.states.get(order_id)


class CaughtUpTail:
    """A log tail that has always read the log as of now (a gateway's own tail)."""

    running = True

    async def catch_up(self, timeout_s: float) -> bool:
        return True


def orders_app(parts: dict[Any, Any]) -> FastAPI:
    """Return an app of the orders routes alone, an admin calling, with these parts."""
    app = FastAPI()
    errors.install(app)
    app.include_router(orders.router)
    app.dependency_overrides[deps.settings] = Settings
    app.dependency_overrides[authenticate] = lambda: ADMIN
    app.dependency_overrides.update(parts)
    return app


async def get(path: str, read_side: StubReadSide, submissions: Submissions) -> httpx.Response:
    """GET ``path`` from an app of the orders routes alone, with these parts."""
    app = orders_app(
        {
            deps.read_side: lambda: read_side,
            deps.submissions: lambda: submissions,
            deps.tail: CaughtUpTail,
        }
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.get(path)


async def test_get_order_known_only_from_its_submission_answers_pending() -> None:
    command = submit_order()
    submissions = Submissions()
    submissions.record_submission(command)

    response = await get(f"/api/orders/{command.order_id}", StubReadSide({}), submissions)

    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    assert response.json()["orderId"] == str(command.order_id)


async def test_get_order_in_the_read_models_answers_its_state() -> None:
    events = confirmed_history()
    state = fold_onto(None, [logged(e) for e in events])
    read_side = StubReadSide({events[0].order_id: state})

    response = await get(f"/api/orders/{events[0].order_id}", read_side, Submissions())

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["amountOut"]) == ("confirmed", "224.1")


async def test_get_order_unknown_answers_404_order_not_found() -> None:
    response = await get(f"/api/orders/{uuid.uuid4()}", StubReadSide({}), Submissions())

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ORDER_NOT_FOUND"


def test_submissions_past_the_bounds_forget_the_least_recent_keys_and_commands() -> None:
    submissions = Submissions(max_keys=2, max_orders=2)
    commands = [submit_order().model_copy(update={"idempotency_key": f"k{n}"}) for n in range(3)]
    for command in commands:
        submissions.record_submission(command)

    remembered = [submissions.submission(c.account, f"k{n}") for n, c in enumerate(commands)]
    assert [seen is not None for seen in remembered] == [False, True, True]
    assert [submissions.submitted(c.order_id) is not None for c in commands] == [False, True, True]


def test_fanout_forgets_an_orders_facts_once_it_ended() -> None:
    fanout = Fanout(lambda item, cursor: "x", lambda: {})
    events = confirmed_history()
    fanout.publish(logged(events[0]))
    assert fanout.facts(events[0].order_id) is not None

    for event in events[1:]:
        fanout.publish(logged(event))

    assert fanout.facts(events[0].order_id) is None


async def test_submissions_hold_lets_one_holder_of_a_key_in_at_a_time() -> None:
    submissions = Submissions()
    inside: list[int] = []

    async def enter(n: int) -> None:
        async with submissions.hold("acme", "k"):
            inside.append(n)
            await asyncio.sleep(0.01)
            inside.append(-n)

    await asyncio.gather(enter(1), enter(2))
    assert inside in ([1, -1, 2, -2], [2, -2, 1, -1])


def test_a_firehose_cursor_naming_a_partition_twice_is_refused() -> None:
    assert parse_cursor("0:12,1:40") == {0: 12, 1: 40}
    with pytest.raises(StreamParamError) as refused:
        parse_cursor("0:12,0:40")
    assert refused.value.field == "from"


class SlowWriter:
    """A command writer that takes a while per command and counts how many overlap."""

    def __init__(self, seconds: float = 0.01) -> None:
        self.seconds = seconds
        self.written: list[uuid.UUID] = []
        self.at_once = 0
        self.most_at_once = 0

    async def write(self, command: Any) -> None:
        self.at_once += 1
        self.most_at_once = max(self.most_at_once, self.at_once)
        await asyncio.sleep(self.seconds)
        self.at_once -= 1
        self.written.append(command.order_id)


def submitting_app(gateway: Any, writer: Any, settings: Settings) -> FastAPI:
    """Return an app of the orders routes alone, writing through ``writer``."""
    return orders_app(
        {
            deps.gateway: lambda: gateway,
            deps.commands: lambda: writer,
            deps.submissions: Submissions,
            deps.settings: lambda: settings,
            deps.clock: lambda: lambda: datetime.now(UTC),
            deps.read_side: lambda: StubReadSide({}),
        }
    )


async def post_orders(app: FastAPI, count: int) -> list[httpx.Response]:
    """POST ``count`` market orders to ``app`` at once."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await asyncio.gather(
            *(client.post("/api/orders/execute", json=SELL_SOL) for _ in range(count))
        )


def admitting(at_once: int, wait_s: float = 10.0) -> Any:
    """Return the gateway parts a submission uses besides those overridden."""
    return type("Parts", (), {"turns": Turns(at_once, wait_s), "order_secret": b"s"})()


async def test_execute_a_burst_past_the_admission_limit_is_all_accepted_a_few_at_a_time() -> None:
    writer = SlowWriter()
    app = submitting_app(admitting(2), writer, Settings())

    answers = await post_orders(app, 10)

    assert [a.status_code for a in answers] == [202] * 10
    assert len(set(writer.written)) == 10
    assert writer.most_at_once == 2


async def test_execute_waiting_its_turn_too_long_answers_503_gateway_busy_unwritten() -> None:
    writer = SlowWriter(seconds=1.0)
    app = submitting_app(admitting(1, wait_s=0.2), writer, Settings())

    answers = await post_orders(app, 2)

    assert sorted(a.status_code for a in answers) == [202, 503]
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.json()["error"]["code"] == "GATEWAY_BUSY"
    assert busy.headers["Retry-After"]
    assert len(writer.written) == 1
