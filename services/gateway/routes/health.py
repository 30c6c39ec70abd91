"""Whether this gateway can do its job: ``GET /health``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.gateway.deps import FanoutDep, ReadSideDep, RecentDep, TailDep

router = APIRouter()


@router.get("/health")
async def health(
    tail: TailDep, read_side: ReadSideDep, recent: RecentDep, fanout: FanoutDep
) -> JSONResponse:
    """Report whether the log tail and the read models are reachable."""
    checks = {"log": tail.running, "database": await read_side.reachable()}
    ok = all(checks.values())
    return JSONResponse(
        status_code=200 if ok else 503,
        content={
            "status": "ok" if ok else "degraded",
            "checks": checks,
            "sockets": {"firehose": fanout.listeners, "orders": recent.listeners},
        },
    )
