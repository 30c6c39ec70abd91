"""What a killed server leaves behind: a zombie is not alive, its stale lock file goes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from adapters.embedded.postgres import EmbeddedPostgres
from adapters.processes import pid_alive


def test_pid_alive_running_killed_and_reaped_process() -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        # Not reaped yet: a zombie, which still answers kill(pid, 0).
        deadline = time.monotonic() + 5
        while pid_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, 0)
        assert not pid_alive(process.pid)
    finally:
        process.kill()
        process.wait()
    assert not pid_alive(process.pid)


def _lock_file(tmp_path: Path, pid: int) -> EmbeddedPostgres:
    database = EmbeddedPostgres(tmp_path / "postgres", port=1)
    database.pgdata.mkdir(parents=True)
    # The layout PostgreSQL writes: pid, data dir, start time, port, socket dir,
    # listen address, shared memory key and id, status.
    lines = [str(pid), str(database.pgdata), "1", "1", "", "127.0.0.1", "  1234001  999999"]
    database.lock_file.write_text("\n".join([*lines, "ready"]) + "\n")
    return database


def test_clear_leftovers_lock_file_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    database = _lock_file(tmp_path, dead.pid)

    cleared = database.clear_leftovers()

    assert not database.lock_file.exists()
    assert cleared == [f"removed the stale postmaster.pid of pid {dead.pid} (gone)"]


def test_clear_leftovers_lock_file_of_a_zombie_is_removed(tmp_path: Path) -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        os.kill(process.pid, signal.SIGKILL)
        while pid_alive(process.pid):
            time.sleep(0.01)
        database = _lock_file(tmp_path, process.pid)

        cleared = database.clear_leftovers()

        assert not database.lock_file.exists()
        assert cleared == [
            f"removed the stale postmaster.pid of pid {process.pid} (a zombie nobody reaped)"
        ]
    finally:
        process.wait()


def test_clear_leftovers_lock_file_of_a_live_postgres_is_kept(tmp_path: Path) -> None:
    # A stand-in named like the server: its command name is what tells them apart.
    (tmp_path / "bin").mkdir()
    stand_in = tmp_path / "bin" / "postgres"
    stand_in.symlink_to(shutil.which("sleep") or "/bin/sleep")
    process = subprocess.Popen([str(stand_in), "30"])
    try:
        database = _lock_file(tmp_path, process.pid)

        assert database.clear_leftovers() == []
        assert database.lock_file.exists()
    finally:
        process.kill()
        process.wait()


def test_clear_leftovers_lock_file_naming_a_live_process_that_is_no_postgres_is_removed(
    tmp_path: Path,
) -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        database = _lock_file(tmp_path, process.pid)

        cleared = database.clear_leftovers()

        assert not database.lock_file.exists()
        assert cleared == [
            f"removed the stale postmaster.pid of pid {process.pid} (now the pid of sleep)"
        ]
    finally:
        process.kill()
        process.wait()
