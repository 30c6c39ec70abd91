"""Small helpers for the child processes we own: spawn them tied to us, stop them politely."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import uvloop

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child receive ``sig`` when its parent dies.

    Returns ``None`` off Linux, where the mechanism does not exist.
    """
    if not sys.platform.startswith("linux"):
        return None

    def _preexec() -> None:
        # A broker or database orphaned by a SIGKILLed parent would hold its port and
        # data directory forever; the kernel tells it to shut down instead.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return _preexec


def stop_process(
    process: subprocess.Popen[Any],
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 30.0,
) -> int:
    """Send ``sig``, wait up to ``timeout`` seconds, then kill; return the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def pid_alive(pid: int) -> bool:
    """Return whether process ``pid`` exists and is not a zombie.

    A zombie (dead, not yet reaped by its parent) still answers ``kill(pid, 0)``, so
    a server that checks its lock file that way takes it for alive; it is not.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        # No /proc (not Linux): fall back to the signal probe.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")".
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a text file, or an empty string if it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class OwnedProcess:
    """A server process this program started: its state, waiting for it, stopping it.

    Subclasses start ``self._process`` in ``start`` and say how it shuts down cleanly.
    """

    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    not_started: ClassVar[type[Exception]] = RuntimeError
    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """Return the process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """Return whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """Return how the process ended (reaping it), or None while it runs or never ran."""
        return self._process.poll() if self._process is not None else None

    def clear_leftovers(self) -> list[str]:
        """Remove what a killed process left behind that would stop a new one; say what.

        Call it only while the process is not running.
        """
        return []

    def wait(self) -> int:
        """Block until the process exits and return its exit code."""
        if self._process is None:
            raise self.not_started(f"{type(self).__name__} was never started")
        return self._process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the process down cleanly, killing it after ``timeout`` seconds."""
        if self._process is None:
            return
        stop_process(self._process, sig=self.stop_signal, timeout=timeout)
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Return a new uvloop event loop, for a process that drives its loop itself (the
    engine's faust worker)."""
    return uvloop.new_event_loop()


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run a service's main coroutine to completion on a new uvloop event loop.

    Every service process runs on uvloop, as the engine did first (the gateway and
    the venue simulator too: uvicorn's ``loop="auto"`` picks it when it is installed).
    The bench shows no cost from it; its gain in these idle-dominated services is
    within the bench's noise (docs/architecture.md, "Cost model").
    """
    return uvloop.run(main)


def stop_on_signals() -> asyncio.Event:
    """Return an ``asyncio.Event`` set by SIGTERM or SIGINT: a service's signal to stop.

    Called from a coroutine, as the handlers belong to the running loop.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
