"""Small helpers for the child processes we own: spawn them tied to us, stop them politely."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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
    process: subprocess.Popen[bytes],
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
