"""``oee up``: start the infrastructure and every service, keep them running, stop in order.

Every process is supervised: a service, the embedded broker or the embedded database
that dies is reaped at once (no zombie is left to look alive), and started again
with exponential backoff. A server keeps its data; the services are not restarted
for it, they reconnect by themselves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

import httpx

from adapters.credentials import (
    ADMIN,
    CREDENTIALS_FILE,
    SERVICE_PRINCIPALS,
    Credentials,
    login_as,
    login_env,
    with_login,
)
from adapters.embedded.kafka import BrokerError
from adapters.embedded.postgres import DatabaseError
from adapters.kafka import TopicMismatchError, ensure_topics, topic_names
from adapters.kafka_acls import ensure_acls
from adapters.logs import readable
from adapters.processes import die_with_parent, stop_process
from adapters.settings import DEV_KEY_SECRET, Settings, stored_secret
from cli import SERVICES
from cli.foreground import embedded_broker, embedded_database
from cli.scale import replica_env, replica_name, write_layout
from cli.status import ops_addresses
from domain.accounts import DEV_ACCOUNT

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


class Supervised:
    """Restart bookkeeping of one supervised process: exponential backoff, reset after a
    stable run. Subclasses say how the process is started and how it ended."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started_at = 0.0
        self.restarts = 0
        self.backoff_s = 1.0
        self.restart_at: float | None = None

    def exit_code(self) -> int | None:
        """Return how the process ended (reaping it), or None while it runs."""
        raise NotImplementedError

    def restart(self, now: float) -> None:
        """Start the process again; schedule another try if that fails."""
        raise NotImplementedError

    def check(self, now: float) -> None:
        """Schedule a restart if the process died, and perform a due restart."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restart_at = None
                self.restarts += 1
                say("oee", f"restarting {self.name} (restart #{self.restarts})")
                self.restart(now)
            return
        code = self.exit_code()
        if code is not None:
            self.schedule(now, f"{self.name} stopped unexpectedly ({describe_exit(code)})")

    def schedule(self, now: float, why: str) -> None:
        """Say why the process is down and when it restarts, backing off each time."""
        if now - self.started_at >= STABLE_AFTER_S:
            self.backoff_s = 1.0
        say("oee", f"{why}; restarting in {self.backoff_s:.0f}s")
        self.restart_at = now + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)

    def hurry(self, now: float) -> None:
        """Restart now if a restart is pending: what it waited for may be back."""
        if self.restart_at is not None:
            self.restart_at = now
            self.backoff_s = 1.0


class Child(Supervised):
    """One supervised service process, run as ``python -m cli <name>``."""

    def __init__(
        self, name: str, env: dict[str, str], cwd: Path, service: str | None = None
    ) -> None:
        super().__init__(name)
        # The service it runs; ``name`` tells a replica apart (``engine-1``).
        self.service = service or name
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        """Spawn the service as ``python -m cli <service>``."""
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", self.service],
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
        say("oee", f"started {self.name} (pid {self.process.pid})")
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=_relay, args=(self.name, self.process.stdout), daemon=True
        )
        self._reader.start()

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def restart(self, now: float) -> None:
        self.start()

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


class ServerProcess(Protocol):
    """What the supervisor needs of a server it owns (``KafkaBroker``, ``EmbeddedPostgres``)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exit_code(self) -> int | None: ...

    def clear_leftovers(self) -> list[str]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Server(Supervised):
    """The embedded broker or database, restarted on its data when it dies.

    A restart runs in the supervisor's main thread, for the seconds the server takes
    to answer: a server is told to stop when the thread that spawned it ends
    (PR_SET_PDEATHSIG), so it must not be a passing one. Services that died meanwhile
    are restarted right after, their backoff cut short.
    """

    def __init__(self, name: str, server: ServerProcess) -> None:
        super().__init__(name)
        self.server = server
        self.down_since: float | None = None

    def start(self) -> None:
        """Start the server; an error propagates (nothing runs without it)."""
        began = time.monotonic()
        self.server.start()
        self.started_at = time.monotonic()
        say(
            "oee", f"{self.name} ready after {self.started_at - began:.1f}s (pid {self.server.pid})"
        )

    def exit_code(self) -> int | None:
        code = self.server.exit_code
        if code is not None and self.down_since is None:
            self.down_since = time.monotonic()
        return code

    def restart(self, now: float) -> None:
        # A start that fails is no stable run: the next wait is longer.
        self.started_at = now
        try:
            for cleared in self.server.clear_leftovers():
                say("oee", f"{self.name}: {cleared}")
            self.server.start()
        except (BrokerError, DatabaseError, OSError) as exc:
            self.schedule(now, f"{self.name} did not start: {exc}")
            return
        self.started_at = time.monotonic()
        down_s = self.started_at - (self.down_since or now)
        self.down_since = None
        say(
            "oee",
            f"{self.name} serving again (pid {self.server.pid}), {down_s:.1f}s after it was "
            "found dead; the services reconnect by themselves",
        )

    def stop(self) -> None:
        """Stop the server cleanly."""
        self.restart_at = None
        self.server.stop()


class Infrastructure:
    """The embedded broker and database ``oee up`` runs, each restarted when it dies.

    An external broker (``OEE_KAFKA_BOOTSTRAP``) or database (``OEE_DATABASE_URL``) is
    used as it is and not supervised.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.servers: list[Server] = []
        self.kafka_embedded = settings.kafka_bootstrap is None
        self.database_embedded = settings.database_url is None
        # The passwords of the embedded servers, generated on the first start.
        self.credentials = (
            Credentials.load_or_create(settings.data_dir / CREDENTIALS_FILE)
            if self.kafka_embedded or self.database_embedded
            else None
        )

    def start(self) -> Settings:
        """Start what is embedded, create the topics and ACLs; return the admin's settings."""
        settings = self.settings
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:
            broker = embedded_broker(settings)
            say(
                "oee", f"starting Kafka (embedded, KRaft) on {broker.bootstrap} ({broker.data_dir})"
            )
            self._start(Server("Kafka", broker))
            bootstrap = broker.bootstrap
        else:
            say("oee", f"using Kafka at {bootstrap} (OEE_KAFKA_BOOTSTRAP)")
        database_url = settings.database_url
        if database_url is None:
            database = embedded_database(settings)
            say("oee", f"starting PostgreSQL on port {database.port} ({database.data_dir})")
            self._start(Server("PostgreSQL", database))
            database_url = database.url
            say("oee", f"PostgreSQL at {with_login(database_url, None, None)}")
        else:
            say("oee", "using PostgreSQL at OEE_DATABASE_URL")
        self.settings = settings.model_copy(
            update={"kafka_bootstrap": bootstrap, "database_url": database_url}
        )
        if self.credentials is not None:
            self.settings = login_as(
                self.settings,
                self.credentials,
                ADMIN,
                kafka=self.kafka_embedded,
                database=self.database_embedded,
            )
        asyncio.run(ensure_topics(self.settings))
        say("oee", f"topics ready: {', '.join(topic_names(self.settings))}")
        if self.kafka_embedded:
            asyncio.run(ensure_acls(self.settings))
            say("oee", "ACLs ready: each service may do its own work alone")
        return self.settings

    def env_of(self, service: str) -> dict[str, str]:
        """Return the login a service gets in its environment: its own principal's alone."""
        settings = self.settings
        if self.credentials is None:
            return {}
        own = login_as(
            settings,
            self.credentials,
            SERVICE_PRINCIPALS[service],
            kafka=self.kafka_embedded,
            database=self.database_embedded,
        )
        return login_env(own)

    def _start(self, server: Server) -> None:
        # Registered before it starts: a start that fails half-way is still stopped.
        self.servers.append(server)
        server.start()

    def check(self, now: float) -> bool:
        """Reap and restart servers that died; return whether one came back just now."""
        back = False
        for server in self.servers:
            pending = server.restart_at is not None
            server.check(now)
            back |= pending and server.restart_at is None
        return back

    def stop(self) -> None:
        """Stop the servers in reverse order."""
        for server in reversed(self.servers):
            server.stop()


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


def _ops_urls(settings: Settings) -> str:
    """Return where each service but the gateway serves its metrics."""
    return ", ".join(
        f"http://{address}/metrics ({name})" for name, address in ops_addresses(settings).items()
    )


def _relay(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        say(name, readable(raw.decode(errors="replace").rstrip()))
    stream.close()


def _gateway_healthy(settings: Settings) -> bool:
    try:
        response = httpx.get(f"{settings.gateway_url}/health", timeout=1.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def up(settings: Settings, scale: Mapping[str, int] | None = None) -> int:
    """Run the whole system until SIGINT/SIGTERM; return the exit code.

    ``scale`` names the services to run as several replicas (``cli.scale.parse_scale``
    checked it); every other service runs once.
    """
    replicas = {name: (scale or {}).get(name, 1) for name in SERVICES}
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

    infrastructure = Infrastructure(settings)
    children: list[Child] = []
    try:
        settings = infrastructure.start()
        infra_s = time.monotonic() - began
        assert settings.kafka_bootstrap is not None
        assert settings.database_url is not None
        dev_key = settings.dev_api_key or stored_secret(settings.data_dir, DEV_KEY_SECRET)
        env = os.environ | {
            # Children run in the data dir, where a relative entry would point elsewhere.
            "PYTHONPATH": os.pathsep.join(
                str(Path(entry).resolve())
                for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if entry
            ),
            "OEE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "OEE_DATABASE_URL": settings.database_url,
            # The development key, the venue simulator's admin token and the secret of
            # idempotent order ids: given, or generated once into the data dir.
            "OEE_DEV_API_KEY": dev_key,
            "OEE_VENUES_ADMIN_TOKEN": settings.admin_token(),
            "OEE_ORDER_ID_SECRET": settings.order_secret(),
            # Children write into a pipe we relay line by line; do not hold lines back.
            "PYTHONUNBUFFERED": "1",
        }
        if infrastructure.kafka_embedded:
            # A child logs into our broker as itself (env_of), as nobody if it has no principal.
            env.pop("OEE_KAFKA_USERNAME", None)
            env.pop("OEE_KAFKA_PASSWORD", None)
        write_layout(settings.data_dir, replicas)
        for name in SERVICES:
            for replica in range(replicas[name]):
                child = Child(
                    replica_name(name, replica, replicas[name]),
                    env=env
                    | infrastructure.env_of(name)
                    | replica_env(settings, name, replica, replicas[name]),
                    cwd=settings.data_dir,
                    service=name,
                )
                children.append(child)
                child.start()
        scaled = [f"{name}: {n}" for name, n in replicas.items() if n > 1]
        if scaled:
            say("oee", f"replicas: {', '.join(scaled)} (every other service once)")

        announced = False
        while True:
            now = time.monotonic()
            # Servers first: a service waiting out its backoff for the broker or the
            # database starts as soon as they are back.
            if infrastructure.check(now):
                for child in children:
                    child.hurry(now)
            for child in children:
                child.check(now)
            if not announced and _gateway_healthy(settings):
                announced = True
                base = f"http://{settings.gateway_host}:{settings.gateway_port}"
                say("oee", f"up in {now - began:.1f}s (infrastructure {infra_s:.1f}s)")
                say("oee", f"API: {base}   docs: {base}/docs   Ctrl-C stops everything")
                shown = "(OEE_DEV_API_KEY)" if settings.dev_api_key else dev_key
                say("oee", f"API key, an admin of the account {DEV_ACCOUNT!r}: {shown}")
                say("oee", f"metrics: {base}/metrics (gateway), {_ops_urls(settings)}")
                say("oee", "health of every process: ./oee status")
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
        infrastructure.stop()
        say("oee", "stopped")
