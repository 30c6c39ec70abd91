"""Run the real service processes (venues, engine, projector, gateway) for a test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from adapters.processes import die_with_parent, stop_process, tail
from adapters.settings import Settings
from cli.scale import replica_env, replica_name
from tests.logins import as_service

SERVICES = ("venues", "market", "triggers", "projector", "engine", "sweeper", "gateway")


class System:
    """The whole order flow as separate OS processes, like ``oee up`` runs it.

    ``scale`` runs several replicas of a service, as ``oee up --scale`` does; each is
    named as there (``engine-0``, ``engine-1``), a service run once by its name.
    """

    def __init__(
        self, settings: Settings, log_dir: Path, scale: Mapping[str, int] | None = None
    ) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.scale = dict(scale or {})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # Every process name ever started, for the logs.
        self.names: list[str] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.gateway_host}:{self.settings.gateway_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.gateway_host}:{self.settings.gateway_port}"

    def start(self, name: str) -> None:
        """Start one service process: ``engine``, or a replica such as ``engine-1``."""
        service, _, number = name.partition("-")
        replica = int(number or 0)
        # Each service logs in as itself, with its own password alone, as under `oee up`.
        own = as_service(self.settings, service)
        replicas = self.scale.get(service, 1)
        env = {
            **os.environ,
            **own.as_env(),
            **replica_env(self.settings, service, replica, replicas),
            "PYTHONUNBUFFERED": "1",
        }
        log = (self.log_dir / f"{name}.log").open("ab")
        if name not in self.names:
            self.names.append(name)
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "cli", service],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )

    def start_all(self) -> None:
        """Start every service; then ``wait_healthy``.

        Call it from the main thread: children are told to exit when the *thread*
        that spawned them ends (PR_SET_PDEATHSIG), not only the process.
        """
        for service in SERVICES:
            replicas = self.scale.get(service, 1)
            for replica in range(replicas):
                self.start(replica_name(service, replica, replicas))

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until the gateway reports healthy, failing early if a service died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"gateway not healthy in {timeout}s\n{self.logs()}")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}\n{self.logs()}")

    def stop(self, name: str) -> None:
        """Stop one service politely."""
        stop_process(self.processes.pop(name), timeout=20)

    def kill(self, name: str) -> None:
        """Kill one service outright (SIGKILL): no clean-up, no commit, like a crash."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}.log\n{tail(self.log_dir / f'{name}.log', 40)}" for name in self.names
        )
