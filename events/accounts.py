"""Messages on the accounts topic: the API keys, one record per key.

``oee keys create`` writes a ``KeyCreated`` keyed by the key's hash; a revocation
would be a record of its own under the same key. The topic is compacted, so the
last record of every key is what stands, and a gateway that reads it from the
beginning knows every key. The key itself is never written anywhere: only its
sha256, which cannot be turned back into a key of 256 random bits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field, TypeAdapter, ValidationError

from events.messages import SCHEMA_VERSION, DecodeError, Frozen

Role = Literal["client", "admin"]


class KeyCreated(Frozen):
    """An API key was made for an account, with a role."""

    type: Literal["KeyCreated"] = "KeyCreated"
    schema_version: int = SCHEMA_VERSION
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")  # the message key
    account: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=128)
    role: Role = "client"
    created_at: AwareDatetime


KEY_RECORD_ADAPTER: TypeAdapter[KeyCreated] = TypeAdapter(KeyCreated)


def encode_key_record(record: KeyCreated) -> bytes:
    """Serialise a key record for the accounts topic."""
    return record.model_dump_json().encode()


def decode_key_record(raw: bytes | str) -> KeyCreated:
    """Decode a record of the accounts topic, or raise ``DecodeError``."""
    try:
        return KEY_RECORD_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(str(exc)) from exc
