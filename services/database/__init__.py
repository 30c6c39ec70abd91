"""The embedded PostgreSQL server used when no external database URL is configured."""

from services.database.embedded import DatabaseError, EmbeddedPostgres

__all__ = ["DatabaseError", "EmbeddedPostgres"]
