"""Fixtures for tests that run the whole system as processes: one per test module."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from adapters.kafka import ensure_topics
from adapters.settings import Settings
from tests.conftest import Infra, create_database
from tests.integration.system import System


@pytest.fixture(scope="module")
def module_database_url(infra: Infra) -> Iterator[str]:
    """Return a database of this module's own: replay drops the read-model tables."""
    name = f"oee_mod_{uuid.uuid4().hex[:10]}"
    yield create_database(infra, name)
    with psycopg.connect(infra.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def system_overrides() -> dict[str, Any]:
    """Override in a module to change the settings its system runs with."""
    return {}


@pytest.fixture(scope="module")
async def system(
    isolated_settings: Callable[..., Settings],
    module_database_url: str,
    system_overrides: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[System]:
    """Run venues, projector, engine and gateway as processes for this module."""
    settings = isolated_settings(
        tmp_path_factory.mktemp("system"), database_url=module_database_url, **system_overrides
    )
    await ensure_topics(settings)
    running = System(settings, Path(settings.data_dir) / "logs")
    try:
        running.start_all()
        await asyncio.to_thread(running.wait_healthy)
        yield running
    finally:
        running.stop_all()
