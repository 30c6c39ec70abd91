"""What a killed server leaves behind: a zombie is not alive, its stale lock file goes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from adapters.embedded.postgres import EmbeddedPostgres
from adapters.processes import pid_alive


@contextlib.contextmanager
def sleeping(executable: str = "sleep") -> Iterator[subprocess.Popen[bytes]]:
    """Run ``executable 30`` for the block, then kill and reap it."""
    process = subprocess.Popen([executable, "30"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def zombie(process: subprocess.Popen[bytes]) -> int:
    """Kill ``process`` without reaping it; return its pid, now a zombie's."""
    os.kill(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return process.pid


def lock_file_of(tmp_path: Path, pid: int) -> EmbeddedPostgres:
    """Return a server whose data holds a ``postmaster.pid`` naming ``pid``."""
    database = EmbeddedPostgres(tmp_path / "postgres", port=1)
    database.pgdata.mkdir(parents=True)
    # The layout PostgreSQL writes: pid, data dir, start time, port, socket dir,
    # listen address, shared memory key and id, status.
    lines = [str(pid), str(database.pgdata), "1", "1", "", "127.0.0.1", "  1234001  999999"]
    database.lock_file.write_text("\n".join([*lines, "ready"]) + "\n")
    return database


def cleared(tmp_path: Path, pid: int) -> list[str]:
    """Clear the leftovers of a server whose lock file names ``pid``; return what was said."""
    database = lock_file_of(tmp_path, pid)
    said = database.clear_leftovers()
    assert database.lock_file.exists() == (said == [])
    return said


def test_pid_alive_running_killed_and_reaped_process() -> None:
    with sleeping() as process:
        assert pid_alive(process.pid)
        zombie(process)
        # Not reaped yet: a zombie still answers kill(pid, 0), and is not alive.
        os.kill(process.pid, 0)
        assert not pid_alive(process.pid)
    assert not pid_alive(process.pid)


def test_clear_leftovers_lock_file_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()

    assert cleared(tmp_path, dead.pid) == [
        f"removed the stale postmaster.pid of pid {dead.pid} (gone)"
    ]


def test_clear_leftovers_lock_file_of_a_zombie_is_removed(tmp_path: Path) -> None:
    with sleeping() as process:
        pid = zombie(process)

        assert cleared(tmp_path, pid) == [
            f"removed the stale postmaster.pid of pid {pid} (a zombie nobody reaped)"
        ]


def test_clear_leftovers_lock_file_naming_a_live_process_that_is_no_postgres_is_removed(
    tmp_path: Path,
) -> None:
    with sleeping() as process:
        assert cleared(tmp_path, process.pid) == [
            f"removed the stale postmaster.pid of pid {process.pid} (now the pid of sleep)"
        ]


def test_clear_leftovers_lock_file_of_a_live_postgres_is_kept(tmp_path: Path) -> None:
    # A stand-in named like the server: its command name is what tells them apart.
    (tmp_path / "bin").mkdir()
    stand_in = tmp_path / "bin" / "postgres"
    stand_in.symlink_to(shutil.which("sleep") or "/bin/sleep")
    with sleeping(str(stand_in)) as process:
        assert cleared(tmp_path, process.pid) == []
