"""Log a command of this machine into the embedded broker and database as its principal."""

from __future__ import annotations

from adapters.credentials import CREDENTIALS_FILE, Credentials, login_as
from adapters.settings import Settings
from cli.foreground import embedded_database


def log_in(settings: Settings, principal: str | None) -> Settings:
    """Return ``settings`` logging ``principal`` into whichever server is the embedded one.

    A configured broker (``OEE_KAFKA_BOOTSTRAP``, or a login in ``OEE_KAFKA_USERNAME``)
    or database (``OEE_DATABASE_URL``) is left as configured; the embedded ones take
    their passwords from the file in the data directory.
    """
    kafka = settings.kafka_bootstrap is None and settings.kafka_username is None
    database = settings.database_url is None
    if not (kafka or database):
        return settings
    credentials = Credentials.load_or_create(settings.data_dir / CREDENTIALS_FILE)
    if database:
        settings = settings.model_copy(update={"database_url": embedded_database(settings).url})
    return login_as(settings, credentials, principal, kafka=kafka, database=database)
