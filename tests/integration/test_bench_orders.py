"""A small run of ``oee bench orders``: the benchmark itself works and measures."""

from __future__ import annotations

import os

from cli.bench.orders import measure, parser
from cli.bench.system import RunningSystem
from tests.conftest import Infra
from tests.integration.system import System


async def test_bench_orders_small_run_confirms_every_order_and_measures_each_process(
    system: System, infra: Infra
):
    args = parser().parse_args(["--orders", "20", "--concurrency", "8", "--timeout", "60"])
    # The system's processes, the broker and the database are all this test run's children.
    running = RunningSystem(system.settings, os.getpid(), url=system.base_url)

    run = await measure(running, args)

    figures = run.figures()
    assert figures["outcomes"] == {"confirmed": 20}
    assert figures["lost"] == 0
    assert figures["orders_per_s"] > 0
    assert figures["post_ms"]["p50"] <= figures["post_ms"]["p99"]
    cpu = figures["cpu_ms_per_order"]
    measured = ["engine", "gateway", "projector"]
    # The embedded broker and database are this test run's children; containers are not.
    measured += ["kafka"] if infra.kafka_source == "embedded" else []
    measured += ["postgres"] if infra.database_source == "embedded" else []
    for name in measured:
        assert cpu.get(name, 0) > 0, (name, cpu)
    assert figures["client_cpu_ms_per_order"] > 0
    assert any(line.startswith("server CPU per order") for line in run.lines())
