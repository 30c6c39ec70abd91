"""``oee broker`` and ``oee database``: run one piece of infrastructure until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType
from typing import Protocol

from adapters.credentials import CREDENTIALS_FILE, SUPERUSER, with_login
from adapters.embedded.kafka import BrokerError, KafkaBroker
from adapters.embedded.postgres import DatabaseError, EmbeddedPostgres
from adapters.settings import Settings


class _Server(Protocol):
    @property
    def running(self) -> bool: ...

    def start(self, timeout: float = ...) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


# The broker's session with its own controller: a broker restarted after a kill -9
# serves again once the controller fenced the killed one, this long after it starts
# (Kafka's default is 9 s). A stall this long of the whole process fences it for a
# moment; the clients retry.
BROKER_SESSION_MS = 3000


def embedded_broker(settings: Settings) -> KafkaBroker:
    """Return the embedded broker configured by ``settings`` (not yet started)."""
    return KafkaBroker(
        settings.data_dir / "kafka",
        port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        session_timeout_ms=BROKER_SESSION_MS,
    )


def embedded_database(settings: Settings) -> EmbeddedPostgres:
    """Return the embedded PostgreSQL configured by ``settings`` (not yet started)."""
    return EmbeddedPostgres(settings.data_dir / "postgres", port=settings.database_port)


def _serve(server: _Server, ready_message: str) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    started = time.monotonic()
    try:
        server.start()
        print(f"{ready_message} (started in {time.monotonic() - started:.1f}s; Ctrl-C stops)")
        # SIGINT arrives as KeyboardInterrupt, SIGTERM through the event.
        while server.running and not stop.wait(0.5):
            pass
        if not server.running:
            print("the server exited on its own")
            return 1
        return 0
    except KeyboardInterrupt:
        return 0
    except (BrokerError, DatabaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping...")
        server.stop()


def run_broker(settings: Settings) -> int:
    """Run the embedded Kafka broker in the foreground until interrupted."""
    broker = embedded_broker(settings)
    return _serve(
        broker,
        f"Kafka {broker.bootstrap} ready; data in {broker.data_dir}, log {broker.log_file}",
    )


def run_database(settings: Settings) -> int:
    """Run the embedded PostgreSQL in the foreground until interrupted."""
    database = embedded_database(settings)
    return _serve(
        database,
        # Not the URL itself: it carries the superuser's password.
        f"PostgreSQL {with_login(database.url, SUPERUSER, None)} ready; data in "
        f"{database.data_dir}, log {database.log_file}; passwords in "
        f"{database.data_dir.parent / CREDENTIALS_FILE}",
    )
