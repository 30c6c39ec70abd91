"""The compose stack, as a user runs it: `up`, one market order through the gateway, `down`.

It needs a Docker engine and the images docker-compose.yml names, which
docker-images/build.sh builds without any registry (README "Docker"); without
them it is skipped, saying which is missing (the engine is found as the docker
command finds it: DOCKER_HOST included). It never builds: that takes minutes
and root. The stack gets a project name of its own, so its containers, network and
volumes are its own, and the gateway a free host port; `down -v` removes them all.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from adapters.processes import free_port
from tests.auth import AUTH, DEV_KEY
from tests.orders import SELL_SOL

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ORDER = SELL_SOL
# From `up` until the gateway answers. Every service waits for the ones it needs to
# be healthy, and on a busy machine a JVM and initdb take their time.
UP_WITHIN_S = 600.0
# From the order's acceptance until it ends: 2 to 3 s of simulated swap when idle.
ORDER_WITHIN_S = 120.0
TERMINAL = {"confirmed", "failed"}


def _run(*command: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def compose_command() -> list[str] | None:
    """Return Compose v2 (the docker plugin) or else v1 (docker-compose), if either exists."""
    docker = shutil.which("docker")
    if docker and _run(docker, "compose", "version").returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def compose_images() -> list[str]:
    """Return the images docker-compose.yml names, each once."""
    found = re.findall(r"^\s+image:\s*(\S+)\s*$", COMPOSE_FILE.read_text(), re.M)
    return sorted(set(found))


def why_no_stack() -> str | None:
    """Return why the compose stack cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        if _run("docker", "info", timeout=10).returncode != 0:
            return "the Docker engine does not answer (docker info failed)"
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer (docker info timed out)"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    missing = [
        image
        for image in compose_images()
        if _run("docker", "image", "inspect", image).returncode != 0
    ]
    if missing:
        return f"images missing: {', '.join(missing)}; build them with docker-images/build.sh"
    return None


def wait_for_gateway(base_url: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the gateway at {base_url} did not answer within {within:.0f}s")


def wait_until_ended(http: httpx.Client, order_id: str, within: float) -> dict[str, object]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        response = http.get(f"/api/orders/{order_id}")
        # 404 until the projector has written the order's first row.
        if response.status_code == 200 and response.json()["status"] in TERMINAL:
            return dict(response.json())
        time.sleep(0.5)
    raise TimeoutError(f"order {order_id} did not end within {within:.0f}s")


@pytest.mark.timeout(UP_WITHIN_S + ORDER_WITHIN_S + 300)
@pytest.mark.parametrize(
    "engines",
    [1, pytest.param(2, id="two-engines")],
)
def test_compose_stack_runs_a_market_order_to_confirmed(engines: int) -> None:
    reason = why_no_stack()
    if reason is not None:
        pytest.skip(reason)
    compose = compose_command()
    assert compose is not None
    port = free_port()
    project = f"oee-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "OEE_VENUES_ADMIN_TOKEN": secrets.token_hex(16),
        "OEE_ORDER_ID_SECRET": secrets.token_hex(16),
        "OEE_DEV_API_KEY": DEV_KEY,
        "OEE_GATEWAY_PUBLISH": str(port),
        # deploy.replicas of docker-compose.yml; each replica its own member id.
        "OEE_ENGINE_REPLICAS": str(engines),
    }
    stack = [*compose, "-f", str(COMPOSE_FILE), "-p", project]

    def run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*stack, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    base_url = f"http://127.0.0.1:{port}"
    passed = False
    try:
        # Given the stack, up as `docker compose up -d` brings it
        started = time.monotonic()
        up = run("up", "-d", timeout=UP_WITHIN_S)
        assert up.returncode == 0, f"up failed:\n{up.stdout[-3000:]}{up.stderr[-3000:]}"
        wait_for_gateway(base_url, UP_WITHIN_S - (time.monotonic() - started))
        print(f"compose stack {project} up in {time.monotonic() - started:.1f}s")
        running = run("ps", "-q", "engine", timeout=60).stdout.split()
        assert len(running) == engines, f"engine containers: {running}"

        with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as http:
            # When a market order is submitted through the gateway
            submitted = time.monotonic()
            response = http.post("/api/orders/execute", json=ORDER)
            assert response.status_code == 202, response.text
            order_id = str(response.json()["orderId"])

            # Then the engine executes it and the read model shows it confirmed
            order = wait_until_ended(http, order_id, ORDER_WITHIN_S)
            print(f"order {order_id} {order['status']} in {time.monotonic() - submitted:.1f}s")
            assert order["status"] == "confirmed", order
        passed = True
    except BaseException:
        ps = run("ps", timeout=60)
        logs = run("logs", "--tail", "30", timeout=120)
        print(f"{ps.stdout}\n{logs.stdout[-20000:]}{logs.stderr[-2000:]}")
        raise
    finally:
        down = run("down", "-v", "--remove-orphans", timeout=300)
        # A failed `down` leaves containers and volumes behind: fail for it, but never
        # in place of the failure that brought us here.
        if passed:
            assert down.returncode == 0, f"down failed:\n{down.stdout}{down.stderr}"
        elif down.returncode != 0:
            print(f"down failed too:\n{down.stdout}{down.stderr}")
