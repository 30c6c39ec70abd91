"""Shared fixtures: real Kafka and PostgreSQL for integration tests, started once, lazily.

Where the infrastructure comes from, in order of preference:

1. ``OEE_KAFKA_BOOTSTRAP`` / ``OEE_DATABASE_URL`` when set (each independently);
2. containers (Redpanda, PostgreSQL) via testcontainers when a Docker engine answers
   and has their images, or can pull them (``OEE_TEST_INFRA=embedded`` skips this);
3. the embedded Kafka broker and embedded PostgreSQL on free ports in a temp dir.

Nothing starts unless a test asks for ``infra`` (directly or through
``settings_factory``), so unit tests run without a broker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from adapters.credentials import ADMIN, CREDENTIALS_FILE, Credentials, login_as
from adapters.kafka import ensure_topics
from adapters.kafka_acls import ensure_acls
from adapters.ops import OPS_SERVICES
from adapters.processes import free_port
from adapters.settings import Settings
from tests import logins
from tests.auth import DEV_KEY

Source = Literal["env", "docker", "embedded"]


@dataclass(frozen=True)
class Infra:
    """Addresses of the broker and database the integration tests run against."""

    bootstrap: str
    database_url: str
    kafka_source: Source
    database_source: Source


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests under ``tests/integration`` as ``integration``, under ``tests/faults``
    as ``faults`` (they run the real broker and PostgreSQL too)."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "faults" in parts:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)
        elif "integration" in parts:
            item.add_marker(pytest.mark.integration)


# The images of the container path. Without a registry to pull from (as on the
# machines this project is developed on) they must already be there.
REDPANDA_IMAGE = "docker.redpanda.com/redpandadata/redpanda:v23.1.13"
POSTGRES_IMAGE = "postgres:17"


def _docker_available() -> bool:
    """Tell whether a Docker engine answers and has the images (or a registry to pull them).

    ``OEE_TEST_INFRA=embedded`` skips the probe. With an engine but neither the images
    nor a registry, the containers could not start: the embedded servers are used.
    """
    if os.environ.get("OEE_TEST_INFRA") == "embedded":
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            if not client.ping():
                return False
            for image in (REDPANDA_IMAGE, POSTGRES_IMAGE):
                try:
                    client.images.get(image)
                except docker.errors.ImageNotFound:
                    client.images.pull(image)
            return True
        finally:
            client.close()
    # A probe: any failure (no SDK, no socket, no permission, no image) means "no Docker here".
    except Exception:
        return False


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Start (or locate) the broker and database once for the whole session.

    Embedded servers ask for passwords (``tests.logins`` logs each process in).
    """
    bootstrap = os.environ.get("OEE_KAFKA_BOOTSTRAP")
    database_url = os.environ.get("OEE_DATABASE_URL")
    kafka_source: Source = "env"
    database_source: Source = "env"
    with contextlib.ExitStack() as stack:
        use_docker = (bootstrap is None or database_url is None) and _docker_available()
        if use_docker:
            if bootstrap is None:
                from testcontainers.community.kafka import RedpandaContainer

                redpanda = stack.enter_context(RedpandaContainer(REDPANDA_IMAGE))
                bootstrap, kafka_source = redpanda.get_bootstrap_server(), "docker"
            if database_url is None:
                from testcontainers.community.postgres import PostgresContainer

                postgres = stack.enter_context(PostgresContainer(POSTGRES_IMAGE, driver=None))
                database_url, database_source = postgres.get_connection_url(), "docker"
        elif bootstrap is None or database_url is None:
            if bootstrap is None:
                kafka_source = "embedded"
            if database_url is None:
                database_source = "embedded"
            bootstrap, database_url, credentials = stack.enter_context(
                embedded(bootstrap, database_url)
            )
            logins.register(
                logins.Logins(
                    credentials,
                    kafka=kafka_source == "embedded",
                    database=database_source == "embedded",
                )
            )
            stack.callback(logins.register, None)
        assert bootstrap is not None
        assert database_url is not None
        yield Infra(bootstrap, database_url, kafka_source, database_source)


@contextlib.contextmanager
def embedded(
    bootstrap: str | None, database_url: str | None, prefix: str = "oee-test-"
) -> Iterator[tuple[str, str, Credentials]]:
    """Yield the broker and database given, starting the embedded one for each not given,
    and the passwords of the embedded ones. The broker gets the ACLs of ``oee up``:
    prefixed, they cover the suffixed names of ``isolated_settings`` too."""
    from adapters.embedded.kafka import KafkaBroker
    from adapters.embedded.postgres import EmbeddedPostgres

    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix=prefix))
        # PostgreSQL runs as an unprivileged user when we are root: let it traverse.
        root.chmod(0o755)
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        credentials = Credentials.load_or_create(root / CREDENTIALS_FILE)
        if bootstrap is None:
            broker = KafkaBroker(
                root / "kafka",
                port=free_port(),
                controller_port=free_port(),
                credentials=credentials,
            )
            stack.callback(broker.stop)
            broker.start()
            bootstrap = broker.bootstrap
            admin = login_as(
                Settings(kafka_bootstrap=bootstrap), credentials, ADMIN, database=False
            )
            # In a thread: the caller may be a coroutine already (tests/measure_gateway.py).
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(asyncio.run, ensure_acls(admin)).result()
        if database_url is None:
            database = EmbeddedPostgres(
                root / "postgres", port=free_port(), credentials=credentials
            )
            stack.callback(database.stop)
            database.start()
            database_url = database.url
        yield bootstrap, database_url, credentials


@pytest.fixture(scope="session")
def isolated_settings(infra: Infra) -> Callable[..., Settings]:
    """Return ``make(data_dir, **overrides) -> Settings`` wired to ``infra``.

    Every call gets its own topic names, consumer-group ids, free ports and data dir,
    so tests never see each other's messages.
    """

    def make(data_dir: Path, **overrides: Any) -> Settings:
        suffix = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "kafka_bootstrap": infra.bootstrap,
            "database_url": infra.database_url,
            "commands_topic": f"orders.commands.{suffix}",
            "events_topic": f"orders.events.{suffix}",
            "dead_letter_topic": f"orders.deadletter.{suffix}",
            "market_topic": f"market.events.{suffix}",
            "accounts_topic": f"accounts.keys.{suffix}",
            # Every test client is the dev account's admin (tests/auth.py).
            "dev_api_key": DEV_KEY,
            # Prices move only when a test moves them; tokens launch only on demand.
            "market_drift_bps": 0,
            "market_launch_every_s": 0,
            "engine_id": f"oee-engine-{suffix}",
            "projector_group": f"oee-projector-{suffix}",
            "triggers_group": f"oee-triggers-{suffix}",
            "market_group": f"oee-market-{suffix}",
            "venue_profile": "instant",
            "broker_session_timeout_s": 6.0,
            "gateway_port": free_port(),
            "venues_port": free_port(),
            **{f"{name}_ops_port": free_port() for name in OPS_SERVICES},
            "data_dir": data_dir / f"oee-{suffix}",
        }
        # The test code itself is the admin; `tests.logins.as_service` makes a service's.
        admin = logins.as_admin(Settings(**values))
        values |= {
            "kafka_username": admin.kafka_username,
            "kafka_password": admin.kafka_password,
            "database_url": admin.database_url,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings_factory(
    isolated_settings: Callable[..., Settings], tmp_path: Path
) -> Callable[..., Settings]:
    """Return ``make(**overrides) -> Settings``, isolated per call, data under tmp_path."""

    def make(**overrides: Any) -> Settings:
        return isolated_settings(tmp_path, **overrides)

    return make


@pytest.fixture
def create_topics() -> Callable[[Settings], Awaitable[Settings]]:
    """Return ``await create(settings)``: create that settings' topics and return it."""

    async def create(settings: Settings) -> Settings:
        await ensure_topics(settings)
        return settings

    return create


@pytest.fixture
async def settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Return isolated settings whose topics already exist."""
    made = settings_factory()
    await ensure_topics(made)
    return made


def create_database(infra: Infra, name: str) -> str:
    """Create database ``name`` on the test server, as ``oee up`` prepares its own, and
    return its URL (the admin's login)."""
    with psycopg.connect(infra.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = urlsplit(infra.database_url)._replace(path=f"/{name}").geturl()
    if infra.database_source == "embedded":
        from adapters.embedded.postgres import grant_database

        with psycopg.connect(url, autocommit=True) as conn:
            grant_database(conn)
    return url


@pytest.fixture
async def fresh_database_url(infra: Infra) -> AsyncIterator[str]:
    """Return the URL of a new empty database on the test server, dropped afterwards."""
    name = f"oee_test_{uuid.uuid4().hex[:10]}"
    url = create_database(infra, name)
    yield url
    async with await psycopg.AsyncConnection.connect(infra.database_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
