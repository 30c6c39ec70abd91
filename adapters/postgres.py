"""PostgreSQL connections: the URL in use and an autocommit connection in UTC."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from adapters.backoff import until_reachable
from adapters.embedded.postgres import EmbeddedPostgres
from adapters.settings import Settings

Connection = psycopg.AsyncConnection[Any]
# What a lost or refused connection raises (the server is restarting, say).
CONNECTION_ERRORS = (psycopg.OperationalError, OSError)


def database_url(settings: Settings) -> str:
    """Return the PostgreSQL URL in use: the configured one, else the embedded server's."""
    if settings.database_url is not None:
        return settings.database_url
    # The server `oee database` / `oee up` run; building the object starts nothing.
    return EmbeddedPostgres(settings.data_dir / "postgres", port=settings.database_port).url


async def connect(settings: Settings, *, search_path: str | None = None) -> Connection:
    """Open an autocommit connection in UTC; callers open explicit transactions.

    With ``search_path`` (one schema name), unqualified names resolve in that schema
    alone, so a projection's DDL and SQL, and its ``projection_offsets``, land there.
    """
    conn = await psycopg.AsyncConnection.connect(database_url(settings), autocommit=True)
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        if search_path is not None:
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(search_path)))
    except BaseException:
        await conn.close()
        raise
    return conn


async def await_database(settings: Settings) -> None:
    """Return once PostgreSQL accepts a connection, waiting with backoff until it does."""

    async def attempt() -> None:
        conn = await connect(settings)
        await conn.close()

    await until_reachable(attempt, lambda exc: isinstance(exc, CONNECTION_ERRORS), "PostgreSQL")
