"""``oee up``: start the infrastructure and every service, keep them running, stop in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from adapters.embedded.kafka import BrokerError
from adapters.embedded.postgres import DatabaseError
from adapters.kafka import TopicMismatchError, ensure_topics, topic_names
from adapters.processes import die_with_parent, stop_process
from adapters.settings import Settings
from cli import SERVICES
from cli.foreground import embedded_broker, embedded_database

MAX_BACKOFF_S = 30.0
# A child that ran this long before dying counts as healthy: its backoff resets.
STABLE_AFTER_S = 60.0

_print_lock = threading.Lock()


def say(source: str, message: str) -> None:
    """Print one line of output, prefixed with where it came from."""
    with _print_lock:
        print(f"{source:>9} | {message}", flush=True)


class _Shutdown(Exception):
    """Raised by the signal handler to unwind start-up or supervision into cleanup."""


@dataclass
class Child:
    """One supervised service process and its restart bookkeeping."""

    name: str
    env: dict[str, str]
    cwd: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0
    restart_at: float | None = None
    _reader: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        """Spawn the service as ``python -m cli <name>``."""
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", self.name],
            env=self.env,
            # Whatever a service writes relative to its working directory (faust's
            # local state, say) lands in the data dir, not in the source tree.
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C reaches only us, and we stop children in order.
            process_group=0,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=_relay, args=(self.name, self.process.stdout), daemon=True
        )
        self._reader.start()

    def check(self, now: float) -> None:
        """Schedule a restart if the process died, and perform a due restart."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                say("oee", f"restarting {self.name} (restart #{self.restarts})")
                self.start()
            return
        if self.process is None or self.process.poll() is None:
            return
        if now - self.started_at >= STABLE_AFTER_S:
            self.backoff_s = 1.0
        say(
            "oee",
            f"{self.name} stopped unexpectedly ({describe_exit(self.process.returncode)}); "
            f"restarting in {self.backoff_s:.0f}s",
        )
        self.restart_at = now + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the service (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        self.restart_at = None
        if self.process is None:
            return
        code = stop_process(self.process, sig=signal.SIGTERM, timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=2)
        say("oee", f"stopped {self.name} ({describe_exit(code)})")
        self.process = None


def describe_exit(code: int | None) -> str:
    """Return a process exit status in words ("exit code 1", "killed by SIGKILL")."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _relay(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        say(name, raw.decode(errors="replace").rstrip())
    stream.close()


def _gateway_healthy(settings: Settings) -> bool:
    # A wildcard bind address is reachable on loopback.
    host = "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "::") else settings.gateway_host
    try:
        response = httpx.get(f"http://{host}:{settings.gateway_port}/health", timeout=1.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def up(settings: Settings) -> int:
    """Run the whole system until SIGINT/SIGTERM; return the exit code."""
    began = time.monotonic()
    stopping = False

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            say("oee", "already stopping, please wait")
            return
        stopping = True
        raise _Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    # The health poll would otherwise log every request.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    cleanups: list[Callable[[], None]] = []
    children: list[Child] = []
    try:
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:
            broker = embedded_broker(settings)
            say(
                "oee", f"starting Kafka (embedded, KRaft) on {broker.bootstrap} ({broker.data_dir})"
            )
            cleanups.append(broker.stop)
            broker.start()
            bootstrap = broker.bootstrap
            say("oee", f"Kafka ready after {time.monotonic() - began:.1f}s")
        else:
            say("oee", f"using Kafka at {bootstrap} (OEE_KAFKA_BOOTSTRAP)")

        database_url = settings.database_url
        if database_url is None:
            database = embedded_database(settings)
            say("oee", f"starting PostgreSQL on port {database.port} ({database.data_dir})")
            cleanups.append(database.stop)
            database.start()
            database_url = database.url
            say("oee", f"PostgreSQL ready after {time.monotonic() - began:.1f}s: {database_url}")
        else:
            say("oee", "using PostgreSQL at OEE_DATABASE_URL")

        settings = settings.model_copy(
            update={"kafka_bootstrap": bootstrap, "database_url": database_url}
        )
        asyncio.run(ensure_topics(settings))
        say("oee", f"topics ready: {', '.join(topic_names(settings))}")
        infra_s = time.monotonic() - began

        env = os.environ | {
            "OEE_KAFKA_BOOTSTRAP": bootstrap,
            "OEE_DATABASE_URL": database_url,
            # Children write into a pipe we relay line by line; do not hold lines back.
            "PYTHONUNBUFFERED": "1",
        }
        for name in SERVICES:
            child = Child(name, env, settings.data_dir)
            children.append(child)
            child.start()

        announced = False
        while True:
            now = time.monotonic()
            for child in children:
                child.check(now)
            if not announced and _gateway_healthy(settings):
                announced = True
                base = f"http://{settings.gateway_host}:{settings.gateway_port}"
                say("oee", f"up in {now - began:.1f}s (infrastructure {infra_s:.1f}s)")
                say("oee", f"API: {base}   docs: {base}/docs   Ctrl-C stops everything")
            time.sleep(0.5)
    except _Shutdown as signalled:
        say("oee", f"received {signalled}; stopping in reverse order")
        return 0
    except (BrokerError, DatabaseError, TopicMismatchError) as exc:
        say("oee", f"error: {exc}")
        return 1
    finally:
        stopping = True
        for child in reversed(children):
            child.stop()
        for cleanup in reversed(cleanups):
            cleanup()
        say("oee", "stopped")
