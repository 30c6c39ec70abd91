"""Fixtures of the fault suite: a whole system per scenario, and the table of verdicts.

Every scenario runs its own system (topics, consumer groups, database and ports of
its own) so that what it counts is its own. The verdicts are printed at the end of
the run and written to ``test-artifacts/faults.txt``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.kafka import ensure_topics
from adapters.settings import REPO_ROOT, Settings
from tests.faults.harness import Verdict
from tests.integration.system import System

VERDICTS: list[Verdict] = []
# Realistic venue latency (swaps land 2-3 s after submission): orders are in flight
# at the venues when a process dies.
FAULT_SETTINGS: dict[str, Any] = {
    "venue_profile": "realistic",
    "sweep_submit_after_s": 20.0,
    "sweep_stall_after_s": 30.0,
}


@pytest.fixture
async def fault_system(
    isolated_settings: Callable[..., Settings], fresh_database_url: str, tmp_path: Path
) -> AsyncIterator[System]:
    """Run every service as a process against the shared broker and a fresh database."""
    settings = isolated_settings(tmp_path, database_url=fresh_database_url, **FAULT_SETTINGS)
    await ensure_topics(settings)
    running = System(settings, Path(settings.data_dir) / "logs")
    try:
        running.start_all()
        await asyncio.to_thread(running.wait_healthy)
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def record_verdict() -> Callable[[Verdict], None]:
    """Return ``record(verdict)``: keep it for the summary printed at the end."""
    return VERDICTS.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print every fault scenario's verdict, and keep them in test-artifacts/."""
    if not VERDICTS:
        return
    lines = [verdict.row() for verdict in VERDICTS]
    terminalreporter.section("fault suite: kill -9 under load")
    for line in lines:
        terminalreporter.write_line(line)
    artifacts = REPO_ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "faults.txt").write_text("\n".join(lines) + "\n")
