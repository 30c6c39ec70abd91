"""``oee test``: the checks CI runs, in order, with a one-line verdict per step."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence

from adapters.settings import REPO_ROOT


def run_checks(pytest_args: Sequence[str] = ()) -> int:
    """Run ruff format --check, ruff check, mypy and pytest; return 1 if any failed.

    Every step runs even after a failure, so one run shows all that is wrong.
    """
    python = sys.executable
    steps: list[tuple[str, list[str]]] = [
        ("ruff format --check .", [python, "-m", "ruff", "format", "--check", "."]),
        ("ruff check .", [python, "-m", "ruff", "check", "."]),
        ("mypy .", [python, "-m", "mypy", "."]),
        (" ".join(["pytest", *pytest_args]), [python, "-m", "pytest", *pytest_args]),
    ]
    verdicts: list[str] = []
    failed: list[str] = []
    for label, command in steps:
        print(f"==> {label}", flush=True)
        started = time.monotonic()
        code = subprocess.run(command, cwd=REPO_ROOT, check=False).returncode
        elapsed = time.monotonic() - started
        verdict = "ok" if code == 0 else f"FAILED (exit {code})"
        verdicts.append(f"{label:<40} {verdict} in {elapsed:.1f}s")
        if code != 0:
            failed.append(label)
    print("\nsummary:")
    for line in verdicts:
        print(f"  {line}")
    print("all checks passed" if not failed else f"failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0
