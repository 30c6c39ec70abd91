"""A small run of ``oee bench orders``: the benchmark itself works and measures."""

from __future__ import annotations

import os

from adapters.settings import Settings
from cli.bench.orders import main, measure, parser
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


def test_bench_orders_with_scale_runs_one_each_and_scaled_side_by_side(capsys):
    # Two fresh private systems of their own (one engine, then two): nothing shared
    # with the session's system.
    code = main(
        ["--orders", "40", "--concurrency", "8", "--timeout", "60", "--scale", "engine=2"],
        Settings(),
    )

    out = capsys.readouterr().out
    assert code == 0, out
    header, *rows = out.splitlines()[1:]
    assert header.split() == ["1", "each", "engine=2"]
    cells = {line[: line.index("  ")].strip(): line.split()[-2:] for line in rows if "  " in line}
    assert cells["lost"] == ["0", "0"]
    assert cells["confirmed"] == ["40", "40"]
    assert all(float(v) > 0 for v in cells["orders/s end to end"])
    # The engine's CPU is summed over its two processes, and says so.
    engine = next(line for line in rows if line.strip().startswith("engine "))
    assert engine.rstrip().endswith("(2)"), engine
