"""`oee up --scale`: which services run as replicas, and how each replica is told apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.kafka import topic_config
from adapters.ops import ops_port
from adapters.settings import Settings
from cli import SERVICES
from cli.scale import ScaleError, ops_replicas, parse_scale, replica_env, write_layout


def test_scale_entries_name_replicas_per_service_the_last_winning():
    asked = ["engine=2", "projector=2", "gateway=3", "triggers=2", "engine=3", "market=2"]
    assert parse_scale(asked, SERVICES) == {
        "engine": 3,
        "projector": 2,
        "gateway": 3,
        "triggers": 2,
        "market": 2,
    }


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("engine", "expected SERVICE=N"),
        ("=2", "expected SERVICE=N"),
        ("engines=2", "no service 'engines'"),
        ("engine=two", "whole number"),
        ("engine=0", "at least 1"),
        ("projector=-1", "at least 1"),
        ("sweeper=2", "sweeper runs once"),
        ("venues=2", "venues runs once"),
    ],
)
def test_scale_that_cannot_run_is_refused_with_the_reason(entry: str, says: str):
    with pytest.raises(ScaleError, match=says):
        parse_scale([entry], SERVICES)


def test_replicas_get_distinct_member_ids_and_operations_ports():
    settings = Settings(engine_instance="0", projector_instance="0", triggers_instance="0")
    assert replica_env(settings, "engine", 0, 2) == {}
    assert replica_env(settings, "engine", 1, 2) == {
        "OEE_REPLICA": "1",
        "OEE_ENGINE_INSTANCE": "0-1",
    }
    assert replica_env(settings, "projector", 2, 3)["OEE_PROJECTOR_INSTANCE"] == "0-2"
    assert replica_env(settings, "triggers", 1, 2)["OEE_TRIGGERS_INSTANCE"] == "0-1"
    assert replica_env(settings, "market", 1, 2)["OEE_MARKET_INSTANCE"] == "0-1"
    # Gateways share one port only when there are several.
    assert replica_env(settings, "gateway", 0, 1) == {}
    assert replica_env(settings, "gateway", 0, 2) == {"OEE_GATEWAY_REUSE_PORT": "true"}
    second = Settings(replica=1)
    assert ops_port(second, "engine") == settings.engine_ops_port + 10
    assert ops_port(settings, "engine", 2) == settings.engine_ops_port + 20


def test_status_asks_every_replica_that_oee_up_recorded(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    assert [name for name, _, _ in ops_replicas(settings)] == [
        "engine",
        "projector",
        "triggers",
        "market",
        "sweeper",
    ]
    write_layout(tmp_path, {"engine": 2, "projector": 1, "triggers": 2})
    assert [(name, replica) for name, _, replica in ops_replicas(settings)][:4] == [
        ("engine-0", 0),
        ("engine-1", 1),
        ("projector", 0),
        ("triggers-0", 0),
    ]


def test_topics_ask_for_the_configured_in_sync_replicas_and_else_the_brokers_default():
    assert topic_config(Settings(), "orders.events") == {}
    settings = Settings(replication_factor=3, min_insync_replicas=2)
    assert topic_config(settings, "orders.events") == {"min.insync.replicas": "2"}
    compacted = topic_config(settings, settings.market_topic)
    assert compacted["cleanup.policy"] == "compact"
    assert compacted["min.insync.replicas"] == "2"


@pytest.mark.parametrize(
    "variable",
    [
        "OEE_ENGINE_INSTANCE",
        "OEE_PROJECTOR_INSTANCE",
        "OEE_TRIGGERS_INSTANCE",
        "OEE_MARKET_INSTANCE",
    ],
)
def test_an_instance_id_of_hostname_becomes_the_hosts_name(
    monkeypatch: pytest.MonkeyPatch, variable: str
):
    # Compose replicas share one environment; only their hostnames differ.
    monkeypatch.setattr("adapters.settings.socket.gethostname", lambda: "3f2a9c1b7e04")
    monkeypatch.setenv(variable, "hostname")
    field = variable.removeprefix("OEE_").lower()
    assert getattr(Settings(), field) == "3f2a9c1b7e04"


def test_instance_ids_stay_as_given_or_zero_without_hostname(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("adapters.settings.socket.gethostname", lambda: "3f2a9c1b7e04")
    monkeypatch.setenv("OEE_ENGINE_INSTANCE", "0-1")
    settings = Settings()
    assert settings.engine_instance == "0-1"
    assert settings.projector_instance == "0"
    # `oee up --scale` still numbers its replicas from the (derived) instance id.
    monkeypatch.setenv("OEE_ENGINE_INSTANCE", "hostname")
    assert replica_env(Settings(), "engine", 1, 2)["OEE_ENGINE_INSTANCE"] == "3f2a9c1b7e04-1"
