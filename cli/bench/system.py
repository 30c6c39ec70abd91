"""What a benchmark runs against: a private system on free ports, and its CPU by process.

CPU time is read from ``/proc`` before and after a run: user plus system time of
every live process of the system, plus what each process's reaped children used
(PostgreSQL serves each connection from a child of the postmaster, which may exit
during the run). Processes are grouped by what they are: ``kafka``, ``postgres``,
and one group per service (``engine``, ``gateway``...).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx

from adapters.credentials import ADMIN
from adapters.ops import OPS_SERVICES
from adapters.processes import die_with_parent, free_port
from adapters.settings import Settings
from cli.logins import log_in
from domain.accounts import new_key

_TICKS = os.sysconf("SC_CLK_TCK")
SERVICE_NAMES = ("venues", "market", "triggers", "engine", "sweeper", "projector", "gateway")


@dataclass(frozen=True)
class ProcessInfo:
    """One process as ``/proc`` shows it."""

    pid: int
    ppid: int
    group: str | None
    cpu_s: float  # its own user + system time
    children_cpu_s: float  # user + system time of its reaped children


def _read(pid: int) -> ProcessInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ProcessInfo(
        pid=pid,
        ppid=int(fields[1]),
        group=group_of([part.decode(errors="replace") for part in cmdline if part]),
        cpu_s=(utime + stime) / _TICKS,
        children_cpu_s=(cutime + cstime) / _TICKS,
    )


def group_of(argv: list[str]) -> str | None:
    """Return the group a command line belongs to, or None when it is not the system's."""
    if not argv:
        return None
    if any("kafka.Kafka" in part or "KafkaRaftServer" in part for part in argv) or (
        Path(argv[0]).name == "java" and any("kafka" in part for part in argv)
    ):
        return "kafka"
    if Path(argv[0]).name.startswith("postgres") or argv[0].startswith("postgres:"):
        return "postgres"
    if "-m" in argv and "cli" in argv:
        rest = argv[argv.index("cli") + 1 :]
        if rest and rest[0] in SERVICE_NAMES:
            return rest[0]
    return None


def _processes() -> list[ProcessInfo]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _read(int(entry.name))
            if info is not None:
                found.append(info)
    return found


def descendants(root: int, processes: list[ProcessInfo]) -> list[ProcessInfo]:
    """Return the processes below ``root`` in the process tree."""
    children: dict[int, list[ProcessInfo]] = defaultdict(list)
    for info in processes:
        children[info.ppid].append(info)
    below, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            below.append(child)
            stack.append(child.pid)
    return below


def group_members(root: int, group: str, *, children_only: bool = False) -> list[int]:
    """Return the pids of ``group`` below ``root`` (only its direct children if asked)."""
    below = descendants(root, _processes())
    return [
        info.pid
        for info in below
        if info.group == group and (not children_only or info.ppid == root)
    ]


def cpu_by_group(root: int | None) -> dict[str, float]:
    """Return CPU seconds used so far per group, for the tree under ``root`` (or every
    process of a system on this machine when ``root`` is None)."""
    everything = _processes()
    scope = descendants(root, everything) if root is not None else everything
    totals: dict[str, float] = defaultdict(float)
    for info in scope:
        if info.group is not None:
            totals[info.group] += info.cpu_s + info.children_cpu_s
    return dict(totals)


def processes_by_group(root: int) -> dict[str, int]:
    """Return how many live processes of each service run under ``root`` (its replicas)."""
    return dict(
        Counter(
            info.group for info in descendants(root, _processes()) if info.group in SERVICE_NAMES
        )
    )


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Return the CPU seconds each group used between two readings."""
    return {
        group: after.get(group, 0.0) - before.get(group, 0.0)
        for group in sorted(set(before) | set(after))
    }


@dataclass(frozen=True)
class RunningSystem:
    """A system a benchmark drives: its settings and the pid whose tree it is."""

    settings: Settings
    root_pid: int | None
    url: str | None = None  # a gateway given by address rather than by settings

    @property
    def base_url(self) -> str:
        return self.url or f"http://{self.settings.gateway_host}:{self.settings.gateway_port}"

    @property
    def auth(self) -> dict[str, str]:
        """Return the headers a client of this system sends: its development key."""
        if not self.settings.dev_api_key:
            raise RuntimeError("set OEE_DEV_API_KEY to the API key to benchmark with")
        return {"Authorization": f"Bearer {self.settings.dev_api_key}"}


def _wait_ready(
    settings: Settings, process: subprocess.Popen[bytes], deadline: float, log_name: str
) -> None:
    """Wait until every process of the system (every replica) reports ready."""
    from cli.status import collect

    while True:
        rows, _ = collect(settings)
        if all(row.status == "ready" for row in rows):
            return
        if process.poll() is not None:
            raise RuntimeError(f"oee up exited with {process.returncode}; see {log_name}")
        if time.monotonic() > deadline:
            waiting = [row.service for row in rows if row.status != "ready"]
            raise TimeoutError(f"not ready: {waiting}; see {log_name}")
        time.sleep(0.5)


@contextmanager
def private_system(
    data_dir: str,
    scale: Mapping[str, int] | None = None,
    *,
    wait_ready: bool = False,
    **overrides: object,
) -> Iterator[RunningSystem]:
    """Run ``oee up`` on free ports in ``data_dir``: instant venues, a still market.

    ``scale`` is ``oee up --scale``: the replicas of each service (one when absent).
    It yields once the API answers, or with ``wait_ready`` once every process (every
    replica) reports ready, so a benchmark does not time a group still rebalancing.
    """
    values: dict[str, object] = {
        "data_dir": Path(data_dir),
        "kafka_port": free_port(),
        "kafka_controller_port": free_port(),
        "database_port": free_port(),
        "gateway_port": free_port(),
        "venues_port": free_port(),
        **{f"{name}_ops_port": free_port() for name in OPS_SERVICES},
        "venue_profile": "instant",
        "market_drift_bps": Decimal(0),
        "market_launch_every_s": 0,
        # The benchmark's own observers share the cores with the system under load;
        # they must not be dropped as slow clients.
        "stream_buffer": 100_000,
        # One client (the benchmark) follows every order in flight on its own socket.
        "ws_max_sockets": 100_000,
        "ws_max_sockets_per_client": 100_000,
        # ... and a backlog of thousands of orders in flight: the gateway keeps all their
        # recent events, instead of reading evicted ones back from the read models for
        # every socket.
        "gateway_recent_orders": 100_000,
        # The benchmark's client: an admin of the dev account.
        "dev_api_key": new_key(),
    }
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}
    env.pop("OEE_KAFKA_BOOTSTRAP", None)
    env.pop("OEE_DATABASE_URL", None)
    log = open(os.path.join(data_dir, "up.log"), "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "up"]
        + [arg for name, n in sorted((scale or {}).items()) for arg in ("--scale", f"{name}={n}")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent(),
    )
    try:
        base = f"http://{settings.gateway_host}:{settings.gateway_port}"
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"oee up exited with {process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the system did not come up; see {log.name}")
            time.sleep(0.5)
        if wait_ready:
            _wait_ready(settings, process, deadline, log.name)
        # Whoever drives it (a benchmark reading the log, a fault test) is its admin.
        yield RunningSystem(log_in(settings, ADMIN), process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
