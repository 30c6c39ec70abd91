"""``oee up --scale SERVICE=N``: which services run as several replicas, and how each
replica is told apart.

A replica ``i`` of a service (0 for the first) gets ``OEE_REPLICA=i``: its operations
port is the service's plus ``REPLICA_PORT_STEP * i`` (``adapters.ops.ops_port``). The
engine's and the projector's static group member ids come from their instance
setting, which replica ``i > 0`` extends with ``-i``, so no two members share one.
The gateways share the API port (``SO_REUSEPORT``: the kernel spreads connections).

What ``oee up`` runs is written to the data dir, so ``oee status`` asks every replica.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from adapters.ops import OPS_SERVICES
from adapters.settings import Settings

# The services that run correctly as several processes at once, and why the others
# do not (README "Scaling out").
SCALABLE = frozenset({"engine", "projector", "gateway", "triggers", "market"})
NOT_SCALABLE = {
    "sweeper": "it is a safety net that reads the whole log: a second one would only "
    "resubmit every stalled order twice; oee up restarts it when it dies",
    "venues": "it is the simulated chain: its pools and ledger live in its memory",
}
# Where `oee up` records how many replicas of each service it runs.
LAYOUT_FILE = "replicas.json"


class ScaleError(ValueError):
    """A ``--scale`` that cannot be run; the message says why."""


def parse_scale(entries: Iterable[str], services: Iterable[str]) -> dict[str, int]:
    """Return the replicas asked per service from ``SERVICE=N`` entries (the last wins).

    Raise ``ScaleError`` for a malformed entry, an unknown service, one that cannot
    scale (to more than one) or N < 1.
    """
    known = set(services)
    scale: dict[str, int] = {}
    for entry in entries:
        name, sep, count = entry.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ScaleError(f"--scale {entry!r}: expected SERVICE=N, e.g. engine=2")
        if name not in known:
            raise ScaleError(f"--scale {entry!r}: no service {name!r} (one of {sorted(known)})")
        try:
            replicas = int(count)
        except ValueError:
            raise ScaleError(f"--scale {entry!r}: N must be a whole number") from None
        if replicas < 1:
            raise ScaleError(f"--scale {entry!r}: N must be at least 1")
        if replicas > 1 and name not in SCALABLE:
            raise ScaleError(f"--scale {entry!r}: {name} runs once: {NOT_SCALABLE[name]}")
        scale[name] = replicas
    return scale


def replica_name(service: str, replica: int, replicas: int) -> str:
    """Return how ``oee up`` names a replica: the service alone when it runs once."""
    return service if replicas == 1 else f"{service}-{replica}"


def replica_env(settings: Settings, service: str, replica: int, replicas: int) -> dict[str, str]:
    """Return the environment that makes a process replica ``replica`` of ``replicas``."""
    env: dict[str, str] = {}
    if service == "gateway" and replicas > 1:
        env["OEE_GATEWAY_REUSE_PORT"] = "true"
    if replica == 0:
        return env
    env["OEE_REPLICA"] = str(replica)
    if service == "engine":
        env["OEE_ENGINE_INSTANCE"] = f"{settings.engine_instance}-{replica}"
    elif service == "projector":
        env["OEE_PROJECTOR_INSTANCE"] = f"{settings.projector_instance}-{replica}"
    elif service == "triggers":
        env["OEE_TRIGGERS_INSTANCE"] = f"{settings.triggers_instance}-{replica}"
    elif service == "market":
        env["OEE_MARKET_INSTANCE"] = f"{settings.market_instance}-{replica}"
    return env


def write_layout(data_dir: Path, scale: Mapping[str, int]) -> None:
    """Record the replicas ``oee up`` runs per service (those it runs once included)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / LAYOUT_FILE).write_text(json.dumps(dict(scale), sort_keys=True) + "\n")


def read_layout(data_dir: Path) -> dict[str, int]:
    """Return the replicas per service of the last ``oee up`` (one each if unknown)."""
    try:
        stored = json.loads((data_dir / LAYOUT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict):
        return {}
    return {
        name: count
        for name, count in stored.items()
        if isinstance(name, str) and isinstance(count, int) and count >= 1
    }


def ops_replicas(settings: Settings) -> list[tuple[str, str, int]]:
    """Return (row name, service, replica) of every process with an operations port."""
    layout = read_layout(settings.data_dir)
    rows = []
    for service in OPS_SERVICES:
        replicas = layout.get(service, 1)
        rows += [(replica_name(service, i, replicas), service, i) for i in range(replicas)]
    return rows
