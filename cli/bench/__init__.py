"""``oee bench SCENARIO``: benchmarks on a private system they start, or a running one.

* ``orders``: market orders end to end, with the CPU each process spends per order;
* ``triggers``: 10,000 armed limit orders, then a price move that crosses half.
"""

from __future__ import annotations

import logging

from adapters.settings import Settings


def main(scenario: str, argv: list[str], settings: Settings) -> int:
    """Run one scenario with its own options; return its exit code."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if scenario == "orders":
        from cli.bench.orders import main as run_orders

        return run_orders(argv, settings)
    from cli.bench.triggers import main as run_triggers

    return run_triggers(argv, settings)
