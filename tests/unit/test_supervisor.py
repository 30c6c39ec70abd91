"""The supervisor's restarts: exponential backoff, reset after a stable run, cut short."""

from __future__ import annotations

from cli.supervisor import MAX_BACKOFF_S, STABLE_AFTER_S, Supervised


class Scripted(Supervised):
    """A supervised process whose exit is set by the test."""

    def __init__(self) -> None:
        super().__init__("svc")
        self.code: int | None = None
        self.starts: list[float] = []

    def exit_code(self) -> int | None:
        return self.code

    def restart(self, now: float) -> None:
        self.code = None
        self.started_at = now
        self.starts.append(now)


def test_supervised_dies_repeatedly_restarts_after_doubling_backoff() -> None:
    svc = Scripted()
    now = 0.0
    for expected in (1.0, 2.0, 4.0, 8.0):
        svc.code = -9
        svc.check(now)
        svc.check(now + expected - 0.01)
        svc.check(now + expected)
        now += expected
    assert svc.starts == [1.0, 3.0, 7.0, 15.0]
    assert svc.restarts == 4


def test_supervised_backoff_is_capped() -> None:
    svc = Scripted()
    svc.backoff_s = MAX_BACKOFF_S
    svc.code = 1
    svc.check(0.0)
    assert svc.restart_at == MAX_BACKOFF_S
    assert svc.backoff_s == MAX_BACKOFF_S


def test_supervised_dies_after_a_stable_run_restarts_after_one_second() -> None:
    svc = Scripted()
    svc.backoff_s = 16.0
    svc.code = 1
    svc.check(STABLE_AFTER_S + 5)
    assert svc.restart_at == STABLE_AFTER_S + 6


def test_supervised_hurry_with_restart_pending_restarts_at_next_check() -> None:
    svc = Scripted()
    svc.backoff_s = 16.0
    svc.code = 1
    svc.check(0.0)
    svc.hurry(3.0)
    svc.check(3.0)
    assert svc.starts == [3.0]
    assert svc.backoff_s == 1.0


def test_supervised_hurry_while_running_changes_nothing() -> None:
    svc = Scripted()
    svc.hurry(3.0)
    svc.check(3.0)
    assert svc.starts == []
    assert svc.restart_at is None
