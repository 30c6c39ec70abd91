"""The trigger service's decisions, free of I/O: what it knows and what it would fire.

``TriggerState`` folds order events (which orders wait, at which version, which are
executing) and market messages (every pool's latest state), and answers which
armed orders a pool's spot price makes candidates. ``judge`` decides from real
quotes whether a candidate fires; ``Gate`` caps how many triggered orders execute
at once and queues the rest in crossing order.

The spot price is a necessary condition only: an executable price for a size is
never better than the spot, so an order whose limit the spot does not reach is
not worth quoting, and one it does reach is verified with quotes before it fires.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from domain.lifecycle import EXECUTING, TERMINAL_STATUSES, is_stale, refusal
from domain.pricing import Market, executable_price, market_of
from events.market import PoolState
from events.messages import (
    Event,
    OrderAccepted,
    OrderSpec,
    Status,
    VenueQuote,
)
from services.triggers.book import Armed, ArmedBook


def pool_market(pool: PoolState) -> tuple[Market, Decimal]:
    """Return the pool's market and its spot price in that market's quote per base."""
    market = market_of(pool.base, pool.quote)
    # The market service names base and quote as market_of does; if a pool ever
    # does not, its price is per the other token and is inverted here.
    return market, (pool.price if market.base == pool.base else 1 / pool.price)


def _fmt(value: Decimal) -> str:
    """Return ``value`` to nine significant digits without exponent, for reasons and logs."""
    return f"{Decimal(f'{value:.9g}').normalize():f}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """An armed order that a pool's spot price reached: worth verifying with quotes."""

    order: Armed
    pool_id: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a candidate fires, at which executable price and venue, and why."""

    fire: bool
    reason: str
    price: Decimal | None = None
    venue: str | None = None
    # False when no venue gave a usable quote: nothing was learned about the price.
    quoted: bool = True


def judge(order: Armed, quotes: Sequence[VenueQuote]) -> Verdict:
    """Decide from each venue's quote for the order's size whether its bound is reached.

    The best executable price among the usable quotes decides (highest for a sell,
    lowest for a buy); a tie goes to the alphabetically first venue.
    """
    amount_in = order.spec.amount
    prices = sorted(
        (
            (executable_price(order.side, amount_in, q.amount_out), q.venue)
            for q in quotes
            if q.ok and q.amount_out is not None and q.amount_out > 0
        ),
        key=lambda pv: (-pv[0] if order.side == "sell" else pv[0], pv[1]),
    )
    if not prices:
        errors = ", ".join(f"{q.venue} {q.error}" for q in quotes) or "no venues"
        return Verdict(fire=False, reason=f"no usable quote ({errors})", quoted=False)
    price, venue = prices[0]
    bound = order.bound
    if bound is None:
        return Verdict(
            fire=True, reason=f"{venue} executable {_fmt(price)}", price=price, venue=venue
        )
    sign = "≥" if order.side == "sell" else "≤"
    name = "limit" if order.spec.order_type == "limit" else "max"
    if order.reached_by(price):
        reason = f"{venue} executable {_fmt(price)} {sign} {name} {_fmt(bound)}"
        return Verdict(fire=True, reason=reason, price=price, venue=venue)
    return Verdict(
        fire=False,
        reason=f"best executable {_fmt(price)} on {venue} misses {name} {_fmt(bound)}",
        price=price,
        venue=venue,
    )


def sniper_ready(order: Armed, pool: PoolState, min_liquidity_usd: Decimal) -> bool:
    """Tell whether ``pool`` meets a sniper's condition, as far as its spot can tell.

    The pool must trade the sniper's pair, hold at least ``min_liquidity_usd``, and
    (with a maximum price) its spot must be at or under that maximum.
    """
    market, spot = pool_market(pool)
    return (
        market == order.market
        and market.base == order.spec.token_out
        and pool.liquidity_usd >= min_liquidity_usd
        and order.reached_by(spot)
    )


def sniper_reason(pool: PoolState, min_liquidity_usd: Decimal) -> str:
    """Explain a sniper that fires on ``pool`` without a price bound to verify."""
    return (
        f"{pool.pool_id} has liquidity {_fmt(pool.liquidity_usd)} USD"
        f" ≥ {_fmt(min_liquidity_usd)} USD"
    )


class Gate:
    """At most ``cap`` triggered orders execute at once; more crossings wait in line.

    An order holds a slot from the moment it is verified (``reserve``) until its
    execution ends: a terminal status, or armed again (``release``). Crossings
    beyond the cap queue in the order they happened; an order queues once.
    """

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("the cap must be at least 1")
        self.cap = cap
        self.executing: set[uuid.UUID] = set()
        self.verifying: set[uuid.UUID] = set()
        self._queue: OrderedDict[uuid.UUID, Candidate] = OrderedDict()

    @property
    def room(self) -> int:
        """Return how many more orders may start verifying now."""
        return max(0, self.cap - len(self.executing) - len(self.verifying))

    @property
    def queued(self) -> int:
        return len(self._queue)

    def busy(self, order_id: uuid.UUID) -> bool:
        """Tell whether the order is being verified, executing or waiting in line."""
        return order_id in self.verifying or order_id in self.executing or order_id in self._queue

    def request(self, candidate: Candidate) -> bool:
        """Reserve a slot for ``candidate`` and return True, or queue it and return False.

        A candidate already verifying, executing or queued is neither (False): it keeps
        its place. Nobody overtakes the queue.
        """
        order_id = candidate.order.order_id
        if self.busy(order_id):
            return False
        if self.room and not self._queue:
            self.verifying.add(order_id)
            return True
        self._queue[order_id] = candidate
        return False

    def next(self) -> Candidate | None:
        """Reserve a slot for the longest-waiting queued candidate and return it, if room."""
        if not self.room or not self._queue:
            return None
        _, candidate = self._queue.popitem(last=False)
        self.verifying.add(candidate.order.order_id)
        return candidate

    def fired(self, order_id: uuid.UUID) -> None:
        """Record that a verified order was triggered: it now executes."""
        self.verifying.discard(order_id)
        self.executing.add(order_id)

    def abandon(self, order_id: uuid.UUID) -> None:
        """Give back the slot of an order whose verification did not fire it."""
        self.verifying.discard(order_id)

    def executes(self, order_id: uuid.UUID) -> None:
        """Record an order seen executing (triggered by anyone, e.g. before a restart)."""
        self._queue.pop(order_id, None)
        self.executing.add(order_id)

    def release(self, order_id: uuid.UUID) -> bool:
        """Free the slot of an order whose execution ended; return whether it held one."""
        if order_id in self.executing:
            self.executing.discard(order_id)
            return True
        return False

    def drop(self, order_id: uuid.UUID) -> None:
        """Take an order out of the line (it is no longer armed)."""
        self._queue.pop(order_id, None)


@dataclass(slots=True)
class Waiting:
    """What the service knows of a limit or sniper order that is not finished."""

    spec: OrderSpec
    correlation_id: uuid.UUID
    seq: int
    status: Status


@dataclass(frozen=True, slots=True)
class Effect:
    """What folding one event changed, for the service to act on."""

    armed: Armed | None = None  # newly armed: evaluate it now
    released: bool = False  # an execution ended: a queued crossing may go
    skipped: str | None = None  # why the event was not folded (illegal, gap)


NOTHING = Effect()


@dataclass
class TriggerState:
    """The armed book, the market, the in-flight gate and the failed verifications."""

    max_in_flight: int
    sniper_min_liquidity_usd: Decimal
    orders: dict[uuid.UUID, Waiting] = field(default_factory=dict)
    book: ArmedBook = field(default_factory=ArmedBook)
    pools: dict[str, PoolState] = field(default_factory=dict)
    pools_by_market: dict[str, set[str]] = field(default_factory=dict)
    # Per order and pool, the spot at which verification last failed: not quoted
    # again until that pool's spot moves further in the order's favour.
    failed: dict[uuid.UUID, dict[str, Decimal]] = field(default_factory=dict)
    gate: Gate = field(init=False)

    def __post_init__(self) -> None:
        self.gate = Gate(self.max_in_flight)

    # Orders --------------------------------------------------------------------

    def load(
        self,
        order_id: uuid.UUID,
        spec: OrderSpec,
        correlation_id: uuid.UUID,
        seq: int,
        status: Status,
    ) -> None:
        """Take an order as a snapshot of the read model has it (before the tail)."""
        if status in TERMINAL_STATUSES or not spec.waits:
            return
        self.orders[order_id] = Waiting(spec, correlation_id, seq, status)
        if status == "armed":
            self.book.arm(Armed.of(order_id, seq, correlation_id, spec))
        elif status in EXECUTING:
            self.gate.executes(order_id)

    def apply(self, event: Event) -> Effect:
        """Fold one order event; duplicates and events of other orders change nothing.

        Events are checked as every fold of them is (``domain.lifecycle.refusal``).
        """
        known = self.orders.get(event.order_id)
        if known is None:
            if (
                isinstance(event, OrderAccepted)
                and event.spec.waits
                and refusal(None, event) is None
            ):
                self.orders[event.order_id] = Waiting(
                    event.spec, event.correlation_id, event.seq, event.status
                )
            return NOTHING  # a market order, or one this service does not follow
        if is_stale(known, event):
            return NOTHING  # a redelivered event
        refused = refusal(known, event)
        if refused is not None:
            # A gap is named first: this service's view starts from a snapshot of the
            # read model, so an event it missed is what the log should point at.
            return Effect(skipped=refused.gap or refused.reason)
        known.seq, known.status = event.seq, event.status
        order_id = event.order_id
        released = False
        if event.status == "armed" or event.status in TERMINAL_STATUSES:
            released = self.gate.release(order_id)
        if event.status in EXECUTING:
            self.gate.executes(order_id)
        if event.status in TERMINAL_STATUSES:
            del self.orders[order_id]
        if event.status == "armed":
            armed = Armed.of(order_id, event.seq, known.correlation_id, known.spec)
            self.failed.pop(order_id, None)
            self.book.arm(armed)
            return Effect(armed=armed, released=released)
        self.forget(order_id)
        return Effect(released=released)

    def forget(self, order_id: uuid.UUID) -> None:
        """Take an order out of the book and the line (triggered, expired, finished)."""
        self.book.remove(order_id)
        self.gate.drop(order_id)
        self.failed.pop(order_id, None)

    def fired(self, order: Armed) -> None:
        """Record that ``order`` was triggered at its armed version: it fires once."""
        self.forget(order.order_id)
        self.gate.fired(order.order_id)

    def failed_at(self, candidate: Candidate, spot: Decimal) -> None:
        """Record that ``candidate`` did not verify at ``spot`` of its pool."""
        self.failed.setdefault(candidate.order.order_id, {})[candidate.pool_id] = spot

    def worth_quoting(self, order: Armed, pool_id: str, spot: Decimal) -> bool:
        """Tell whether the spot moved past the last one at which the order failed."""
        last = self.failed.get(order.order_id, {}).get(pool_id)
        if last is None:
            return True
        return spot > last if order.side == "sell" else spot < last

    # Market --------------------------------------------------------------------

    def observe(self, pool: PoolState) -> bool:
        """Take a pool's new state; return False for an old or repeated one."""
        known = self.pools.get(pool.pool_id)
        if known is not None and known.seq >= pool.seq:
            return False
        self.pools[pool.pool_id] = pool
        market, _ = pool_market(pool)
        self.pools_by_market.setdefault(market.name, set()).add(pool.pool_id)
        return True

    def spot(self, pool_id: str) -> Decimal | None:
        """Return a known pool's spot price in its market's quote per base."""
        pool = self.pools.get(pool_id)
        return None if pool is None else pool_market(pool)[1]

    # Candidates ------------------------------------------------------------------

    def candidates_at(self, pool: PoolState) -> list[Candidate]:
        """Return the armed orders ``pool``'s state makes worth verifying.

        Limit orders of its market whose limit the spot reaches (and that did not fail
        at this spot or a better one, and are not already verifying or queued); snipers
        of its base token whose condition holds.
        """
        market, spot = pool_market(pool)
        # Orders already verifying or waiting in line keep their place: during a burst
        # most crossed orders are, and every tick of the pool crosses them again.
        found = [
            Candidate(order, pool.pool_id)
            for order in self.book.crossed(market, spot)
            if not self.gate.busy(order.order_id) and self.worth_quoting(order, pool.pool_id, spot)
        ]
        found.extend(
            Candidate(order, pool.pool_id)
            for order in self.book.snipers(market.base)
            if sniper_ready(order, pool, self.sniper_min_liquidity_usd)
            and self.worth_quoting(order, pool.pool_id, spot)
        )
        return found

    def candidates_for(self, order: Armed) -> list[Candidate]:
        """Return ``order`` as a candidate at each pool of its market whose state allows it.

        The most favourable pool first (highest spot for a sell, lowest for a buy).
        """
        pools = [self.pools[p] for p in sorted(self.pools_by_market.get(order.market.name, ()))]
        pools.sort(key=lambda p: -pool_market(p)[1] if order.side == "sell" else pool_market(p)[1])
        found = []
        for pool in pools:
            _, spot = pool_market(pool)
            if order.spec.order_type == "sniper":
                ok = sniper_ready(order, pool, self.sniper_min_liquidity_usd)
            else:
                ok = order.reached_by(spot)
            if ok and self.worth_quoting(order, pool.pool_id, spot):
                found.append(Candidate(order, pool.pool_id))
        return found

    def still_valid(self, candidate: Candidate) -> bool:
        """Tell whether a queued candidate is still armed and its pool still allows it."""
        order = candidate.order
        pool = self.pools.get(candidate.pool_id)
        if pool is None or not self.book.is_armed(order.order_id, order.seq):
            return False
        _, spot = pool_market(pool)
        if order.spec.order_type == "sniper":
            ok = sniper_ready(order, pool, self.sniper_min_liquidity_usd)
        else:
            ok = order.reached_by(spot)
        return ok and self.worth_quoting(order, candidate.pool_id, spot)

    def sweep(self) -> list[Candidate]:
        """Return every armed order the current market makes a candidate, first armed first."""
        return [c for order in self.book.orders() for c in self.candidates_for(order)[:1]]

    def counts(self) -> dict[str, int]:
        """Return sizes worth logging: orders known, armed, executing, queued, pools."""
        return {
            "waiting": len(self.orders),
            "armed": len(self.book),
            "executing": len(self.gate.executing),
            "queued": self.gate.queued,
            "pools": len(self.pools),
        }
