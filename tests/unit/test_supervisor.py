"""The supervisor's restarts: backoff, reset or cut short; a server cleared before it restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.embedded.kafka import KafkaBroker
from adapters.embedded.postgres import DatabaseError
from adapters.settings import Settings
from cli.foreground import embedded_broker
from cli.supervisor import MAX_BACKOFF_S, STABLE_AFTER_S, Infrastructure, Server, Supervised


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


class FakeServer:
    """A broker or database that dies when told and fails its next ``failing`` starts."""

    def __init__(self, failing: int = 0) -> None:
        self.pid: int | None = 100
        self.exit_code: int | None = None
        self.failing = failing
        self.calls: list[str] = []

    def clear_leftovers(self) -> list[str]:
        self.calls.append("clear")
        return ["removed the stale postmaster.pid of pid 100 (gone)"]

    def start(self) -> None:
        self.calls.append("start")
        if self.failing:
            self.failing -= 1
            raise DatabaseError("port 15432 on 127.0.0.1 is already in use")
        self.exit_code = None
        self.pid = (self.pid or 0) + 1

    def stop(self) -> None:
        self.calls.append("stop")


def supervising(fake: FakeServer) -> Infrastructure:
    infrastructure = Infrastructure(Settings())
    infrastructure.servers.append(Server("PostgreSQL", fake))
    return infrastructure


def test_infrastructure_server_killed_is_cleared_restarted_and_reported_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeServer()
    infrastructure = supervising(fake)
    fake.exit_code = -9

    back = [infrastructure.check(now) for now in (10.0, 10.5, 11.0, 11.5)]

    assert back == [False, False, True, False]
    assert fake.calls == ["clear", "start"]
    out = capsys.readouterr().out
    assert "PostgreSQL stopped unexpectedly (killed by SIGKILL); restarting in 1s" in out
    assert "PostgreSQL: removed the stale postmaster.pid of pid 100 (gone)" in out
    assert "PostgreSQL serving again (pid 101)" in out


def test_infrastructure_server_that_fails_to_start_is_tried_again_later(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeServer(failing=1)
    infrastructure = supervising(fake)
    fake.exit_code = -9

    back = [infrastructure.check(now) for now in (0.0, 1.0, 2.5, 3.0)]

    assert back == [False, False, False, True]
    assert fake.calls == ["clear", "start", "clear", "start"]
    assert "PostgreSQL did not start: port 15432" in capsys.readouterr().out


def test_infrastructure_stop_stops_the_servers() -> None:
    fake = FakeServer()
    supervising(fake).stop()
    assert fake.calls == ["stop"]


def test_embedded_broker_of_oee_up_has_a_short_session_with_its_controller(
    tmp_path: Path,
) -> None:
    supervised = embedded_broker(Settings(data_dir=tmp_path)).server_properties()
    plain = KafkaBroker(tmp_path / "kafka").server_properties()

    assert "broker.session.timeout.ms=3000\n" in supervised
    assert "broker.heartbeat.interval.ms=1000\n" in supervised
    assert "broker.session.timeout.ms" not in plain
