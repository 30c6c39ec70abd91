"""Whether this gateway can do its job: ``GET /health``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from adapters.ops import metrics_text, publish_lag
from services.gateway.deps import CommandsDep, FanoutDep, ReadSideDep, RecentDep, TailDep
from services.gateway.responses import COMMON_ERRORS, Health

router = APIRouter()


@router.get(
    "/health",
    response_model=None,
    responses={
        200: {"model": Health, "description": "The log and the read models are reachable"},
        503: {"model": Health, "description": "One of them is not (checks says which)"},
        **COMMON_ERRORS,
    },
)
async def health(
    tail: TailDep,
    commands: CommandsDep,
    read_side: ReadSideDep,
    recent: RecentDep,
    fanout: FanoutDep,
) -> JSONResponse:
    """Report whether the log (the tail and the broker) and the read models are reachable."""
    broker, database = await asyncio.gather(commands.reachable(), read_side.reachable())
    checks = {"log": tail.running and broker, "database": database}
    ok = all(checks.values())
    return JSONResponse(
        status_code=200 if ok else 503,
        content={
            "status": "ok" if ok else "degraded",
            "checks": checks,
            "sockets": {"firehose": fanout.listeners, "orders": recent.listeners},
        },
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(tail: TailDep) -> Response:
    """Every metric of this gateway in Prometheus' text format (README "Metrics")."""
    publish_lag(await tail.lag())
    return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)
