"""``oee status``: the health of every process and its consumer lag, in one table.

Reads ``/health/ready`` on each service's operations port and ``/health`` of the
gateway (the addresses come from the settings, as ``oee up`` started them). Exit
code 0 when every process is ready, 1 otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.ops import ops_address
from adapters.settings import Settings
from cli.scale import ops_replicas, read_layout

TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Row:
    service: str
    address: str
    status: str
    detail: str
    lag: int | None


def ops_addresses(settings: Settings) -> dict[str, str]:
    """Return the operations address (``host:port``) of every process but the gateways,
    each replica of a scaled service (``engine-0``, ``engine-1``...) by its name."""
    return {
        name: ops_address(settings, service, replica)
        for name, service, replica in ops_replicas(settings)
    }


def _get(client: httpx.Client, url: str) -> tuple[int | None, dict[str, Any] | str]:
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return None, f"unreachable ({type(exc).__name__})"
    try:
        body = response.json()
    except ValueError:
        return response.status_code, response.text[:80]
    return response.status_code, body if isinstance(body, dict) else str(body)


def _service_row(name: str, address: str, code: int | None, body: dict[str, Any] | str) -> Row:
    if not isinstance(body, dict):
        return Row(name, address, "down", body, None)
    failing = [
        f"{check}: {result.get('detail', '')}"
        for check, result in body.get("checks", {}).items()
        if not result.get("ok")
    ]
    lag = sum(int(part["lag"]) for part in body.get("lag", [])) if body.get("lag") else None
    status = "ready" if code == 200 else "not ready"
    return Row(name, address, status, "; ".join(failing) or "all checks pass", lag)


def collect(settings: Settings) -> tuple[list[Row], dict[str, Any]]:
    """Ask every process; return a row each and the raw reports by service."""
    rows: list[Row] = []
    reports: dict[str, Any] = {}
    with httpx.Client(timeout=TIMEOUT_S) as client:
        base = settings.gateway_url
        code, body = _get(client, f"{base}/health")
        reports["gateway"] = body
        # Several gateways share the API port: the kernel hands this request to one.
        gateways = read_layout(settings.data_dir).get("gateway", 1)
        shared = f"{gateways} replicas share the port, one answered: " if gateways > 1 else ""
        if isinstance(body, dict):
            checks = body.get("checks", {})
            failing = [name for name, ok in checks.items() if not ok]
            detail = shared + ("failing: " + ", ".join(failing) if failing else "all checks pass")
            rows.append(Row("gateway", base.removeprefix("http://"), _word(code), detail, None))
        else:
            rows.append(Row("gateway", base.removeprefix("http://"), "down", body, None))
        for name, address in ops_addresses(settings).items():
            code, body = _get(client, f"http://{address}/health/ready")
            reports[name] = body
            rows.append(_service_row(name, address, code, body))
    return rows, reports


def _word(code: int | None) -> str:
    return {200: "ready", None: "down"}.get(code, "not ready")


def render(rows: list[Row]) -> str:
    """Return the rows as an aligned text table."""
    table = [("SERVICE", "ADDRESS", "STATUS", "LAG", "DETAIL")] + [
        (r.service, r.address, r.status, "-" if r.lag is None else str(r.lag), r.detail)
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:4], widths, strict=True))
        + "  "
        + line[4]
        for line in table
    )


def main(settings: Settings, *, as_json: bool = False) -> int:
    rows, reports = collect(settings)
    if as_json:
        print(json.dumps(reports, indent=2))
    else:
        print(render(rows))
    return 0 if all(r.status == "ready" for r in rows) else 1
