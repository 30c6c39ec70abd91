"""Who each process is to the broker and the database, and the passwords of the embedded ones.

Every process logs in as its own principal (``PRINCIPALS``); the broker's ACLs
(``adapters.kafka_acls``) and the database's grants (``adapters.embedded.postgres``)
let each do its job and nothing else. The embedded broker and database get their
passwords from one file in the data directory, generated once (mode 0600); a
supervised process is handed only its own, in its environment. Against an external
cluster nothing is generated: each process gets its login from its own settings
(``OEE_KAFKA_USERNAME`` / ``OEE_KAFKA_PASSWORD`` / ``OEE_DATABASE_URL``).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from adapters.settings import Settings

CREDENTIALS_FILE = "credentials.json"

# The super user of the broker and the database's superuser: the broker itself, topic
# creation and the admin tools (audit, replay's reads of the log, bench, reconcile).
ADMIN = "admin"
# Kafka principals, one per process that talks to the broker, and the admin.
PRINCIPALS = ("admin", "gateway", "engine", "projector", "triggers", "market", "sweeper")
# The process each service runs as; the venue simulator talks to neither server.
SERVICE_PRINCIPALS: dict[str, str | None] = {
    "venues": None,
    "market": "market",
    "triggers": "triggers",
    "engine": "engine",
    "sweeper": "sweeper",
    "projector": "projector",
    "gateway": "gateway",
}

# PostgreSQL: the superuser, the role that owns and writes the read models, and the
# roles that only read them (members of READER_ROLE, which holds the grants).
SUPERUSER = "postgres"
OWNER_ROLE = "oee_projector"
READER_ROLE = "oee_reader"
DATABASE_ROLES: dict[str, str] = {
    "admin": SUPERUSER,
    "projector": OWNER_ROLE,
    "gateway": "oee_gateway",
    "triggers": "oee_triggers",
    "sweeper": "oee_sweeper",
}
READER_LOGINS = ("oee_gateway", "oee_triggers", "oee_sweeper")


@dataclass(frozen=True)
class Credentials:
    """The password of every principal of the embedded broker and database."""

    passwords: dict[str, str]

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """Read the passwords in ``path``, adding any principal that has none yet."""
        stored: dict[str, str] = {}
        if path.exists():
            stored = json.loads(path.read_text())
        missing = [name for name in PRINCIPALS if name not in stored]
        if missing:
            # URL-safe: they go into URLs, JAAS lines and command lines unquoted.
            stored |= {name: secrets.token_urlsafe(24) for name in missing}
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                json.dump(stored, handle, indent=2, sort_keys=True)
            partial.replace(path)
        return cls(stored)

    def password(self, principal: str) -> str:
        """Return the password of ``principal``."""
        return self.passwords[principal]

    def database_logins(self) -> dict[str, str]:
        """Return the password of every PostgreSQL role that logs in (the superuser's too)."""
        return {role: self.passwords[name] for name, role in DATABASE_ROLES.items()}


def with_login(url: str, user: str | None, password: str | None) -> str:
    """Return ``url`` logging in as ``user`` with ``password`` (no login at all for None)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    if user is not None:
        login = quote(user, safe="")
        if password is not None:
            login += ":" + quote(password, safe="")
        netloc = f"{login}@{netloc}"
    return parts._replace(netloc=netloc).geturl()


def login_as(
    settings: Settings,
    credentials: Credentials,
    principal: str | None,
    *,
    kafka: bool = True,
    database: bool = True,
) -> Settings:
    """Return ``settings`` carrying the logins of ``principal`` on the embedded servers alone.

    ``kafka`` / ``database`` say which of the two are embedded (ours to log into); the
    others keep the login configured for them. A principal with no database role gets
    the database URL without any login; no principal (the venue simulator) neither.
    """
    update: dict[str, object] = {}
    if kafka:
        update["kafka_username"] = principal
        update["kafka_password"] = credentials.password(principal) if principal else None
    if database and settings.database_url is not None:
        role = DATABASE_ROLES.get(principal) if principal else None
        password = credentials.password(principal) if role and principal else None
        update["database_url"] = with_login(settings.database_url, role, password)
    return settings.model_copy(update=update)


def login_env(settings: Settings) -> dict[str, str]:
    """Return the environment variables that hand ``settings``' logins to a child process."""
    env = {"OEE_DATABASE_URL": settings.database_url or ""}
    if settings.kafka_username is not None and settings.kafka_password is not None:
        env["OEE_KAFKA_USERNAME"] = settings.kafka_username
        env["OEE_KAFKA_PASSWORD"] = settings.kafka_password
    if not env["OEE_DATABASE_URL"]:
        del env["OEE_DATABASE_URL"]
    return env


def embedded_credentials(settings: Settings) -> Credentials | None:
    """Return the passwords of the embedded servers of ``settings.data_dir``, if any."""
    path = settings.data_dir / CREDENTIALS_FILE
    return Credentials.load_or_create(path) if path.exists() else None
