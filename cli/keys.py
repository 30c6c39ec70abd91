"""``oee keys create NAME [--account A] [--role admin]``: make an API key and print it once.

The key is printed and forgotten: what goes to the accounts topic is its record
(the sha256 of the key, the account, the key's name and role, when it was made),
and every gateway learns it from there within a second or so.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from adapters.kafka import await_topics, producer_options
from adapters.settings import Settings
from domain.accounts import ACCOUNT_PATTERN, hash_key, new_key
from events.accounts import KeyCreated, Role, encode_key_record


async def create_key(settings: Settings, name: str, account: str, role: Role) -> str:
    """Write a new key's record to the accounts topic (acknowledged) and return the key."""
    key = new_key()
    record = KeyCreated(
        key_hash=hash_key(key),
        account=account,
        name=name,
        role=role,
        created_at=datetime.now(UTC),
    )
    await await_topics(settings)
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.accounts_topic, encode_key_record(record), key=record.key_hash.encode()
        )
    finally:
        await producer.stop()
    return key


def run(settings: Settings, name: str, account: str | None, role: Role) -> int:
    """Create the key and print it; return the exit code."""
    account = account or name
    if not ACCOUNT_PATTERN.match(account):
        print(
            f"oee keys: account {account!r} must be 1 to 64 letters, digits, '_', '.' or '-'",
            file=sys.stderr,
        )
        return 2
    if not 1 <= len(name) <= 128:
        print("oee keys: NAME must be 1 to 128 characters", file=sys.stderr)
        return 2
    key = asyncio.run(create_key(settings, name, account, role))
    print(f"created key {name!r} for account {account!r} with role {role}; it is shown once:")
    print(key)
    return 0
