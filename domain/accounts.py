"""Who is calling: API keys, the accounts they belong to and their roles (pure).

A key is 32 random bytes, URL-safe, with a recognisable prefix; what is stored
and compared is its sha256. The rate limit is a token bucket per account, with
the clock passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

from events.accounts import Role

KEY_PREFIX = "oee_"
# The account a development key (OEE_DEV_API_KEY) belongs to, as an admin.
DEV_ACCOUNT = "dev"
ACCOUNT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def new_key() -> str:
    """Return a new API key: 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Return what is stored of a key: its sha256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """The account a request acts for, and what its key may do."""

    account: str
    role: Role
    key_name: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def owns(self, account: str | None) -> bool:
        """Tell whether this caller may see an order placed by ``account``.

        An admin sees every order; orders placed before accounts existed (no
        account) only an admin sees.
        """
        return self.admin or (account is not None and account == self.account)


# Order ids of idempotent submissions derive from the account, the key and a server
# secret: the same key means the same order on every gateway and after restarts,
# two accounts using the same key get two orders, and nobody without the secret
# can compute (and so read or race for) the id of someone else's order.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b6c1f8e-5d2a-4c3b-9e7f-1a2b3c4d5e6f")


def idempotent_order_id(secret: str, account: str, key: str) -> uuid.UUID:
    """Return the order id that ``account``'s ``Idempotency-Key`` stands for."""
    # Length-prefixed, so that no (account, key) pair reads as another.
    message = f"{len(account)}:{account}{key}".encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, mac)


class TokenBucket:
    """Requests an account may make: ``burst`` at once, refilled at ``rate`` a second."""

    __slots__ = ("_burst", "_level", "_rate", "_stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._level = float(burst)
        self._stamp = now

    def take(self, now: float) -> float:
        """Take one token; return 0 when taken, else the seconds until one is there."""
        self._level = min(self._burst, self._level + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._level >= 1:
            self._level -= 1
            return 0.0
        return (1 - self._level) / self._rate
