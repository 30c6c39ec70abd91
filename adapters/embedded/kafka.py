"""A real single-node Apache Kafka broker (KRaft mode), run from Maven artifacts.

The jars are resolved once with ``mvn`` from ``pom.xml`` and cached under
``~/.cache/oee/kafka-<version>/``; storage is formatted once, so the data directory
(topics, offsets, messages) survives restarts.

Clients authenticate with SASL/SCRAM and the authorizer denies what no ACL allows
(``adapters.kafka_acls``): every principal's SCRAM credentials are written into the
metadata when storage is formatted, from the passwords file beside the data
directory (``adapters.credentials``). The admin is the super user; the broker talks
to its own controller with SASL/PLAIN as the admin (KRaft controllers take no SCRAM).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from adapters.credentials import ADMIN, CREDENTIALS_FILE, PRINCIPALS, Credentials
from adapters.processes import OwnedProcess, die_with_parent, port_open, tail

KAFKA_VERSION = "4.1.1"
SASL_MECHANISM = "SCRAM-SHA-512"
# Kafka's minimum for SCRAM-SHA-512.
_SCRAM_ITERATIONS = 4096

_HERE = Path(__file__).resolve().parent
_POM = _HERE / "pom.xml"
_LOG4J = _HERE / "log4j2.properties"
_NODE_ID = 1
_T = TypeVar("_T")

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be prepared, started or reached."""


def cache_root() -> Path:
    """Return the per-user cache directory of this project (``$XDG_CACHE_HOME/oee``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oee"


# The log cleaner's key map (see ``server_properties``).
LOG_CLEANER_BUFFER_BYTES = 8 * 1024 * 1024


def find_java() -> str:
    """Return the ``java`` executable to use, preferring ``$JAVA_HOME``."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "java not found: install a JDK 17+ (e.g. apt-get install openjdk-17-jdk-headless) "
            "or point OEE_KAFKA_BOOTSTRAP at an existing Kafka-compatible broker"
        )
    return java


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Two processes (say `oee up` and a pytest session) may resolve the jars at once.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_kafka_libs(cache_dir: Path | None = None, *, timeout: float = 900.0) -> Path:
    """Return a directory holding Kafka's jars, resolving them with Maven on first use.

    The result is reused while ``pom.xml`` is unchanged; a fresh machine needs only
    ``mvn`` and access to Maven Central.
    """
    cache_dir = cache_dir or cache_root() / f"kafka-{KAFKA_VERSION}"
    libs = cache_dir / "libs"
    stamp = cache_dir / "libs.sha256"
    pom = _POM.read_bytes()
    digest = hashlib.sha256(pom).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest and libs.is_dir():
        return libs
    with _file_lock(cache_dir / ".lock"):
        if stamp.exists() and stamp.read_text().strip() == digest and libs.is_dir():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                "mvn not found: install Maven 3.8+ (e.g. apt-get install maven) to fetch the "
                "Kafka broker, or point OEE_KAFKA_BOOTSTRAP at an existing broker"
            )
        staging = cache_dir / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        (cache_dir / "pom.xml").write_bytes(pom)
        log.info("resolving Kafka %s jars with Maven into %s", KAFKA_VERSION, libs)
        started = time.monotonic()
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(cache_dir / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            cwd=cache_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            raise BrokerError(
                f"mvn could not resolve the Kafka jars (exit {result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        stamp.write_text(digest + "\n")
        log.info("resolved Kafka jars in %.1fs", time.monotonic() - started)
        return libs


def new_cluster_id() -> str:
    """Return a random cluster id in Kafka's format (``kafka-storage random-uuid``)."""
    while True:
        # Kafka's Uuid.toString: URL-safe base64 of 16 random bytes, without padding;
        # Kafka never hands out ids starting with "-" (they look like CLI flags).
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _run_coroutine(coro: Coroutine[Any, Any, _T]) -> _T:
    # The sync API may be called from code that already runs an event loop (an async
    # pytest fixture, say); asyncio.run refuses that, so use a private thread then.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _broker_count(bootstrap: str, login: dict[str, str]) -> int:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **login)
    try:
        await client.bootstrap()
        return len(client.cluster.brokers())
    finally:
        await client.close()


def broker_reachable(bootstrap: str, login: dict[str, str] | None = None) -> bool:
    """Return whether a Kafka client (logging in with ``login``, aiokafka's SASL options)
    can fetch cluster metadata listing a broker."""
    host, _, port = bootstrap.rpartition(":")
    if not port_open(host, int(port)):
        return False
    try:
        return _run_coroutine(_broker_count(bootstrap, login or {})) > 0
    except (TimeoutError, KafkaError, OSError):
        return False


def _scram_entry(name: str, password: str) -> str:
    """Return ``name``'s SCRAM credential as ``kafka-storage format --add-scram`` takes it.

    Salted here rather than by the tool, so that no password shows on its command
    line (which any user of the machine may read while it runs).
    """
    salt = secrets.token_bytes(32)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _SCRAM_ITERATIONS)
    return (
        f"{SASL_MECHANISM}=[name={name},iterations={_SCRAM_ITERATIONS},"
        f'salt="{base64.b64encode(salt).decode()}",'
        f'saltedpassword="{base64.b64encode(salted).decode()}"]'
    )


class KafkaBroker(OwnedProcess):
    """One Kafka process acting as both broker and KRaft controller, on loopback."""

    not_started = BrokerError

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 19092,
        controller_port: int = 19093,
        heap: str = "768m",
        session_timeout_ms: int | None = None,
        cache_dir: Path | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        # By default the passwords file beside the data directory, shared with the
        # embedded database (``oee up``: <data dir>/credentials.json).
        self.credentials = credentials or Credentials.load_or_create(
            self.data_dir.parent / CREDENTIALS_FILE
        )
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        # None: Kafka's default (9 s, a heartbeat every 2 s).
        self.session_timeout_ms = session_timeout_ms
        self.cache_dir = cache_dir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Return the address clients connect to."""
        return f"127.0.0.1:{self.port}"

    def login(self, principal: str = ADMIN) -> dict[str, str]:
        """Return aiokafka's options that log ``principal`` into this broker."""
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": SASL_MECHANISM,
            "sasl_plain_username": principal,
            "sasl_plain_password": self.credentials.password(principal),
        }

    @property
    def log_dir(self) -> Path:
        """Return where topic partitions and the metadata log are stored."""
        return self.data_dir / "logs"

    @property
    def log_file(self) -> Path:
        """Return the broker's own log file (warnings and errors)."""
        return self.data_dir / "broker.log"

    def server_properties(self) -> str:
        """Return the broker configuration for this data directory and these ports."""
        admin = self.credentials.password(ADMIN)
        mechanism = SASL_MECHANISM.lower()
        props = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "controller.quorum.voters": f"{_NODE_ID}@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"CLIENT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"CLIENT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "CLIENT",
            # Clients: SCRAM, the credentials kept in the cluster's metadata.
            "sasl.enabled.mechanisms": SASL_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
            f"listener.name.client.{mechanism}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN}" password="{admin}";'
            ),
            # The controller cannot read SCRAM credentials from the metadata it serves:
            # the broker logs into it with PLAIN, the admin its only user.
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{ADMIN}" password="{admin}" user_{ADMIN}="{admin}";'
            ),
            # Deny whatever no ACL allows; the admin (the broker itself too) may do all.
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
            "log.dirs": str(self.log_dir),
            "offsets.topic.replication.factor": "1",
            # Internal topics default to 50 partitions; a single dev node does not need
            # that many, and creating them delays the first consumer-group join.
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Topics are created explicitly (adapters/kafka.py) with the
            # configured partition count; a typo must fail, not make a new topic.
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            # Every compaction pass first zeroes the cleaner's key map, 128 MiB by
            # default: with the engine's changelog rolled every minute, that zeroing was
            # a third of the broker's Java samples under load. 8 MiB holds 300,000 keys
            # a pass.
            "log.cleaner.dedupe.buffer.size": str(LOG_CLEANER_BUFFER_BYTES),
        }
        if self.session_timeout_ms is not None:
            # A broker restarted after a kill -9 cannot register until the controller
            # fences its previous incarnation, when that one's session expires. Broker
            # and controller are one process here, so the old one is surely gone.
            props["broker.session.timeout.ms"] = str(self.session_timeout_ms)
            props["broker.heartbeat.interval.ms"] = str(max(1, self.session_timeout_ms // 3))
        lines = [f"{key}={value}" for key, value in props.items()]
        return "# Written by adapters/embedded/kafka.py on every start.\n" + "\n".join(lines) + "\n"

    def _java_command(self, libs: Path, *main: str) -> list[str]:
        return [
            find_java(),
            f"-Xmx{self.heap}",
            # The quick compiler only. On two cores, the optimising one (C2) spent about
            # two thirds of a fresh broker's CPU under load compiling Kafka, 20 ms per
            # order of the benchmark's 30; C1's code serves this load as cheaply.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_LOG4J}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{libs}/*",
            *main,
        ]

    def prepare(self) -> Path:
        """Resolve the jars, write the configuration and format storage if needed.

        Return the path of ``server.properties``.
        """
        libs = resolve_kafka_libs(self.cache_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        # It holds the admin's password.
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text(self.server_properties())
        if not (self.log_dir / "meta.properties").exists():
            scram = [_scram_entry(name, self.credentials.password(name)) for name in PRINCIPALS]
            log.info("formatting Kafka storage in %s", self.log_dir)
            result = subprocess.run(
                self._java_command(
                    libs,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    new_cluster_id(),
                    "-c",
                    str(config),
                    *(arg for entry in scram for arg in ("--add-scram", entry)),
                ),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if result.returncode != 0:
                raise BrokerError(
                    f"formatting Kafka storage failed (exit {result.returncode}):\n"
                    f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
                )
            self._users_file.write_text("\n".join(PRINCIPALS) + "\n")
        self._check_users()
        return config

    @property
    def _users_file(self) -> Path:
        # The principals whose SCRAM credentials were written when storage was formatted.
        return self.data_dir / "scram-users"

    def _check_users(self) -> None:
        known = self._users_file.read_text().split() if self._users_file.exists() else []
        missing = [name for name in PRINCIPALS if name not in known]
        if missing:
            raise BrokerError(
                f"the Kafka storage in {self.log_dir} has no login for {', '.join(missing)}: "
                "it was formatted before those principals existed. Move "
                f"{self.data_dir} aside (its topics go with it) to format it anew."
            )

    def start(self, timeout: float = 120.0) -> None:
        """Start the broker and return once clients can fetch metadata from it."""
        if self.running:
            return
        if port_open("127.0.0.1", self.port) or port_open("127.0.0.1", self.controller_port):
            raise BrokerError(
                f"port {self.port} or {self.controller_port} on 127.0.0.1 is already in use; "
                "another broker is running there (choose OEE_KAFKA_PORT / "
                "OEE_KAFKA_CONTROLLER_PORT, or set OEE_KAFKA_BOOTSTRAP to use it)"
            )
        config = self.prepare()
        libs = resolve_kafka_libs(self.cache_dir)
        console = self.data_dir / "kafka.out"
        with console.open("ab") as out:
            self._process = subprocess.Popen(
                self._java_command(libs, "kafka.Kafka", str(config)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # Own process group: a Ctrl-C in the terminal reaches only our
                # supervisor, which then stops everything in order.
                process_group=0,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the broker answers metadata requests; raise if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise BrokerError(
                    f"Kafka exited with code {self.exit_code} during start-up; "
                    f"last log lines:\n{self._diagnostics()}"
                )
            if broker_reachable(self.bootstrap, self.login()) and self.running:
                return
            time.sleep(0.25)
        self.stop()
        raise BrokerError(
            f"Kafka did not become ready within {timeout:.0f}s; last log lines:\n"
            f"{self._diagnostics()}"
        )

    def _diagnostics(self) -> str:
        return "\n".join(
            text for text in (tail(self.log_file), tail(self.data_dir / "kafka.out")) if text
        )
