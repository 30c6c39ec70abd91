"""The operations port of a process: ``/metrics``, ``/health/live``, ``/health/ready``.

Every service but the gateway (which serves these on its API port) runs one on a
loopback port from its settings (README "Operating it"). Readiness is a set of named
checks, each an async function answering ``(ok, detail)``; consumer lag is computed
when someone asks (a scrape or a health check), so an idle process pays nothing.

``oee status`` reads ``/health/ready`` of every process: its JSON carries the checks
and the lag per group and partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Self

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.metrics import CONSUMER_LAG, HTTP_REQUESTS, HTTP_SECONDS
from adapters.postgres import connect
from adapters.settings import Settings

log = logging.getLogger(__name__)

# The services with an operations port of their own (``<name>_ops_port`` in the
# settings); the gateway serves the same on its API port.
OPS_SERVICES = ("engine", "projector", "triggers", "market", "sweeper")

Check = Callable[[], Awaitable[tuple[bool, str]]]
# (group, topic, partition) -> messages not handled yet
Lag = dict[tuple[str, str, int], int]
LagSource = Callable[[], Awaitable[Lag]]

# A check that does not answer this fast fails: a health probe must not hang.
CHECK_TIMEOUT_S = 2.0


async def consumer_lag(
    consumer: AIOKafkaConsumer | None,
    group: str,
    positions: Mapping[TopicPartition, int] | None = None,
) -> Lag:
    """Return the lag of ``consumer``'s assigned partitions: log end minus position.

    ``positions`` overrides the consumer's own (a consumer whose progress is committed
    elsewhere, such as the projector's offsets in PostgreSQL). A partition whose end
    the consumer has not learnt yet (no fetch answered) is left out.
    """
    if consumer is None:
        return {}
    lag: Lag = {}
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue
        position = positions.get(tp) if positions is not None else await consumer.position(tp)
        if position is not None:
            lag[(group, tp.topic, tp.partition)] = max(0, end - position)
    return lag


def publish_lag(lag: Lag) -> None:
    """Set the lag gauge for every partition in ``lag``."""
    for (group, topic, partition), behind in lag.items():
        CONSUMER_LAG.labels(group, topic, str(partition)).set(behind)


class Health:
    """Named readiness checks and lag sources of one process."""

    def __init__(self, service: str, *, max_lag: int) -> None:
        self.service = service
        self.max_lag = max_lag
        self.started = time.monotonic()
        self._checks: dict[str, Check] = {}
        self._lag: list[LagSource] = []

    def check(self, name: str, check: Check) -> None:
        """Add a readiness check."""
        self._checks[name] = check

    def lag_from(self, source: LagSource) -> None:
        """Add a source of consumer lag (counted in readiness as ``caught_up``)."""
        self._lag.append(source)

    async def lag(self) -> Lag:
        """Return the lag of every source, and publish it as the gauge."""
        lag: Lag = {}
        for source in self._lag:
            try:
                lag.update(await asyncio.wait_for(source(), CHECK_TIMEOUT_S))
            except Exception as exc:
                log.debug("lag of %s unavailable: %r", self.service, exc)
        publish_lag(lag)
        return lag

    async def report(self) -> dict[str, Any]:
        """Return the readiness report: checks, lag, and whether all is well."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        checks = {
            name: {"ok": ok, "detail": detail}
            for name, (ok, detail) in zip(names, results, strict=True)
        }
        lag = await self.lag()
        if self._lag:
            behind = sum(lag.values())
            checks["caught_up"] = {
                "ok": bool(lag) and behind <= self.max_lag,
                "detail": f"{behind} behind" if lag else "no partitions assigned yet",
            }
        ready = all(c["ok"] for c in checks.values())
        return {
            "service": self.service,
            "status": "ready" if ready else "not ready",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "checks": checks,
            "lag": [
                {"group": g, "topic": t, "partition": p, "lag": n}
                for (g, t, p), n in sorted(lag.items())
            ],
        }

    @staticmethod
    async def _run(check: Check) -> tuple[bool, str]:
        try:
            return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        except TimeoutError:
            return False, f"no answer within {CHECK_TIMEOUT_S:.0f}s"
        except Exception as exc:
            return False, repr(exc)


def metrics_text() -> bytes:
    """Return every metric of this process in Prometheus' text format."""
    return generate_latest()


class OpsServer:
    """Serve ``health``'s routes and the metrics on ``host:port`` inside the running loop."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        self.health = health
        self._health = health
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Start serving. A port already taken is logged, not fatal: the service matters more."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/health/ready", self._ready)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except OSError as exc:
            log.warning("no operations port for %s: %s", self._health.service, exc)
            await runner.cleanup()
            return
        self._runner = runner
        log.info(
            "%s metrics and health on http://%s:%d",
            self._health.service,
            self._host,
            self._port,
        )

    async def stop(self) -> None:
        """Stop serving (a server that never got its port has nothing to stop)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _metrics(self, _: web.Request) -> web.Response:
        await self._health.lag()
        return web.Response(body=metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _live(self, _: web.Request) -> web.Response:
        return web.json_response({"service": self._health.service, "status": "live"})

    async def _ready(self, _: web.Request) -> web.Response:
        report = await self._health.report()
        return web.json_response(report, status=200 if report["status"] == "ready" else 503)


async def reachable(bootstrap: str, timeout_s: float = CHECK_TIMEOUT_S) -> tuple[bool, str]:
    """Return whether a TCP connection to the first bootstrap address opens."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (OSError, TimeoutError) as exc:
        return False, f"{bootstrap}: {exc!r}"
    writer.close()
    return True, bootstrap


def assigned(consumer: Callable[[], Iterable[Any]]) -> Check:
    """Return a check that passes once ``consumer()`` (its assignment) is not empty."""

    async def check() -> tuple[bool, str]:
        partitions = list(consumer())
        numbers = sorted({getattr(tp, "partition", tp) for tp in partitions})
        # The numbers say which replica owns what (`oee up --scale`).
        return bool(partitions), f"{len(partitions)} partitions assigned: {numbers}"

    return check


def broker_check(bootstrap: str) -> Check:
    """Return a check that the broker accepts connections."""

    async def check() -> tuple[bool, str]:
        return await reachable(bootstrap)

    return check


def database_check(settings: Settings) -> Check:
    """Return a check that PostgreSQL answers a query."""

    async def check() -> tuple[bool, str]:
        conn = await connect(settings)
        try:
            await conn.execute("SELECT 1")
        finally:
            await conn.close()
        return True, "answers"

    return check


# Replica i of a service (`oee up --scale`) serves on its service's port plus i times this.
REPLICA_PORT_STEP = 10


def ops_port(settings: Settings, service: str, replica: int | None = None) -> int:
    """Return the operations port of ``service``'s replica (this process's by default):
    its ``<service>_ops_port`` setting plus ``REPLICA_PORT_STEP`` per replica."""
    port: int = getattr(settings, f"{service}_ops_port")
    return port + REPLICA_PORT_STEP * (settings.replica if replica is None else replica)


def ops_address(settings: Settings, service: str, replica: int | None = None) -> str:
    """Return ``host:port`` of the operations port of ``service``'s replica."""
    return f"{settings.ops_host}:{ops_port(settings, service, replica)}"


def standard(
    settings: Settings,
    service: str,
    *,
    database: bool = False,
    lag: LagSource | None = None,
) -> OpsServer:
    """Return the operations server of ``service`` on its port from the settings: the
    broker check, the database check if asked, and ``lag`` as its consumer lag."""
    health = Health(service, max_lag=settings.ready_max_lag)
    health.check("broker", broker_check(settings.bootstrap))
    if database:
        health.check("database", database_check(settings))
    if lag is not None:
        health.lag_from(lag)
    return OpsServer(health, settings.ops_host, ops_port(settings, service))


class RequestMetrics:
    """ASGI middleware: count each HTTP request and time it, by route and status.

    By the route's path template (``/api/orders/{order_id}``), never the raw path, so a
    client cannot grow the metrics without bound; a path no route matched counts as
    ``unmatched``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(template, str(status)).inc()
            HTTP_SECONDS.labels(template).observe(time.perf_counter() - started)
