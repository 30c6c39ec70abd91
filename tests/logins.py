"""How the suite logs itself and the processes it starts into the broker and database.

On the embedded servers every process logs in as its own principal, as under
``oee up``; the test code itself is the admin. Servers from the environment or from
containers are used with the login their address carries (none for Kafka).
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.credentials import ADMIN, SERVICE_PRINCIPALS, Credentials, login_as
from adapters.settings import Settings


@dataclass(frozen=True)
class Logins:
    """The passwords of the embedded servers, and which of the two are embedded."""

    credentials: Credentials
    kafka: bool
    database: bool

    def as_principal(self, settings: Settings, principal: str | None) -> Settings:
        """Return ``settings`` logging ``principal`` into the embedded servers."""
        return login_as(
            settings, self.credentials, principal, kafka=self.kafka, database=self.database
        )


_current: Logins | None = None


def register(logins: Logins | None) -> None:
    """Make ``logins`` the session's (the ``infra`` fixture does, once)."""
    global _current
    _current = logins


def current() -> Logins | None:
    """Return the session's logins; None when no server is embedded."""
    return _current


def as_principal(settings: Settings, principal: str | None) -> Settings:
    """Return ``settings`` logging ``principal`` in (unchanged with no embedded server)."""
    return settings if _current is None else _current.as_principal(settings, principal)


def as_service(settings: Settings, service: str) -> Settings:
    """Return ``settings`` as the service process ``service`` gets them from ``oee up``."""
    return as_principal(settings, SERVICE_PRINCIPALS[service])


def as_admin(settings: Settings) -> Settings:
    """Return ``settings`` logging the admin in."""
    return as_principal(settings, ADMIN)
