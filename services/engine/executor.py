"""What the engine does after each order event: the next step of the lifecycle.

``Executor.react(state, cause)`` takes an order whose latest event is ``cause``
and performs the step the lifecycle names for its status (``domain.lifecycle.STEPS``:
arm, route, build, submit, confirm, resume), returning the next event. Venue calls
go through the ``Venue`` interface only. Every step is safe to repeat: a redelivered
event after a crash re-runs its step, and the submit step asks the venue by client
reference before sending a swap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import assert_never

from adapters.venues.interface import SwapRequest, Venue, VenueError
from adapters.venues.quoting import quote_all
from domain.lifecycle import EnvelopeFields, OrderState, envelope_after, next_step
from domain.pricing import executable_price, market_of, min_out_at, reaches, side_of
from domain.routing import NoRoute, RouteDecision, choose_route, min_amount_out
from domain.tokens import decimals_of
from events.messages import (
    Event,
    OrderArmed,
    OrderConfirmed,
    OrderFailed,
    OrderRouted,
    SwapAttemptFailed,
    TransactionBuilt,
    TransactionSubmitted,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

# Outcomes of a landed swap that a new attempt with a fresh quote may cure.
RETRYABLE_SWAP_CODES = frozenset(
    {"SLIPPAGE_EXCEEDED", "BLOCKHASH_EXPIRED", "NETWORK_ERROR", "POOL_BUSY"}
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failed swap is tried again, and how long to wait in between."""

    max_attempts: int = 3
    base_s: float = 0.5
    factor: float = 2.0

    def delay_s(self, failed_attempt: int) -> float:
        """Return the wait after attempt ``failed_attempt`` (1-based) failed."""
        return self.base_s * self.factor ** (failed_attempt - 1)


def client_ref(state: OrderState, attempt: int) -> str:
    """Return the venue-side reference of one swap attempt of an order."""
    return f"{state.order_id}:{attempt}"


def waiting_for(state: OrderState) -> str:
    """Describe what an armed order waits for."""
    spec = state.spec
    if spec.order_type == "sniper":
        cap = f" at {spec.max_price} {spec.token_in} or less" if spec.max_price else ""
        return f"waiting for a {spec.token_out} pool to launch{cap}"
    side = side_of(spec.token_in, spec.token_out)
    market = market_of(spec.token_in, spec.token_out)
    bound = "or more" if side == "sell" else "or less"
    return (
        f"waiting for {market.name} to reach {spec.limit_price} {bound} "
        f"for {spec.amount} {spec.token_in}"
    )


def limit_missed(state: OrderState, decision: RouteDecision) -> str | None:
    """Return why the routed price breaks the order's limit, or None when it honours it."""
    spec = state.spec
    limit = spec.limit_price or spec.max_price
    if limit is None:
        return None
    side = side_of(spec.token_in, spec.token_out)
    price = executable_price(side, spec.amount, decision.expected_out)
    if reaches(side, price, limit):
        return None
    return (
        f"price moved away: {decision.venue} gives {price.normalize():f}, "
        f"limit {limit.normalize():f}; waiting again"
    )


def build_steps(token_in: str, token_out: str, venue: str) -> tuple[str, ...]:
    """List the instructions of the swap transaction, with wSOL wrapping for native SOL."""
    steps = []
    if token_in == "SOL":
        steps.append("wrap_sol")
    steps.append(f"swap:{venue}")
    if token_out == "SOL":
        steps.append("unwrap_sol")
    return tuple(steps)


class Executor:
    """Perform the next lifecycle step of an order against the venues."""

    def __init__(
        self,
        venues: Mapping[str, Venue],
        clock: Clock,
        quote_timeout_s: float,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._venues = venues
        self._clock = clock
        self._quote_timeout_s = quote_timeout_s
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    async def react(self, state: OrderState, cause: Event) -> Event | None:
        """Return the event that follows ``state``, or None when the order is done or waits."""
        match next_step(state):
            case None:
                return None
            case "arm":
                return self._arm(state, cause, waiting_for(state))
            case "route":
                return await self._route(state, cause)
            case "build":
                return self._build(state, cause)
            case "submit":
                return await self._submit(state, cause)
            case "confirm":
                return await self._confirm(state, cause)
            case "resume":
                return await self._resume(state, cause)
            case unknown:
                assert_never(unknown)

    def _envelope(self, state: OrderState, cause: Event) -> EnvelopeFields:
        # Stamped after the step's I/O, so the timestamp says when the step finished.
        return envelope_after(state, cause, self._clock())

    def fail(self, state: OrderState, cause: Event, code: str, reason: str) -> OrderFailed:
        """Return the event that ends ``state`` as failed with ``code``."""
        log.info("order %s failed: %s %s", state.order_id, code, reason)
        return OrderFailed(
            **self._envelope(state, cause),
            code=code,
            reason=reason,
            attempt=state.attempt or None,
        )

    def attempt_failed(
        self, state: OrderState, cause: Event, code: str, reason: str, *, transient: bool
    ) -> Event:
        """Return a retry of the order after backoff, or its failure when out of attempts."""
        if not transient:
            return self.fail(state, cause, code, reason)
        if state.attempt >= self._retry.max_attempts:
            return self.fail(
                state, cause, code, f"gave up after {state.attempt} attempts: {reason}"
            )
        return self._retry_later(state, cause, code, reason)

    def _retry_later(self, state: OrderState, cause: Event, code: str, reason: str) -> Event:
        envelope = self._envelope(state, cause)
        delay = self._retry.delay_s(min(max(state.attempt, 1), self._retry.max_attempts))
        retry_at = envelope["occurred_at"] + timedelta(seconds=delay)
        log.info(
            "order %s attempt %d: %s; retry at %s", state.order_id, state.attempt, code, retry_at
        )
        return SwapAttemptFailed(
            **envelope,
            venue=state.venue or "",
            attempt=max(state.attempt, 1),
            code=code,
            reason=reason,
            retry_at=retry_at,
        )

    async def _resume(self, state: OrderState, cause: Event) -> Event:
        assert isinstance(cause, SwapAttemptFailed)
        # An absolute time, so a worker restarted mid-wait waits only the rest.
        wait = (cause.retry_at - self._clock()).total_seconds()
        if wait > 0:
            await self._sleep(wait)
        venue = self._venues.get(state.venue or "")
        if venue is not None and state.client_ref is not None:
            try:
                earlier = await venue.find_swap(state.client_ref)
            except VenueError as exc:
                # The outcome of the last attempt is unknown, so no new attempt may
                # start and the order may not fail: ask again, as long as it takes.
                return self._retry_later(state, cause, exc.code, str(exc))
            if earlier is not None and earlier.status != "failed":
                log.info(
                    "order %s: attempt %d reached the venue after all",
                    state.order_id,
                    state.attempt,
                )
                return TransactionSubmitted(
                    **self._envelope(state, cause),
                    venue=venue.name,
                    tx_hash=earlier.tx_hash,
                    attempt=state.attempt,
                )
        return await self._route(state, cause)

    def _arm(self, state: OrderState, cause: Event, reason: str) -> Event:
        return OrderArmed(**self._envelope(state, cause), reason=reason)

    async def _route(self, state: OrderState, cause: Event) -> Event:
        spec = state.spec
        quotes = await quote_all(
            list(self._venues.values()),
            spec.token_in,
            spec.token_out,
            spec.amount,
            self._quote_timeout_s,
        )
        try:
            decision = choose_route(quotes)
        except NoRoute as exc:
            if spec.order_type == "sniper" and state.status == "triggered":
                # The pool that fired the sniper is gone or cannot quote: keep waiting.
                return self._arm(state, cause, f"no venue can quote it yet: {exc}")
            return self.fail(state, cause, "NO_ROUTE", str(exc))
        missed = limit_missed(state, decision)
        if missed is not None:
            # Between the trigger and these quotes the price moved away: filling now
            # would break the order's limit, so it waits again instead.
            return self._arm(state, cause, missed)
        return OrderRouted(
            **self._envelope(state, cause),
            quotes=quotes,
            venue=decision.venue,
            expected_out=decision.expected_out,
            reason=decision.reason,
            runner_up=decision.runner_up,
            improvement_bps=decision.improvement_bps,
        )

    def _build(self, state: OrderState, cause: Event) -> Event:
        assert state.venue is not None
        assert state.expected_out is not None
        spec = state.spec
        decimals = decimals_of(spec.token_out)
        bound = min_amount_out(state.expected_out, spec.slippage_bps, decimals)
        limit = spec.limit_price or spec.max_price
        if limit is not None:
            # Never fill beyond the limit, whatever the slippage tolerance allows.
            side = side_of(spec.token_in, spec.token_out)
            bound = max(bound, min_out_at(side, spec.amount, limit, decimals))
        if bound <= 0:
            return self.fail(state, cause, "AMOUNT_TOO_SMALL", "minimum output rounds to zero")
        attempt = state.attempt + 1
        return TransactionBuilt(
            **self._envelope(state, cause),
            venue=state.venue,
            min_amount_out=bound,
            client_ref=client_ref(state, attempt),
            attempt=attempt,
            steps=build_steps(state.spec.token_in, state.spec.token_out, state.venue),
        )

    async def _submit(self, state: OrderState, cause: Event) -> Event:
        assert state.venue is not None
        assert state.client_ref is not None
        assert state.min_amount_out is not None
        venue = self._venues.get(state.venue)
        if venue is None:
            return self.fail(state, cause, "UNKNOWN_VENUE", state.venue)
        try:
            # A worker that died after submitting but before recording it must not
            # swap again: a venue answers a client reference it knows with the swap
            # submitted under it, never a second swap.
            result = await venue.submit(
                SwapRequest(
                    client_ref=state.client_ref,
                    token_in=state.spec.token_in,
                    token_out=state.spec.token_out,
                    amount_in=state.spec.amount,
                    min_amount_out=state.min_amount_out,
                )
            )
        except VenueError as exc:
            return self.attempt_failed(state, cause, exc.code, str(exc), transient=exc.transient)
        return TransactionSubmitted(
            **self._envelope(state, cause),
            venue=state.venue,
            tx_hash=result.tx_hash,
            attempt=state.attempt,
        )

    async def _confirm(self, state: OrderState, cause: Event) -> Event:
        assert state.venue is not None
        assert state.tx_hash is not None
        venue = self._venues[state.venue]
        try:
            result = await venue.confirm(state.tx_hash)
        except VenueError as exc:
            return self.attempt_failed(state, cause, exc.code, str(exc), transient=exc.transient)
        if result.status != "confirmed" or result.amount_out is None:
            code = result.error_code or "SWAP_FAILED"
            return self.attempt_failed(
                state,
                cause,
                code,
                result.error or "the venue rejected the swap",
                transient=code in RETRYABLE_SWAP_CODES,
            )
        price = result.executed_price or (result.amount_out / state.spec.amount)
        return OrderConfirmed(
            **self._envelope(state, cause),
            venue=state.venue,
            tx_hash=result.tx_hash,
            amount_out=result.amount_out,
            executed_price=Decimal(price),
        )
