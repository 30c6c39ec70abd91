"""Every message on the log: one frozen pydantic model per command or event.

Commands are imperative (``SubmitOrder``), events past tense (``OrderConfirmed``).
Every message carries an envelope: its id, the order id, a per-order sequence
number, a UTC timestamp, a schema version and correlation/causation ids.
``decode`` is the one way bytes from the log become a message.

Schemas evolve by version, per message type: a type whose shape changes bumps
its ``schema_version`` default and registers an upcaster from the version before.
Decoding upcasts an old message step by step to the current shape, so the log
never needs rewriting. Version-1 fixtures in ``tests/fixtures/events/v1`` pin this.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

# The version a message type starts at; types that changed override it (see UPCASTERS).
SCHEMA_VERSION = 1

# Event ids are derived from (order id, seq): a re-emitted event after a crash gets
# the id of the first one, so "same id" and "same seq" mean the same thing to consumers.
_EVENT_NAMESPACE = uuid.UUID("6f1d3c8e-2b4a-4f7e-9a51-0c8e7d2b1a90")

OrderType = Literal["market", "limit", "sniper"]
Status = Literal[
    "pending",
    "armed",
    "triggered",
    "routing",
    "building",
    "submitted",
    "retrying",
    "confirmed",
    "failed",
    "cancelled",
    "expired",
]


class Frozen(BaseModel):
    """Base of every value on the log: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Frozen):
    """Fields every message carries."""

    message_id: uuid.UUID
    order_id: uuid.UUID
    # Events count 1, 2, 3... per order with no gaps; a command carries the order
    # version it expects (0 for a submission: the order does not exist yet).
    seq: int = Field(ge=0)
    occurred_at: AwareDatetime
    schema_version: int = SCHEMA_VERSION
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class OrderSpec(Frozen):
    """What the client asked for, as validated by the gateway.

    Prices are in the pair's quote token per one base token (see
    ``domain.pricing``): ``limit_price`` is the worst price a limit order
    accepts, ``max_price`` the most a sniper pays. Fields added after version 1 are
    optional, so version-1 payloads still decode unchanged.
    """

    order_type: OrderType = "market"
    token_in: str
    token_out: str
    amount: Decimal = Field(gt=0)
    slippage_bps: int = Field(ge=1, le=5000)
    client_order_id: str | None = None
    limit_price: Decimal | None = Field(default=None, gt=0)
    max_price: Decimal | None = Field(default=None, gt=0)
    expires_at: AwareDatetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _expiry_in_utc(cls, value: datetime | None) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> OrderSpec:
        if (self.order_type == "limit") != (self.limit_price is not None):
            raise ValueError("limit_price is required for limit orders and only for them")
        if self.max_price is not None and self.order_type != "sniper":
            raise ValueError("max_price is only for sniper orders")
        if self.expires_at is not None and self.order_type == "market":
            raise ValueError("expires_at is not for market orders")
        return self

    @property
    def waits(self) -> bool:
        """Tell whether the order is armed until a condition holds (limit, sniper)."""
        return self.order_type != "market"


class VenueQuote(Frozen):
    """One venue's answer to a quote request, or why it gave none."""

    venue: str
    amount_out: Decimal | None = None
    fee: Decimal | None = None
    price: Decimal | None = None
    latency_ms: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.amount_out is not None


# Commands ---------------------------------------------------------------------


class SubmitOrder(Envelope):
    """Ask the engine to execute a new order.

    Version 2 added ``account``: who placed the order (none before accounts existed).
    The idempotency key is the client's, scoped by that account.
    """

    type: Literal["SubmitOrder"] = "SubmitOrder"
    schema_version: Literal[2] = 2
    spec: OrderSpec
    idempotency_key: str | None = None
    # sha256 of the canonical request body: the engine and gateway use it to tell a
    # retried request (same hash) from a conflicting reuse of a key (other hash).
    request_hash: str
    account: str | None = None


class TriggerOrder(Envelope):
    """Fire an armed order: its condition held (``seq`` is the armed version it saw)."""

    type: Literal["TriggerOrder"] = "TriggerOrder"
    reason: str
    # The executable price and venue that met the condition, for the audit trail.
    price: Decimal | None = None
    venue: str | None = None


class CancelOrder(Envelope):
    """Cancel an order if it is still armed."""

    type: Literal["CancelOrder"] = "CancelOrder"
    reason: str = "cancelled by the client"


class ExpireOrder(Envelope):
    """Expire an armed order whose ``expires_at`` has passed (``seq``: the armed version)."""

    type: Literal["ExpireOrder"] = "ExpireOrder"


# Events -----------------------------------------------------------------------


class OrderAccepted(Envelope):
    """The engine took the order in; it is pending routing.

    Version 2 added ``account``, copied from the submission (none before accounts).
    """

    type: Literal["OrderAccepted"] = "OrderAccepted"
    status: Literal["pending"] = "pending"
    schema_version: Literal[2] = 2
    spec: OrderSpec
    request_hash: str
    account: str | None = None


class OrderArmed(Envelope):
    """A limit or sniper order waits for its condition (again, if the price moved away)."""

    type: Literal["OrderArmed"] = "OrderArmed"
    status: Literal["armed"] = "armed"
    reason: str


class OrderTriggered(Envelope):
    """An armed order's condition held: it is executed like a market order from here."""

    type: Literal["OrderTriggered"] = "OrderTriggered"
    status: Literal["triggered"] = "triggered"
    reason: str
    price: Decimal | None = None
    venue: str | None = None


class OrderCancelled(Envelope):
    """An armed order was cancelled: terminal."""

    type: Literal["OrderCancelled"] = "OrderCancelled"
    status: Literal["cancelled"] = "cancelled"
    reason: str


class OrderExpired(Envelope):
    """An armed order reached its ``expires_at`` unfilled: terminal."""

    type: Literal["OrderExpired"] = "OrderExpired"
    status: Literal["expired"] = "expired"
    expires_at: AwareDatetime


class OrderRouted(Envelope):
    """Every venue was quoted and one was chosen.

    Version 2 added ``runner_up`` and ``improvement_bps``: the best other usable
    quote and how much more the chosen venue gives, in basis points.
    """

    type: Literal["OrderRouted"] = "OrderRouted"
    status: Literal["routing"] = "routing"
    schema_version: Literal[2] = 2
    quotes: tuple[VenueQuote, ...]
    venue: str
    expected_out: Decimal
    reason: str
    runner_up: str | None
    improvement_bps: Decimal | None


_QUOTES: TypeAdapter[tuple[VenueQuote, ...]] = TypeAdapter(tuple[VenueQuote, ...])


def _routed_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Add what version 2 added, computed from the event's own quotes.

    The computation is a copy of ``domain.routing.price_improvement`` as it stood
    when version 2 was introduced, and it must never follow that function: an old
    event has to decode to the same values forever, whatever routing becomes.
    """
    usable = {
        q.venue: q.amount_out
        for q in _QUOTES.validate_python(data.get("quotes", ()))
        if q.ok and q.amount_out and q.amount_out > 0
    }
    chosen = usable.pop(str(data.get("venue")), None)
    runner_up: str | None = None
    gain: str | None = None
    if chosen is not None and usable:
        runner_up, other = min(usable.items(), key=lambda item: (-item[1], item[0]))
        bps = (chosen - other) / other * Decimal(10_000)
        gain = str(bps.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    return {**data, "schema_version": 2, "runner_up": runner_up, "improvement_bps": gain}


def _without_account_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """A submission or acceptance from before accounts: placed by no account."""
    return {**data, "schema_version": 2, "account": None}


class TransactionBuilt(Envelope):
    """The swap transaction was built with its slippage bound."""

    type: Literal["TransactionBuilt"] = "TransactionBuilt"
    status: Literal["building"] = "building"
    venue: str
    min_amount_out: Decimal
    client_ref: str
    attempt: int = Field(ge=1)
    steps: tuple[str, ...]


class TransactionSubmitted(Envelope):
    """The venue accepted the transaction."""

    type: Literal["TransactionSubmitted"] = "TransactionSubmitted"
    status: Literal["submitted"] = "submitted"
    venue: str
    tx_hash: str
    attempt: int = Field(ge=1)


class SwapAttemptFailed(Envelope):
    """One swap attempt failed transiently; the order is re-quoted at ``retry_at``."""

    type: Literal["SwapAttemptFailed"] = "SwapAttemptFailed"
    status: Literal["retrying"] = "retrying"
    venue: str
    attempt: int = Field(ge=1)
    code: str
    reason: str
    retry_at: AwareDatetime


class OrderConfirmed(Envelope):
    """The swap landed: terminal success."""

    type: Literal["OrderConfirmed"] = "OrderConfirmed"
    status: Literal["confirmed"] = "confirmed"
    venue: str
    tx_hash: str
    amount_out: Decimal
    executed_price: Decimal


class OrderFailed(Envelope):
    """The order cannot be executed: terminal failure with a machine-readable code."""

    type: Literal["OrderFailed"] = "OrderFailed"
    status: Literal["failed"] = "failed"
    code: str
    reason: str
    attempt: int | None = None


Event = (
    OrderAccepted
    | OrderArmed
    | OrderTriggered
    | OrderCancelled
    | OrderExpired
    | OrderRouted
    | TransactionBuilt
    | TransactionSubmitted
    | SwapAttemptFailed
    | OrderConfirmed
    | OrderFailed
)
EventUnion = Annotated[Event, Field(discriminator="type")]


class ResumeOrder(Envelope):
    """Drive on an order that made no progress: its last event, as the log holds it.

    The sweeper writes it when an order stayed in a non-terminal status past a
    deadline; ``seq`` is the version of ``event``. The engine handles it as that
    event delivered again: folded if it never was, its step performed if that never
    happened, a no-op otherwise.
    """

    type: Literal["ResumeOrder"] = "ResumeOrder"
    event: EventUnion
    reason: str


Command = SubmitOrder | TriggerOrder | CancelOrder | ExpireOrder | ResumeOrder
Message = Annotated[Command | Event, Field(discriminator="type")]

MESSAGE_ADAPTER: TypeAdapter[Command | Event] = TypeAdapter(Message)
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(EventUnion)
# The gateway still imports this name from here; the lifecycle's own, derived from its
# transition table, is ``domain.lifecycle.TERMINAL_STATUSES`` (a unit test keeps the
# two equal). Remove it once the gateway imports that one: nothing here needs it.
TERMINAL_STATUSES: frozenset[str] = frozenset({"confirmed", "failed", "cancelled", "expired"})


class DecodeError(ValueError):
    """Bytes from the log that are not a known message."""


class DeadLetter(Frozen):
    """A message that could not be decoded, kept with where it came from and why."""

    source_topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    error: str
    occurred_at: AwareDatetime


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (type, version) -> the function turning that version's JSON object into the next.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("OrderRouted", 1): _routed_v1_to_v2,
    ("SubmitOrder", 1): _without_account_v1_to_v2,
    ("OrderAccepted", 1): _without_account_v1_to_v2,
}


def upcast(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a message's JSON object to its type's current version (unchanged if current)."""
    kind = data.get("type")
    version = data.get("schema_version", SCHEMA_VERSION)
    while isinstance(kind, str) and isinstance(version, int) and (kind, version) in UPCASTERS:
        data = UPCASTERS[kind, version](data)
        version += 1
    return data


def _upcast_json(raw: bytes | str, error: ValidationError) -> dict[str, Any]:
    """Return the upcast JSON object of ``raw``, or raise ``DecodeError`` when none applies."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise DecodeError(str(error)) from error
    upcasted = upcast(data) if isinstance(data, dict) else data
    if upcasted is data:  # nothing to upcast: the original error stands
        raise DecodeError(str(error)) from error
    return upcasted


def encode(message: Envelope | DeadLetter) -> bytes:
    """Serialise a message for the log (UTF-8 JSON, decimals as strings)."""
    return message.model_dump_json().encode()


def decode(raw: bytes | str) -> Command | Event:
    """Decode bytes from the log into a message, or raise ``DecodeError``."""
    try:
        # The fast path: a current message validates straight from JSON.
        return MESSAGE_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        data = _upcast_json(raw, exc)
    try:
        return MESSAGE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise DecodeError(str(exc)) from exc


def decode_event(raw: bytes | str) -> Event:
    """Decode bytes that must hold an order event, or raise ``DecodeError``."""
    try:
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        data = _upcast_json(raw, exc)
    try:
        return EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise DecodeError(str(exc)) from exc


def decode_stored_event(stored: Mapping[str, Any]) -> Event:
    """Decode an event kept as a JSON object (e.g. a jsonb column), or raise ``DecodeError``."""
    try:
        return EVENT_ADAPTER.validate_python(upcast(dict(stored)))
    except ValidationError as exc:
        raise DecodeError(str(exc)) from exc


def event_id(order_id: uuid.UUID, seq: int) -> uuid.UUID:
    """Return the deterministic message id of an order's ``seq``-th event."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{order_id}:{seq}")


def order_key(order_id: uuid.UUID) -> bytes:
    """Return the partitioning key of everything about one order."""
    return str(order_id).encode()
