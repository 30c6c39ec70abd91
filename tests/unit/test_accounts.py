"""Accounts, keys, roles and rate limits, as pure functions."""

from __future__ import annotations

import uuid

import pytest

from domain.accounts import Caller, TokenBucket, hash_key, idempotent_order_id, new_key
from events.accounts import KeyCreated, decode_key_record, encode_key_record
from events.messages import DecodeError
from services.gateway.auth import bearer_key
from services.gateway.fanout import OrderFacts, StreamFilter
from services.gateway.keys import KeyRing, RateLimits
from tests.unit.factories import T0, confirmed_history

ALICE = Caller("alice", "client", "laptop")
ADMIN = Caller("ops", "admin", "ops")


def test_new_key_is_random_and_only_its_hash_is_kept() -> None:
    first, second = new_key(), new_key()
    assert first != second
    assert first.startswith("oee_")
    assert len(first) >= 40
    assert hash_key(first) == hash_key(first) != hash_key(second)
    assert first not in hash_key(first)
    assert len(hash_key(first)) == 64


def test_caller_owns_its_account_orders_and_an_admin_owns_all() -> None:
    assert ALICE.owns("alice")
    assert not ALICE.owns("bob")
    assert not ALICE.owns(None)  # placed before accounts existed: admins only
    assert ADMIN.owns("bob")
    assert ADMIN.owns(None)


def test_idempotent_order_id_is_stable_per_account_and_key_and_needs_the_secret() -> None:
    same = idempotent_order_id("s", "alice", "order-1")
    assert same == idempotent_order_id("s", "alice", "order-1")
    assert same != idempotent_order_id("s", "bob", "order-1")
    assert same != idempotent_order_id("another secret", "alice", "order-1")
    # The old derivation, from the key alone, no longer finds it.
    assert same != uuid.uuid5(uuid.UUID("0b6c1f8e-5d2a-4c3b-9e7f-1a2b3c4d5e6f"), "order-1")
    # No separator trick: ("a", "b<NUL>c") and ("a<NUL>b", "c") are different orders.
    assert idempotent_order_id("s", "a", "b\x00c") != idempotent_order_id("s", "a\x00b", "c")


def test_token_bucket_lets_a_burst_through_then_says_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # refilled at 2 a second
    assert bucket.take(10.0) == 0.0
    assert [bucket.take(10.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_rate_limits_keep_a_bucket_per_account() -> None:
    now = [0.0]
    limits = RateLimits(rate=1.0, burst=1, clock=lambda: now[0])
    assert limits.check("alice") == 0.0
    assert limits.check("alice") > 0
    assert limits.check("bob") == 0.0
    now[0] = 1.0
    assert limits.check("alice") == 0.0


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Bearer oee_abc", "oee_abc"),
        ("bearer   oee_abc  ", "oee_abc"),
        ("Bearer", None),
        ("Basic Zm9vOmJhcg==", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_key_reads_only_a_bearer_authorization(header: str | None, key: str | None) -> None:
    assert bearer_key(header) == key


def test_key_ring_knows_a_recorded_key_by_its_hash_and_nothing_else() -> None:
    from adapters.settings import Settings

    ring = KeyRing(Settings(dev_api_key="oee_dev-key-for-this-test"))
    key = new_key()
    record = KeyCreated(
        key_hash=hash_key(key), account="alice", name="laptop", role="client", created_at=T0
    )
    ring.add(decode_key_record(encode_key_record(record)))

    assert ring.caller(key) == ALICE
    assert ring.caller("oee_dev-key-for-this-test") == Caller("dev", "admin", "dev")
    assert ring.caller(new_key()) is None
    assert ring.caller(record.key_hash) is None  # the hash is not a key


def test_key_record_that_does_not_decode_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_key_record(b'{"type": "KeyCreated", "key_hash": "not hex"}')


def test_firehose_filter_of_an_account_passes_only_its_orders() -> None:
    event = confirmed_history()[0]
    mine = OrderFacts("market", "SOL", "USDC", None, "alice")
    theirs = OrderFacts("market", "SOL", "USDC", None, "bob")
    scoped = StreamFilter(account="alice")

    assert scoped.needs_facts
    assert scoped.matches(event, mine)
    assert not scoped.matches(event, theirs)
    assert not scoped.matches(event, None)
    assert StreamFilter().matches(event, theirs)  # an admin's firehose: every order
