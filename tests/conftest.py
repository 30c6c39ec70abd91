"""Shared fixtures: real Kafka and PostgreSQL for integration tests, started once, lazily.

Where the infrastructure comes from, in order of preference:

1. ``OEE_KAFKA_BOOTSTRAP`` / ``OEE_DATABASE_URL`` when set (each independently);
2. containers (Redpanda, PostgreSQL) via testcontainers when a Docker engine answers;
3. the embedded Kafka broker and embedded PostgreSQL on free ports in a temp dir.

Nothing starts unless a test asks for ``infra`` (directly or through
``settings_factory``), so unit tests run without a broker.
"""

from __future__ import annotations

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

from adapters.kafka import ensure_topics
from adapters.processes import free_port
from adapters.settings import Settings
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


def _docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    # A probe: any failure (no SDK, no socket, no permission) means "no Docker here".
    except Exception:
        return False


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Start (or locate) the broker and database once for the whole session."""
    bootstrap = os.environ.get("OEE_KAFKA_BOOTSTRAP")
    database_url = os.environ.get("OEE_DATABASE_URL")
    kafka_source: Source = "env"
    database_source: Source = "env"
    with contextlib.ExitStack() as stack:
        use_docker = (bootstrap is None or database_url is None) and _docker_available()
        if use_docker:
            if bootstrap is None:
                from testcontainers.community.kafka import RedpandaContainer

                redpanda = stack.enter_context(RedpandaContainer())
                bootstrap, kafka_source = redpanda.get_bootstrap_server(), "docker"
            if database_url is None:
                from testcontainers.community.postgres import PostgresContainer

                postgres = stack.enter_context(PostgresContainer("postgres:17", driver=None))
                database_url, database_source = postgres.get_connection_url(), "docker"
        elif bootstrap is None or database_url is None:
            if bootstrap is None:
                kafka_source = "embedded"
            if database_url is None:
                database_source = "embedded"
            bootstrap, database_url = stack.enter_context(embedded(bootstrap, database_url))
        assert bootstrap is not None and database_url is not None
        yield Infra(bootstrap, database_url, kafka_source, database_source)


@contextlib.contextmanager
def embedded(
    bootstrap: str | None, database_url: str | None, prefix: str = "oee-test-"
) -> Iterator[tuple[str, str]]:
    """Yield the broker and database given, starting the embedded one for each not given."""
    from adapters.embedded.kafka import KafkaBroker
    from adapters.embedded.postgres import EmbeddedPostgres

    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix=prefix))
        # PostgreSQL runs as an unprivileged user when we are root: let it traverse.
        root.chmod(0o755)
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        if bootstrap is None:
            broker = KafkaBroker(root / "kafka", port=free_port(), controller_port=free_port())
            stack.callback(broker.stop)
            broker.start()
            bootstrap = broker.bootstrap
        if database_url is None:
            database = EmbeddedPostgres(root / "postgres", port=free_port())
            stack.callback(database.stop)
            database.start()
            database_url = database.url
        yield bootstrap, database_url


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
            "venue_profile": "instant",
            "broker_session_timeout_s": 6.0,
            "gateway_port": free_port(),
            "venues_port": free_port(),
            "data_dir": data_dir / f"oee-{suffix}",
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


@pytest.fixture
async def fresh_database_url(infra: Infra) -> AsyncIterator[str]:
    """Return the URL of a new empty database on the test server, dropped afterwards."""
    name = f"oee_test_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(infra.database_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    yield urlsplit(infra.database_url)._replace(path=f"/{name}").geturl()
    async with await psycopg.AsyncConnection.connect(infra.database_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
